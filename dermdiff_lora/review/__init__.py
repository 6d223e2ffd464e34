"""Clinician review of synthetic images: a local web page (QC and a blinded reader study), append-only
verdict logs, the report and the verdicts written back into the data."""
