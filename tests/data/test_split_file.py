"""data.split_file: training (and everything reading the run's data) uses only its part of the split."""

from __future__ import annotations

import csv

import pytest

from dermdiff_lora.core import config
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.core.prompts import from_config
from dermdiff_lora.data.dataset import index_dataset
from dermdiff_lora.data.splits import read_split_file
from dermdiff_lora.downstream.samples import split_dataset


@pytest.fixture(scope="module")
def split(demo_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("split") / "split.csv"
    split_dataset(demo_data, path, fractions=(0.5, 0.25, 0.25), seed=3)
    return path


def _index(demo_data, *overrides):
    cfg = config.load(None, [f"data.dir={demo_data}", "data.file_column=image_name", *overrides])
    return index_dataset(cfg.data, from_config(cfg.prompts))


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_only_the_rows_of_the_chosen_part_are_used(demo_data, split, part):
    assignment = read_split_file(split).assignment
    index = _index(demo_data, f"data.split_file={split}", f"data.split_part={part}")
    used = sorted(r.key for r in index.records)
    assert used == sorted(k for k, v in assignment.items() if v == part)
    assert index.origin["split"] == {"file": str(split), "part": part}
    assert sum(index.report["left_out"].values()) == len(assignment) - len(used)


def test_a_split_of_other_data_is_refused(demo_data, tmp_path):
    """A split written before rows were added (or for another dataset) does not list every row."""
    import shutil

    smaller = tmp_path / "smaller"
    shutil.copytree(demo_data, smaller)
    lines = (smaller / "metadata.csv").read_text().splitlines(keepends=True)
    (smaller / "metadata.csv").write_text("".join(lines[:-3]))
    split_dataset(smaller, tmp_path / "split.csv")
    with pytest.raises(DataError, match=r"does not list 3 row\(s\) of the data"):
        _index(demo_data, f"data.split_file={tmp_path / 'split.csv'}")


def test_patients_never_cross_parts(demo_data, split):
    parts = {p: {r.row["patient_id"] for r in _index(demo_data, f"data.split_file={split}",
                                                        f"data.split_part={p}").records}
             for p in ("train", "val", "test")}
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["val"]


def test_rebalance_of_a_split_run_copies_only_the_train_part(demo_data, split, tmp_path):
    """rebalance reads the run's data as training does: with data.split_file, only the train rows."""
    from PIL import Image

    from dermdiff_lora.tone.rebalance import rebalance

    cfg = config.load(None, [f"data.dir={demo_data}", "data.file_column=image_name", f"data.split_file={split}"])
    report = rebalance(None, tmp_path / "out", lambda prompt, seed: Image.new("RGB", (32, 32)), max_tries=1,
                       data_cfg=cfg.data, target={}, progress=False, adapter=tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "out" / "metadata.csv")))
    train = {k for k, v in read_split_file(split).assignment.items() if v == "train"}
    assert {r["image_name"] for r in rows if r.get("synthetic") != "true"} == train
    assert report.added == 0
    import json

    assert json.loads((tmp_path / "out" / "rebalance_run.json").read_text())["adapter"] == str(tmp_path / "run")
