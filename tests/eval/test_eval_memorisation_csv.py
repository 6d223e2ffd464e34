"""``evaluate`` writes ``memorisation.csv`` for every generated image, and reads only the accepted rows of a
reviewed rebalance folder (``--include-unreviewed`` adds the unreviewed ones; rejected ones never)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from dermdiff_lora.eval.command import EvaluateOptions, evaluate


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    from dermdiff_lora.tone.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("heldout") / "ds", n=18, size=32, seed=7)


def _copies_folder(trained_lora, folder, reviews=None):
    """A rebalance-style folder whose synthetic rows are copies of 4 training images (review column opt.)."""
    from dermdiff_lora.core.config import load_saved

    train_dir = load_saved(trained_lora).data.dir
    rows = list(csv.DictReader(open(f"{train_dir}/metadata.csv")))[:4]
    folder.mkdir()
    for i, row in enumerate(rows):
        shutil.copy(f"{train_dir}/{row['image_name']}.png", folder / f"{row['image_name']}.png")
        row["synthetic"] = "true"
        if reviews is not None:
            row.update(review=reviews[i], review_reasons="", reviewers="ana", review_rule="all")
    with open(folder / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "rebalance_run.json").write_text(json.dumps({"adapter": str(trained_lora)}))
    return train_dir, [r["image_name"] for r in rows]


def test_memorisation_csv_has_every_generated_image_and_its_copy(trained_lora, held_out, tmp_path):
    train_dir, names = _copies_folder(trained_lora, tmp_path / "reb")
    evaluate(EvaluateOptions(real=str(held_out), generated=str(tmp_path / "reb"), out=str(tmp_path / "ev"),
                             extractor="tiny-dinov2"))
    rows = list(csv.DictReader(open(tmp_path / "ev" / "memorisation.csv")))
    assert [r["generated_file"].rsplit("/", 1)[-1] for r in rows] == [f"{n}.png" for n in names]
    for row in rows:  # each copy's nearest training image is the file it was copied from
        assert row["train_file"].rsplit("/", 1)[-1] == row["generated_file"].rsplit("/", 1)[-1]
        assert float(row["cosine"]) == pytest.approx(1.0, abs=1e-5) and row["flipped"] == "false"
        assert float(row["ssim"]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("include_unreviewed, expected", [(False, 2), (True, 3)])
def test_reviewed_folder_uses_accepted_rows(trained_lora, held_out, tmp_path, include_unreviewed, expected, caplog):
    _copies_folder(trained_lora, tmp_path / "reb", ["accepted", "rejected", "", "accepted"])
    result = evaluate(EvaluateOptions(real=str(held_out), generated=str(tmp_path / "reb"), out=str(tmp_path / "ev"),
                                      extractor="tiny-dinov2", memorisation=False,
                                      include_unreviewed=include_unreviewed))
    assert result["counts"]["generated"] == expected
    assert "clinician review found" in caplog.text
    review = json.loads((tmp_path / "ev" / "eval.json").read_text())["inputs"]["review"]
    assert review["counts"] == {"accepted": 2, "rejected": 1, "unreviewed": 1} and review["rule"] == "all"
    assert review["n_used"] == expected and review["include_unreviewed"] is include_unreviewed
    used = "accepted or unreviewed" if include_unreviewed else "accepted"
    assert (f"synthetic images used: {expected} {used} of 4 (accepted 2, rejected 1, unreviewed 1)"
            in (tmp_path / "ev" / "eval.txt").read_text())
