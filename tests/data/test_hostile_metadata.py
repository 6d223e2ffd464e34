"""Metadata from strangers: a BOM and ; or tab delimiters are read; non-UTF-8 bytes, empty captions,
duplicate file names and paths reaching outside the dataset are refused naming the row."""

from __future__ import annotations

import pytest
from PIL import Image

from dermdiff_lora.core import config
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.core.prompts import from_config
from dermdiff_lora.data.dataset import index_dataset
from dermdiff_lora.data.tables import read_table, sniff_delimiter


def _folder(tmp_path, text: str | bytes, n: int = 3):
    for i in range(n):
        Image.new("RGB", (8, 8), (200, 150, 120)).save(tmp_path / f"a{i}.png")
    target = tmp_path / "metadata.csv"
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return tmp_path


def _index(folder, *overrides):
    cfg = config.load(None, [f"data.dir={folder}", "prompts.template=", *overrides])
    return index_dataset(cfg.data, from_config(cfg.prompts))


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_bom_and_delimiters_are_read(tmp_path, sep):
    lines = [sep.join(["file_name", "text"])] + [sep.join([f"a{i}.png", f'"lesion {i}; seen, once"']) for i in range(3)]
    text = "\ufeff" + "\n".join(lines) + "\n"
    rows = read_table(_folder(tmp_path, text) / "metadata.csv")
    assert [r["file_name"] for r in rows] == ["a0.png", "a1.png", "a2.png"]
    assert rows[1]["text"] == "lesion 1; seen, once"
    assert sniff_delimiter(text.lstrip("\ufeff")) == sep


def test_non_utf8_bytes_are_refused_naming_the_line(tmp_path):
    data = b"file_name,text\na0.png,ok\n" + "a1.png,l\xe9sion\n".encode("latin-1")
    with pytest.raises(DataError, match=r"metadata\.csv, line 3: bytes that are not UTF-8.*UTF-8"):
        read_table(_folder(tmp_path, data) / "metadata.csv")


def test_empty_captions_are_refused_naming_the_rows(tmp_path):
    folder = _folder(tmp_path, "file_name,text\na0.png,a lesion\na1.png,\na2.png,  \n")
    with pytest.raises(DataError, match=r"2 row\(s\) have an empty text caption, e.g. the row of 'a1.png', 'a2.png'"):
        _index(folder)


def test_duplicate_file_names_are_refused_naming_both_rows(tmp_path):
    folder = _folder(tmp_path, "file_name,text\na0.png,x\na1.png,y\na0.png,z\n")
    with pytest.raises(DataError, match=r"rows 1 and 3: both name file_name 'a0.png'"):
        _index(folder)


@pytest.mark.parametrize("name", ["../a0.png", "/etc/passwd", "sub/../../a0.png", "~/a0.png"])
def test_paths_outside_the_dataset_are_refused_naming_the_row(tmp_path, name):
    folder = _folder(tmp_path, f"file_name,text\na1.png,x\n{name},y\n")
    with pytest.raises(DataError, match=r"row 2: file_name .* is not a relative path inside the dataset"):
        _index(folder)


def test_rebalance_never_writes_outside_its_output(tmp_path):
    """The old bug: rebalance copied DATASET/../x.png to OUT/../x.png. Now the row is refused first."""
    from dermdiff_lora.tone.rebalance import rebalance

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    _folder(data, "image_name,benign_malignant,skin_tone\n../x.png,benign,0\na1.png,benign,1\n")
    with pytest.raises(DataError, match=r"row 1: image_name '../x.png' is not a relative path"):
        rebalance(data, tmp_path / "out" / "balanced", lambda prompt, seed: Image.new("RGB", (8, 8)),
                  progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "x.png"]
