"""Metrics for ``dermdiff-lora evaluate``: FID/KID on image features, MS-SSIM diversity, memorisation,
tone statistics, and the per-cell report that ties them together.

Modules: ``features`` (extractors), ``fid`` (FID, KID, per-cell figures), ``diversity`` (MS-SSIM),
``memorization`` (nearest training image), ``tone_stats`` (ITA per cell), ``report`` (``evaluate_sets``,
tables, chart). Import from the modules; this file re-exports nothing so that importing the package
stays cheap.
"""
