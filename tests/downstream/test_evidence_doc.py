"""README's and docs/downstream_evidence.md's evidence figures are written by scripts/downstream_evidence.py
(between its markers), and the data they describe is what the script makes (not a hand-typed count)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import downstream_evidence as evidence  # noqa: E402


@pytest.mark.parametrize("rel", list(evidence.MARKERS))
def test_the_block_holds_the_scripts_data_counts_and_the_prose_types_none(tmp_path, rel):
    doc = (ROOT / rel).read_text(encoding="utf-8")
    begin, end = (f"<!-- {evidence.MARKERS[rel]}:{side} -->" for side in ("begin", "end"))
    assert doc.count(begin) == 1 and doc.count(end) == 1
    block = doc.split(begin, 1)[1].split(end, 1)[0]
    line = evidence.data_line(evidence.make_data(tmp_path, 21), 21)
    assert line in block
    outside = doc.replace(block, "")
    assert not re.search(r"\b\d+ (made-up|synthetic) 32 px", outside)  # no count typed around the block
    assert line.split(": ")[1] not in outside


def test_replace_rewrites_only_the_block(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("intro\n<!-- m:begin -->\nold\n<!-- m:end -->\noutro\n")
    evidence._replace(doc, "m", "new")
    assert doc.read_text() == "intro\n<!-- m:begin -->\nnew\n<!-- m:end -->\noutro\n"
