"""``downstream --synthetic`` on a reviewed rebalance folder trains on the accepted synthetic images only
(``--include-unreviewed`` adds those no reader saw; rejected ones never), and says so."""

from __future__ import annotations

import json

import pytest
from downstream_data import colour_dataset, fake_rebalance, read_rows, saved_adapter, subset, write_rows

from dermdiff_lora.cli import app
from dermdiff_lora.data.splits import read_split_file
from dermdiff_lora.downstream.samples import split_dataset


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream_review")
    ds = colour_dataset(root / "ds", ("benign", "malignant"), n_per_label=15)
    split = root / "split.csv"
    split_dataset(ds, split, fractions=(0.6, 0.2, 0.2))
    assignment = read_split_file(split).assignment
    train = subset(ds, root / "train", lambda r: assignment[r["image_name"]] == "train")
    rebalanced = fake_rebalance(train, root / "rebalanced", n=6)
    rows = read_rows(rebalanced)
    verdicts = iter(["accepted", "rejected", "", "accepted", "accepted", "rejected"])
    for row in rows:  # as `review` writes them back: real rows have no verdict
        verdict = next(verdicts) if row["synthetic"] == "true" else ""
        row.update(review=verdict, review_reasons="", reviewers="ana" if verdict else "", review_rule="all")
    write_rows(rebalanced, rows)
    return root, ds, split, saved_adapter(root / "adapter", train), rebalanced


@pytest.mark.parametrize("extra, n_synthetic", [([], 3), (["--include-unreviewed"], 4)])
def test_only_accepted_synthetic_rows_join_training(reviewed, extra, n_synthetic, caplog):
    root, ds, split, adapter, rebalanced = reviewed
    out = root / f"out{len(extra)}"
    code = app.main(["downstream", str(ds), "--split", str(split), "--synthetic", str(rebalanced), "--adapter",
                     str(adapter), "--out", str(out), "--extractor", "tiny-dinov2", "--n-boot", "20",
                     "--seeds", "1", *extra])
    assert code == 0
    result = json.loads((out / "downstream.json").read_text())
    assert result["counts"]["synthetic"] == n_synthetic
    assert "clinician review found" in caplog.text
    review = result["inputs"]["review"]
    assert review["counts"] == {"accepted": 3, "rejected": 2, "unreviewed": 1}
    assert review["n_used"] == n_synthetic and review["used"] == (["accepted", "unreviewed"] if extra else ["accepted"])
    assert f"synthetic images used: {n_synthetic} " in (out / "downstream.txt").read_text()
