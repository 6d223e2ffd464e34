"""Dataset presets on small made-up downloads with each dataset's real header, value formats and folders.

Known answers per row: the benign/malignant word from the documented mapping, the tone group (0 lighter,
1 brown, 2 darker) from the Fitzpatrick column or from the audit's tones.csv, where it came from, and
what was left out and why.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image

from dermdiff_lora.core import config
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.data.dataset import prepare

FIXTURES = Path(__file__).parent / "fixtures"
PRESET_FOLDER = {"isic_archive": "isic_archive", "isic2020": "isic2020_challenge", "ham10000": "ham10000",
                 "fitzpatrick17k": "fitzpatrick17k", "ddi": "ddi", "pad_ufes_20": "pad_ufes_20"}


def image_place(preset: str, key: str, i: int) -> str | None:
    """Where the download keeps row ``i``'s image (None: not downloaded)."""
    if preset == "fitzpatrick17k":
        return None if key.startswith("b0ba5d") else f"images/{key}.jpg"
    return {"isic_archive": f"{key}.jpg", "isic2020": f"jpeg/train/{key}.jpg",
            "isic2020_archive": f"ISIC_2020_Training_JPEG/train/{key}.jpg",
            "ham10000": f"HAM10000_images_part_{1 + (i >= 8)}/{key}.jpg", "ddi": f"images/{key}",
            "pad_ufes_20": f"images/imgs_part_1/{key}"}[preset]


def download(preset: str, tmp: Path, folder: str | None = None) -> Path:
    """A copy of the fixture's metadata with a small image for every row, where the download puts it."""
    root = tmp / (folder or PRESET_FOLDER[preset])
    shutil.copytree(FIXTURES / (folder or PRESET_FOLDER[preset]), root)
    metadata = next(p for p in sorted(root.glob("*.csv")) if "Duplicates" not in p.name)
    with metadata.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    column = {"isic_archive": "isic_id", "ham10000": "image_id", "fitzpatrick17k": "md5hash", "ddi": "DDI_file",
              "pad_ufes_20": "img_id"}.get(preset, "image_name")
    for i, row in enumerate(rows):
        place = image_place(folder if folder == "isic2020_archive" else preset, row[column], i)
        if place:
            (root / place).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (180, 120 + i, 90)).save(root / place)
    return root


