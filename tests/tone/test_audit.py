"""Dataset audit: per-image tones, counts per (diagnosis × tone), chart and summary; input untouched."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from dermdiff_lora.core.config import DataConfig
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.tone.audit import audit_dataset
from dermdiff_lora.tone.synthetic import TONE_GROUPS, make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    counts = {"lighter": 8, "brown": 5, "darker": 2}
    return make_dataset(root / "data", size=48, seed=3, tone_counts=counts, malignant_fraction=0.4)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _metadata(folder):
    with open(folder / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("workers", [1, 2])
def test_audit_counts_match_the_known_tones(dataset, tmp_path, workers):
    before = _snapshot(dataset)
    out = tmp_path / "report" / "tones.csv"
    result = audit_dataset(dataset, out, workers=workers, progress=False)
    assert _snapshot(dataset) == before  # the input is only read
    truth = {
        r["image_name"]: (r["benign_malignant"], TONE_GROUPS[int(r["skin_tone"])]) for r in _metadata(dataset)
    }
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["file"] for r in written] == list(truth)
    assert all((r["diagnosis"], r["category"]) == truth[r["file"]] for r in written)
    counts = {(r["diagnosis"], r["tone"]): r["count"] for r in result.table}
    for key in set(truth.values()):
        assert counts[key] == list(truth.values()).count(key)
    assert sum(r["percent"] for r in result.table) == pytest.approx(100.0, abs=0.1)
    assert result.tones == ["lighter", "brown", "darker"] and result.diagnoses == ["benign", "malignant"]
    assert result.imbalance_ratio == pytest.approx(5 / 1)  # benign lighter 5, malignant darker 1
    assert result.empty_groups == []
    with Image.open(result.paths["chart"]) as chart:
        assert chart.format == "PNG" and chart.size[0] >= 600
    summary = json.loads(result.paths["summary"].read_text())
    assert summary["imbalance_ratio"] == result.imbalance_ratio and summary["images"] == 15
    assert json.loads(result.to_json()) == summary


def test_default_output_beside_the_dataset_and_text_table(dataset):
    result = audit_dataset(dataset, workers=1, progress=False, scheme="del_bino", strategy="whole")
    folder = dataset.parent / "data_audit"
    assert result.paths["tones"] == folder / "tones.csv" and result.paths["tones"].is_file()
    assert result.tones[0] == "very light" and result.tones[-1] == "dark"
    text = result.to_text()
    lines = text.splitlines()
    assert lines[0].split()[0] == "diagnosis" and lines[1].startswith("benign")
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns
    assert "imbalance ratio" in text and "empty groups: " in text
    assert result.empty_groups  # six Del Bino tones over 15 images leave some empty
    shutil.rmtree(folder)


def test_jsonl_metadata_file_name_column_and_undetermined(dataset, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = _metadata(dataset)[:3]
    for r in rows:
        shutil.copy(dataset / f"{r['image_name']}.png", data / f"{r['image_name']}.png")
    Image.new("RGB", (32, 32), (0, 0, 1)).save(data / "black.png")
    Image.new("L", (32, 32), 128).save(data / "gray.png")
    lines = [{"file_name": f"{r['image_name']}.png", "dx": r["diagnosis"]} for r in rows]
    lines += [{"file_name": "black.png", "dx": "nevus"}, {"file_name": "gray.png", "dx": "nevus"}]
    (data / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = audit_dataset(
        data, tmp_path / "out" / "t.jsonl", diagnosis_column="dx", workers=1, progress=False
    )
    written = [json.loads(x) for x in (tmp_path / "out" / "t.jsonl").read_text().splitlines()]
    assert [w["file"] for w in written] == [x["file_name"] for x in lines]
    assert written[-2]["ita"] is None and "b*" in written[-2]["undetermined_reason"]
    assert written[-1]["ita"] is None and "colour" in written[-1]["undetermined_reason"]
    assert written[-1]["spread"] is None
    assert result.tones[-1] == "undetermined"
    assert "nevus" in result.diagnoses
    assert (tmp_path / "out" / "t_chart.png").is_file() and (tmp_path / "out" / "t_summary.json").is_file()


def test_bad_inputs_are_named(dataset, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        audit_dataset(tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metadata.jsonl or metadata.csv"):
        audit_dataset(tmp_path / "empty", progress=False)
    with pytest.raises(DataError, match="available columns: image_name, patient_id"):
        audit_dataset(dataset, tmp_path / "o.csv", diagnosis_column="dx", progress=False)
    with pytest.raises(DataError, match="inside the dataset folder"):
        audit_dataset(dataset, dataset / "tones.csv", progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    first = _metadata(broken)[0]["image_name"]
    (broken / f"{first}.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{first}.png"):
        audit_dataset(broken, tmp_path / "b.csv", workers=2, progress=False)
    (broken / f"{first}.png").unlink()
    with pytest.raises(DataError, match=f"not in .*{first}"):
        audit_dataset(broken, tmp_path / "b.csv", progress=False)


def test_audit_writes_the_copies_it_finds_beside_the_tones(dataset, tmp_path):
    """Two images filed again under other names (one as is, one mirrored): duplicates.csv pairs them, and
    only them."""
    planted = tmp_path / "planted"
    shutil.copytree(dataset, planted)
    rows = _metadata(planted)
    a, b = rows[0]["image_name"], rows[5]["image_name"]
    shutil.copy(planted / f"{a}.png", planted / "COPY_A.png")
    with Image.open(planted / f"{b}.png") as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(planted / "COPY_B.png")
    rows += [{**rows[0], "image_name": "COPY_A", "patient_id": "P_other"},
             {**rows[5], "image_name": "COPY_B", "patient_id": "P_other2"}]
    with open(planted / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = audit_dataset(planted, tmp_path / "out" / "tones.csv", workers=2, progress=False)
    path = tmp_path / "out" / "duplicates.csv"
    assert result.paths["duplicates"] == path
    with open(path, newline="") as fh:
        found = list(csv.DictReader(fh))
    assert [(r["id_a"], r["id_b"], r["kind"], r["distance"]) for r in found] == [
        (a, "COPY_A", "exact", "0"), (b, "COPY_B", "mirror", "0")]
    assert result.settings["duplicates"]["by_kind"] == {"exact": 1, "mirror": 1}
    assert "duplicates: 2 pair(s) (exact 1, mirror 1) in 2 group(s) of 4 images" in result.to_text()
    assert "fingerprint" not in result.rows[0] and "fingerprint" not in (tmp_path / "out" / "tones.csv").read_text()


def test_a_presets_own_duplicate_list_joins_the_audits(tmp_path):
    """ISIC 2020 as downloaded (the fixture's metadata and duplicate list): its listed pairs reach the file."""
    root = tmp_path / "isic2020"
    shutil.copytree(Path(__file__).parents[1] / "data" / "fixtures" / "isic2020_archive", root)
    with open(root / "ISIC_2020_Training_GroundTruth_v2.csv", newline="") as fh:
        names = [r["image_name"] for r in csv.DictReader(fh)]
    (root / "train").mkdir()
    for i, name in enumerate(names):  # distinct pictures, no copies among them
        fractal = Image.effect_mandelbrot((64, 64), (-2 + 0.1 * i, -1.5, 1 + 0.07 * i, 1.5), 40 + 7 * i)
        Image.merge("RGB", (fractal, fractal.rotate(90), fractal.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
                    ).save(root / "train" / f"{name}.jpg")
    result = audit_dataset(None, tmp_path / "out" / "tones.csv", progress=False,
                           data_cfg=DataConfig(dir=str(root), preset="isic2020"))
    with open(tmp_path / "out" / "duplicates.csv", newline="") as fh:
        found = [(r["id_a"], r["id_b"], r["kind"], r["distance"]) for r in csv.DictReader(fh)]
    assert found == [("ISIC_2637011", "ISIC_0074268", "listed", ""), ("ISIC_0149568", "ISIC_0188432", "listed", "")]
    assert result.settings["duplicates"]["preset_list"].endswith("ISIC_2020_Training_Duplicates.csv")
