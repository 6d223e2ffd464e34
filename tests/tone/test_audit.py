"""Dataset audit: per-image tones, counts per (diagnosis × tone), chart and summary; input untouched."""

import csv
import json
import shutil

import pytest
from PIL import Image

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
