"""Metadata apart from the images (csv / jsonl / parquet, several image folders) and the tone sources:
a given tone wins, the audit's estimate fills the rest, undetermined or unlisted rows are left out."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dermdiff_lora.core import config
from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.data.dataset import prepare

ROWS = [{"image_id": "a", "dx": "mel", "benign_malignant": "malignant", "skin_tone": "2"},
        {"image_id": "b", "dx": "nv", "benign_malignant": "benign", "skin_tone": ""},
        {"image_id": "c", "dx": "nv", "benign_malignant": "benign", "skin_tone": ""},
        {"image_id": "d", "dx": "bkl", "benign_malignant": "benign", "skin_tone": ""},
        {"image_id": "e", "dx": "bkl", "benign_malignant": "benign", "skin_tone": "lighter"}]
AUDIT = "file,category,ita\na,lighter,40\nb,brown,0\nc.jpg,darker,-40\nd,,\n"  # c listed with its suffix


def layout(root, fmt="csv"):
    """metadata in meta/, images split over two folders (a, b, c in one; d, e in the other)."""
    (root / "meta").mkdir(parents=True)
    for folder, names in (("part_1", "abc"), ("part_2", "de")):
        (root / folder).mkdir()
        for name in names:
            Image.new("RGB", (12, 12), (150, 100, 80)).save(root / folder / f"{name}.jpg")
    path = root / "meta" / f"table.{fmt}"
    if fmt == "csv":
        path.write_text("image_id,dx,benign_malignant,skin_tone\n" + "".join(
            ",".join(r.values()) + "\n" for r in ROWS))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({**r, "skin_tone": int(r["skin_tone"]) if r["skin_tone"].isdigit()
                                            else r["skin_tone"] or None}) + "\n" for r in ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({k: [r[k] or None for r in ROWS] for k in ROWS[0]})
        pq.write_table(table, path)
    (root / "audit").mkdir()
    (root / "audit" / "tones.csv").write_text(AUDIT)
    return root


def load(root, *overrides):
    return prepare(config.load(None, [f"data.dir={root}", "data.file_column=image_id", *overrides]))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_metadata_and_image_folders_apart_with_audit_tones(tmp_path, fmt):
    root = layout(tmp_path, fmt)
    before = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))
    cfg, builder, index = load(root, f"data.metadata=meta/table.{fmt}", "data.images=[part_1, part_2]",
                               f"data.tones={root / 'audit' / 'tones.csv'}")
    got = {r.key: (r.row["skin_tone"], r.row["tone_source"], r.path.parent.name) for r in index.records}
    # a: given 2 wins over the audit's lighter; e: given as a word, kept as its code; b, c estimated; d undetermined
    assert got == {"a": ("2", "given", "part_1"), "b": ("1", "estimated", "part_1"),
                   "c": ("2", "estimated", "part_1"), "e": ("0", "given", "part_2")}
    assert index.report["left_out"] == {"tone undetermined by the ITA audit": 1}
    tone = index.report["tone"]
    assert (tone["given"], tone["estimated"], tone["tones_file"]) == (2, 2, "tones.csv")
    assert tone["by_group"] == {"darker": {"given": 1, "estimated": 1}, "brown": {"estimated": 1},
                                "lighter": {"given": 1}}
    assert index.report["source"] == {"kind": "metadata", "metadata": f"table.{fmt}", "images": ["part_1", "part_2"]}
    assert [r.caption for r in index.records][:2] == ["malignant skin disease on darker skin tone",
                                                      "benign skin disease on brown skin tone"]
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_metadata_without_data_dir_and_one_folder_as_a_string(tmp_path):
    root = layout(tmp_path)
    cfg = config.load(None, [f"data.metadata={root / 'meta' / 'table.csv'}", f"data.images={root / 'part_2'}",
                             "data.file_column=image_id", "data.on_bad_image=skip", "data.unknown_tone=drop"])
    _, _, index = prepare(cfg)
    assert cfg.data.images == [str(root / "part_2")]
    assert [r.key for r in index.records] == ["e"] and sorted(index.skipped) == ["a", "b", "c"]
    assert index.report["left_out"] == {"no tone in the metadata (data.unknown_tone=drop)": 1}


def test_tone_errors_name_the_fix(tmp_path):
    root = layout(tmp_path)
    common = ["data.metadata=meta/table.csv", "data.images=[part_1, part_2]"]
    with pytest.raises(DataError, match=r"3 of 5 rows without a tone in 'skin_tone'.*dermdiff-lora audit "
                                        r".*data.tones=.*data.unknown_tone=drop"):
        load(root, *common)
    (root / "audit" / "other.csv").write_text("file,category\nzz,lighter\n")
    with pytest.raises(DataError, match="lists none of the 3 images without a given tone .first: b.: was the audit"):
        load(root, *common, f"data.tones={root / 'audit' / 'other.csv'}")
    (root / "audit" / "del.csv").write_text("file,category\nb,tan\n")
    with pytest.raises(DataError, match="scheme tan, not the paper's lighter, brown, darker: rerun the audit"):
        load(root, *common, f"data.tones={root / 'audit' / 'del.csv'}")
    with pytest.raises(DataError, match="missing.csv does not exist; run `dermdiff-lora audit` first"):
        load(root, *common, f"data.tones={root / 'audit' / 'missing.csv'}")


def test_missing_and_bad_sources_are_named(tmp_path):
    root = layout(tmp_path)
    with pytest.raises(DataError, match=r"image .*part_1/d not found: 2 of 5 image\(s\) listed in table.csv are "
                                        r"not in .*part_1 \(first: d, e\)"):
        load(root, "data.metadata=meta/table.csv", "data.images=part_1", "data.unknown_tone=drop")
    with pytest.raises(DataError, match="image folder.*nowhere do not exist"):
        load(root, "data.metadata=meta/table.csv", "data.images=nowhere")
    with pytest.raises(DataError, match="table.txt must end in .csv, .tab, .tsv, .jsonl, .parquet"):
        load(root, "data.metadata=meta/table.txt")
    (root / "meta" / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="bad.parquet: cannot parse"):
        load(root, "data.metadata=meta/bad.parquet")


def test_data_keys_are_checked_together():
    with pytest.raises(ConfigError) as err:  # wrong values first (the cross checks need valid values)
        config.load(None, ["data.preset=ham1000", "data.unknown_tone=guess"])
    assert "2 config error(s)" in str(err.value) and "did you mean 'ham10000'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config.load(None, ["data.dataset=alice/derm", "data.dir=x", "data.fitzpatrick_groups={7: darker, 2: pale}",
                           "data.tones=t.txt", "data.preset=ddi"])
    text = str(err.value)
    assert "4 config error(s)" in text and "excludes data.dir" in text and "keys must be Fitzpatrick types 1-6" in text
    assert "pale is not a tone group" in text and "t.txt' is not the audit's tones" in text
    assert config.load(None, ["prompts.template={dx} on {skin_tone} skin tone"]).prompts.template == \
        "{dx} on {skin_tone} skin tone"
