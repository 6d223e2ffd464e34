"""The image check's record: a restart decodes only images that changed or failed; a broken or unwritable
record costs only the checks; nothing is written beside the data."""

from __future__ import annotations

import csv
import logging
import os

import numpy as np
import pytest
from PIL import Image

from dermdiff_lora.core import config, prompts
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.data import checked
from dermdiff_lora.data import dataset as data


def _folder(root, n=6):
    root.mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / f"IMG_{i}.jpg", quality=90)
        rows.append({"image_name": f"IMG_{i}.jpg", "benign_malignant": "benign", "skin_tone": str(i % 3)})
    with (root / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def _index(folder, *overrides):
    cfg = config.load(None, [f"data.dir={folder}", *overrides])
    return data.index_dataset(cfg.data, prompts.from_config(cfg.prompts))


@pytest.fixture
def decoded(monkeypatch):
    """The names of the images each indexing decodes (in this process or in the pool's workers)."""
    names: list[str] = []
    real = data._checked

    def spy(refs, todo, found, record):
        names.extend(sorted(p.name for p in todo))
        return real(refs, todo, found, record)

    monkeypatch.setattr(data, "_checked", spy)
    return names


@pytest.mark.parametrize("parallel", [False, True])
def test_a_restart_decodes_only_what_changed(tmp_path, monkeypatch, decoded, parallel):
    if parallel:  # many images: checked by a pool of processes
        monkeypatch.setattr(data, "PARALLEL_CHECK", 1)
    folder = _folder(tmp_path / "ds")
    before = sorted(p.name for p in folder.iterdir())
    assert len(_index(folder).records) == 6
    assert decoded == [f"IMG_{i}.jpg" for i in range(6)]
    decoded.clear()
    assert len(_index(folder).records) == 6 and decoded == []  # nothing changed: nothing decoded
    rewritten = folder / "IMG_2.jpg"
    Image.new("RGB", (32, 24), (180, 120, 90)).save(rewritten, quality=90)  # another image, same name
    whole = (folder / "IMG_4.jpg").read_bytes()
    (folder / "IMG_4.jpg").write_bytes(whole[: len(whole) // 2])  # truncated after it passed
    with pytest.raises(DataError, match="IMG_4.jpg is unreadable"):
        _index(folder)
    # the run that stopped at the bad image saved nothing; then a failed image is never remembered
    for expected in (["IMG_2.jpg", "IMG_4.jpg"], ["IMG_4.jpg"], ["IMG_4.jpg"]):
        decoded.clear()
        index = _index(folder, "data.on_bad_image=skip")
        assert list(index.skipped) == ["IMG_4.jpg"] and len(index.records) == 5
        assert decoded == expected
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written beside the data


def test_a_moved_file_or_a_touched_one_is_checked_again(tmp_path, decoded):
    folder = _folder(tmp_path / "ds")
    _index(folder)
    decoded.clear()
    os.utime(folder / "IMG_0.jpg", ns=(1, 1))
    (folder / "IMG_1.jpg").rename(folder / "tmp.jpg")
    (folder / "tmp.jpg").rename(folder / "IMG_1.jpg")  # same bytes, another inode status change
    _index(folder)
    assert sorted(decoded) == ["IMG_0.jpg", "IMG_1.jpg"]


def test_a_broken_or_unwritable_record_costs_only_the_checks(tmp_path, decoded, monkeypatch, caplog):
    folder = _folder(tmp_path / "ds")
    _index(folder)
    record = checked.record_path(folder)
    assert record.is_file()
    record.write_text("{not json")
    decoded.clear()
    with caplog.at_level(logging.WARNING):
        assert len(_index(folder).records) == 6
    assert len(decoded) == 6 and "unreadable" in caplog.text
    decoded.clear()
    assert len(_index(folder).records) == 6 and decoded == []  # rewritten whole
    monkeypatch.setenv("DERMDIFF_CACHE", str(tmp_path / "file-not-folder"))
    (tmp_path / "file-not-folder").write_text("")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(_index(folder).records) == 6
    assert "not written" in caplog.text