def write_tones(path: Path, tones: dict[str, str]) -> Path:
    """A tones.csv as the audit writes it (file, category; "" = undetermined)."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "diagnosis", "ita", "category"])
        w.writeheader()
        w.writerows({"file": k, "diagnosis": "", "ita": "", "category": v} for k, v in tones.items())
    return path


# key -> (benign_malignant, skin_tone code, tone source)
EXPECTED = {
    "isic_archive": {"ISIC_0000001": ("benign", "0", "given"), "ISIC_0000002": ("malignant", "1", "given"),
                     "ISIC_0000003": ("benign", "2", "estimated"), "ISIC_0000004": ("malignant", "2", "given"),
                     "ISIC_0000007": ("benign", "2", "given")},
    "isic2020": {"ISIC_2637011": ("benign", "0", "estimated"), "ISIC_0015719": ("benign", "1", "estimated"),
                 "ISIC_0052212": ("benign", "2", "estimated"), "ISIC_0074268": ("benign", "0", "estimated"),
                 "ISIC_0149568": ("malignant", "2", "estimated"), "ISIC_0188432": ("malignant", "1", "estimated"),
                 "ISIC_0207268": ("malignant", "0", "estimated")},
    "ham10000": {k: (bm, "0", "estimated") for k, bm in (
        ("ISIC_0027419", "benign"), ("ISIC_0025030", "benign"), ("ISIC_0026769", "benign"),
        ("ISIC_0031633", "benign"), ("ISIC_0029176", "benign"), ("ISIC_0025837", "malignant"),
        ("ISIC_0025276", "malignant"), ("ISIC_0029396", "malignant"), ("ISIC_0025767", "malignant"),
        ("ISIC_0030579", "malignant"), ("ISIC_0029417", "malignant"), ("ISIC_0033230", "benign"),
        ("ISIC_0028651", "benign"), ("ISIC_0031597", "benign"), ("ISIC_0031197", "benign"))},
    "fitzpatrick17k": {"5e82a45bc5d78bd24ae9202d194423f8": ("benign", "1", "given"),
                       "fa2911a9b13b6f8af79cb700937cc14f": ("benign", "0", "given"),
                       "d2bac3c9e4499032ca8e9b07c7d3bc40": ("benign", "0", "given"),
                       "0a94359e7eaacd7178e06b2823777789": ("benign", "2", "estimated"),
                       "c6d7bd3a0b2b5c56d4ab84a2b1f0de07": ("malignant", "2", "given"),
                       "7d8c4e0a1b2c3d4e5f60718293a4b5c6": ("malignant", "1", "given")},
    "ddi": {"000001.png": ("malignant", "2", "given"), "000002.png": ("malignant", "2", "given"),
            "000003.png": ("malignant", "2", "given"), "000004.png": ("malignant", "2", "given"),
            "000005.png": ("malignant", "0", "given"), "000006.png": ("benign", "0", "given"),
            "000007.png": ("benign", "1", "given"), "000008.png": ("malignant", "1", "given")},
    "pad_ufes_20": {"PAT_1516_1765_530.png": ("benign", "2", "estimated"),
                    "PAT_46_881_939.png": ("malignant", "1", "given"),
                    "PAT_1545_1867_547.png": ("benign", "1", "estimated"),
                    "PAT_684_1302_588.png": ("malignant", "0", "given"),
                    "PAT_1101_435_83.png": ("malignant", "0", "given"),
                    "PAT_800_1518_307.png": ("malignant", "1", "given"),
                    "PAT_272_1010_52.png": ("benign", "2", "given")},
}
# What the audit measured, for the rows the test's tones.csv lists (a given tone must win over it)
AUDIT = {
    "isic_archive": {"ISIC_0000001": "darker", "ISIC_0000003": "darker"},
    "isic2020": {**{k: ("lighter", "brown", "darker")[int(v[1])] for k, v in EXPECTED["isic2020"].items()},
                 "ISIC_0068279": ""},  # undetermined; ISIC_0074311 is not in the audit
    "ham10000": dict.fromkeys(EXPECTED["ham10000"], "lighter"),
    "fitzpatrick17k": {"0a94359e7eaacd7178e06b2823777789": "darker", "5e82a45bc5d78bd24ae9202d194423f8": "darker"},
    "ddi": {},
    "pad_ufes_20": {"PAT_1516_1765_530.png": "darker", "PAT_1545_1867_547.png": "brown", "PAT_1989_4061_934.png": ""},
}
LEFT_OUT = {
    "isic_archive": {"synthetic image (image_manipulation): never used as a real one": 1,
                     "no benign_malignant value": 1},
    "isic2020": {"tone undetermined by the ITA audit": 1, "not in the audit's tones file": 1},
    "ham10000": {}, "fitzpatrick17k": {"image not downloaded": 1}, "ddi": {},
    "pad_ufes_20": {"tone undetermined by the ITA audit": 1},
}
SPLIT = {"isic_archive": "patient_id", "isic2020": "patient_id", "ham10000": "lesion_id",
         "fitzpatrick17k": None, "ddi": "DDI_ID", "pad_ufes_20": "patient_id"}


def _prepare(root: Path, preset: str, *overrides: str):
    return prepare(config.load(None, [f"data.dir={root}", f"data.preset={preset}", *overrides]))


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_preset_reads_its_download(preset, tmp_path):
    root = download(preset, tmp_path)
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    tones = write_tones(tmp_path / "tones.csv", AUDIT[preset])
    cfg, builder, index = _prepare(root, preset, *([f"data.tones={tones}"] if AUDIT[preset] else []))
    got = {r.key: (r.row["benign_malignant"], r.row["skin_tone"], r.row["tone_source"]) for r in index.records}
    assert got == EXPECTED[preset]
    report = index.report
    assert report["left_out"] == LEFT_OUT[preset]
    sources = [e[2] for e in EXPECTED[preset].values()]
    assert (report["tone"]["given"], report["tone"]["estimated"]) == (sources.count("given"), sources.count("estimated"))
    assert report["source"]["preset"] == preset and report["source"]["split_column"] == SPLIT[preset]
    assert report["licence"]["citation"] and report["licence"]["url"].startswith("http")
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before  # only read
    words = {"0": "lighter", "1": "brown", "2": "darker"}
    for r in index.records:
        assert r.caption == f"{r.row['benign_malignant']} skin disease on {words[r.row['skin_tone']]} skin tone"


def test_isic_archive_licences_attributions_and_fitzpatrick_statement(tmp_path):
    root = download("isic_archive", tmp_path)
    _, _, index = _prepare(root, "isic_archive", f"data.tones={write_tones(tmp_path / 't.csv', AUDIT['isic_archive'])}")
    lic = index.report["licence"]
    assert lic["per_image"] == {"CC-0": 2, "CC-BY": 2, "CC-BY-NC": 1} and lic["non_commercial"] is True
    assert lic["attributions"] == {"Hospital Clínic de Barcelona": 2, "Memorial Sloan Kettering Cancer Center": 1,
                                   "ViDIR Group, Department of Dermatology, Medical University of Vienna": 2}
    assert "Fitzpatrick type (fitzpatrick_skin_type)" in index.report["tone"]["given_by"]
    assert "I-II lighter, III-IV brown, V-VI darker" in index.report["tone"]["given_by"]
    assert "ITA" in index.report["tone"]["estimated_by"]


def test_isic2020_archive_layout_drops_listed_duplicates(tmp_path):
    root = download("isic2020", tmp_path, "isic2020_archive")
    tones = write_tones(tmp_path / "t.csv", dict.fromkeys(["ISIC_2637011", "ISIC_0015719", "ISIC_0052212",
                                                           "ISIC_0149568"], "brown"))
    _, _, index = _prepare(root, "isic2020", f"data.tones={tones}")
    assert [r.key for r in index.records] == ["ISIC_2637011", "ISIC_0015719", "ISIC_0052212", "ISIC_0149568"]
    assert index.report["left_out"] == {"duplicate image (listed in ISIC_2020_Training_Duplicates.csv)": 2}
    assert index.report["source"]["layout"] == "archive-v2" and index.records[0].row["lesion_id"] == "IL_7972535"


def test_ham10000_seven_classes_get_their_words(tmp_path):
    root = download("ham10000", tmp_path)
    tones = write_tones(tmp_path / "t.csv", AUDIT["ham10000"])
    cfg, builder, index = _prepare(root, "ham10000", f"data.tones={tones}", "data.diagnosis_column=dx",
                                   "prompts.template={dx} on {skin_tone} skin tone")
    assert len(builder.grid()) == 21 and builder.choices("dx")[4] == "melanoma"
    assert cfg.prompts.value_maps["dx"]["akiec"] == "actinic keratosis"
    assert {r.caption for r in index.records if r.row["dx"] == "vasc"} == {"vascular lesion on lighter skin tone"}
    assert index.report["tone_x_diagnosis"] == {"lighter": {"bkl": 3, "nv": 2, "mel": 2, "akiec": 2, "bcc": 2,
                                                             "df": 2, "vasc": 2}}


def test_data_values_complete_a_template_column_without_map(tmp_path):
    root = download("isic2020", tmp_path)
    tones = write_tones(tmp_path / "t.csv", AUDIT["isic2020"])
    cfg, builder, _ = _prepare(root, "isic2020", f"data.tones={tones}", "prompts.template={diagnosis}, {skin_tone}")
    assert cfg.prompts.value_maps["diagnosis"] == {"melanoma": "melanoma", "nevus": "nevus", "unknown": "unknown"}
    assert len(builder.grid()) == 9


def test_fitzpatrick_groups_can_be_remapped_and_unknown_dropped(tmp_path):
    root = download("ddi", tmp_path)
    _, _, index = _prepare(root, "ddi", "data.fitzpatrick_groups={4: darker}", "data.unknown_tone=drop")
    tones = {r.key: r.row["skin_tone"] for r in index.records}
    assert "000007.png" not in tones and "000008.png" not in tones  # 34 spans brown and darker now
    assert index.report["left_out"] == {"no tone in the metadata (data.unknown_tone=drop)": 2}
    assert tones["000005.png"] == "0" and tones["000001.png"] == "2"
    root = download("pad_ufes_20", tmp_path / "pad")
    _, _, index = _prepare(root, "pad_ufes_20", "data.fitzpatrick_groups={4: darker}", "data.unknown_tone=drop")
    assert {r.key: r.row["skin_tone"] for r in index.records}["PAT_800_1518_307.png"] == "2"


def test_wrong_folder_or_preset_is_named(tmp_path):
    root = download("ham10000", tmp_path)
    with pytest.raises(DataError, match="has no train.csv or ISIC_2020_Training_GroundTruth_v2.csv"):
        _prepare(root, "isic2020")
    (tmp_path / "wrong").mkdir()
    shutil.copy(FIXTURES / "ham10000" / "HAM10000_metadata.csv", tmp_path / "wrong" / "metadata.csv")
    with pytest.raises(DataError, match=r"column\(s\) img_id, diagnostic, fitspatrick of the PAD-UFES-20"):
        _prepare(tmp_path / "wrong", "pad_ufes_20")
    with pytest.raises(DataError, match="data.dir .*nope does not exist"):
        _prepare(tmp_path / "nope", "ddi")
    with pytest.raises(DataError, match="no column 'skin_tone'.*dermdiff-lora audit .* --preset ham10000"):
        _prepare(root, "ham10000")


def _moved(root: Path, moves: dict[str, str]) -> Path:
    """The download rearranged as another release or mirror has it: folder ``a`` moved to ``b``."""
    for old, new in moves.items():
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        (root / old).rename(root / new)
    return root


def _rows(root: Path, name: str) -> list[dict[str, str]]:
    with (root / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("images", ["parts", "flat"])
def test_ham10000_dataverse_tab_metadata_and_part_folders(tmp_path, images):
    """Dataverse: HAM10000_metadata.tab (tab-separated, strings quoted, a `dataset` column) and the JPEGs of
    HAM10000_images_part1.zip / part2.zip, unpacked into folders of those names or straight into data.dir."""
    root = download("ham10000", tmp_path)
    rows = _rows(root, "HAM10000_metadata.csv")
    (root / "HAM10000_metadata.csv").unlink()
    lines = ["\t".join(rows[0])] + ["\t".join(v if k == "age" else f'"{v}"' for k, v in r.items()) for r in rows]
    (root / "HAM10000_metadata.tab").write_text("\n".join(lines) + "\n")
    if images == "parts":
        _moved(root, {"HAM10000_images_part_1": "HAM10000_images_part1", "HAM10000_images_part_2": "HAM10000_images_part2"})
    else:
        for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
            for f in (root / part).iterdir():
                f.rename(root / f.name)
    _, _, index = _prepare(root, "ham10000", f"data.tones={write_tones(tmp_path / 't.csv', AUDIT['ham10000'])}")
    assert {r.key: (r.row["benign_malignant"], r.row["skin_tone"], r.row["tone_source"])
            for r in index.records} == EXPECTED["ham10000"]
    assert index.records[0].row["dataset"] == "vidir_modern" and index.records[0].row["lesion_id"] == "HAM_0000118"
    source = index.report["source"]
    assert source["layout"] == "dataverse" and source["metadata"] == "HAM10000_metadata.tab"
    assert "akiec -> malignant (a choice: actinic keratoses and intraepithelial carcinoma" in source["malignancy"]
    assert index.report["licence"]["name"] == "CC BY-NC 4.0" and index.report["licence"]["non_commercial"]


def test_pad_ufes_20_mirror_with_nested_part_folders(tmp_path):
    root = _moved(download("pad_ufes_20", tmp_path), {"images/imgs_part_1": "imgs_part_2/imgs_part_2"})
    (root / "images").rmdir()
    _, _, index = _prepare(root, "pad_ufes_20", f"data.tones={write_tones(tmp_path / 't.csv', AUDIT['pad_ufes_20'])}")
    assert {r.key for r in index.records} == set(EXPECTED["pad_ufes_20"])
    assert "imgs_part_2/imgs_part_2" in index.report["source"]["images"]


def test_ddi_older_metadata_with_malignancy_1_0(tmp_path):
    root = download("ddi", tmp_path)
    text = (root / "ddi_metadata.csv").read_text().replace(",malignant,", ",malignancy(malig=1),")
    (root / "ddi_metadata.csv").write_text(text.replace(",True,", ",1,").replace(",False,", ",0,"))
    _, _, index = _prepare(root, "ddi")
    assert {r.key: (r.row["benign_malignant"], r.row["skin_tone"], r.row["tone_source"])
            for r in index.records} == EXPECTED["ddi"]
    assert index.report["source"]["malignancy"].startswith("malignancy(malig=1): ")


def test_isic2020_jpeg_zip_unpacks_to_train(tmp_path):
    root = _moved(download("isic2020", tmp_path, "isic2020_archive"), {"ISIC_2020_Training_JPEG/train": "train"})
    (root / "ISIC_2020_Training_JPEG").rmdir()
    tones = write_tones(tmp_path / "t.csv", dict.fromkeys(["ISIC_2637011", "ISIC_0015719", "ISIC_0052212",
                                                           "ISIC_0149568"], "brown"))
    _, _, index = _prepare(root, "isic2020", f"data.tones={tones}")
    assert len(index.records) == 4 and index.report["source"]["images"] == ["train"]


@pytest.mark.parametrize("setting", ["benign", "leave_out"])
def test_fitzpatrick17k_non_neoplastic_is_a_setting_the_run_records(tmp_path, setting):
    root = download("fitzpatrick17k", tmp_path)
    tones = write_tones(tmp_path / "t.csv", AUDIT["fitzpatrick17k"])
    _, _, index = _prepare(root, "fitzpatrick17k", f"data.tones={tones}", f"data.non_neoplastic={setting}")
    labels = {r["md5hash"]: r["three_partition_label"] for r in _rows(root, "fitzpatrick17k.csv")}
    kept = {r.key: r.row["benign_malignant"] for r in index.records}
    non_neoplastic = {k for k in EXPECTED["fitzpatrick17k"] if labels[k] == "non-neoplastic"}
    assert non_neoplastic and (setting == "leave_out") == non_neoplastic.isdisjoint(kept)
    assert all(kept[k] == "benign" for k in non_neoplastic & set(kept))
    source = index.report["source"]
    assert source["non_neoplastic"] == setting
    word = "benign" if setting == "benign" else "left out"
    assert f"non-neoplastic -> {word} (mostly inflammatory conditions" in source["malignancy"]
    if setting == "leave_out":
        assert index.report["left_out"]["no benign_malignant value"] == len(non_neoplastic)
