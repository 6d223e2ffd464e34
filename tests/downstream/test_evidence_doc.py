"""docs/downstream_evidence.md's figures are written by scripts/downstream_evidence.py (its generated block),
and the data they describe is what the script makes (not a hand-typed count)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import downstream_evidence as evidence  # noqa: E402


def test_the_doc_holds_the_scripts_block_and_its_data_counts(tmp_path):
    doc = (ROOT / "docs" / "downstream_evidence.md").read_text(encoding="utf-8")
    assert doc.count(evidence.BEGIN) == 1 and doc.count(evidence.END) == 1
    block = doc.split(evidence.BEGIN, 1)[1].split(evidence.END, 1)[0]
    data = evidence.make_data(tmp_path, 21)
    counts = evidence.describe_counts(evidence.data_facts(data))
    assert f"- **Data** (`make_dataset`, seed 21, 32 px): {counts}." in block
    outside = doc.replace(block, "")
    assert counts.split(":")[0] not in outside  # the image count appears only where the script wrote it


def test_write_block_replaces_only_the_block(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text(f"intro\n{evidence.BEGIN}\nold\n{evidence.END}\noutro\n")
    evidence.write_block(doc, f"{evidence.BEGIN}\nnew\n{evidence.END}")
    assert doc.read_text() == f"intro\n{evidence.BEGIN}\nnew\n{evidence.END}\noutro\n"
