"""``split`` and ``fairness`` round trips through the CLI: files written, counts, reports, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dermdiff_lora.cli import app
from dermdiff_lora.data.splits import read_split_file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from dermdiff_lora.tone.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("cli") / "ds", n=48, size=16, seed=3,
                        tone_counts={"lighter": 24, "brown": 14, "darker": 10})


def test_split_writes_a_patient_level_split_stratified_by_diagnosis_and_tone(dataset, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert app.main(["split", str(dataset), "--out", str(out), "--seed", "5", "--fractions", "0.6,0.2,0.2"]) == 0
    printed = capsys.readouterr().out
    splits = read_split_file(out)  # checksum verified against the sidecar
    assert splits.meta["strata_cols"] == ["benign_malignant", "skin_tone"] and splits.meta["seed"] == 5
    assert splits.meta["id_col"] == "patient_id" and splits.meta["fractions"]["test"] == 0.2
    assert f"wrote {out}" in printed and splits.meta["csv_sha256"] in printed
    import csv

    rows = list(csv.DictReader(open(dataset / "metadata.csv")))
    assert set(splits.assignment) == {r["image_name"] for r in rows}
    where = {}
    for r in rows:
        where.setdefault(r["patient_id"], set()).add(splits.assignment[r["image_name"]])
    assert all(len(s) == 1 for s in where.values())  # no patient in two splits
    assert set(splits.meta["counts"]["train"]) >= {"malignant|0", "benign|2"}
    again = tmp_path / "again.csv"
    assert app.main(["split", str(dataset), "--out", str(again), "--seed", "5", "--fractions", "0.6,0.2,0.2"]) == 0
    assert again.read_text() == out.read_text()  # same seed, same split


def test_split_errors_are_one_line(dataset, tmp_path, capsys):
    assert app.main(["split", str(dataset), "--out", str(tmp_path / "s.csv"), "--id-column", "lesion"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "lesion" in err and "--id-column" in err
    assert app.main(["split", str(dataset), "--out", str(tmp_path / "s.csv"), "--fractions", "0.5,x"]) == 1
    assert "--fractions" in capsys.readouterr().err


def _predictions(path, seed, n=60):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    score = np.clip(0.3 * label + rng.uniform(0, 0.7, n), 0, 1)
    group = np.array(["lighter", "darker"])[rng.integers(0, 2, n)]
    path.write_text("label,score,group\n" + "".join(f"{a},{float(b)!r},{c}\n" for a, b, c in zip(label, score, group)))
    return label, score, group


def test_fairness_binary_report_matches_sklearn_and_records_the_youden_threshold(tmp_path, capsys):
    label, score, group = _predictions(tmp_path / "test.csv", 0)
    _predictions(tmp_path / "val.csv", 1)
    assert app.main(["fairness", str(tmp_path / "test.csv"), "--threshold", "youden", "--val",
                     str(tmp_path / "val.csv"), "--n-boot", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold"]["method"] == "youden" and report["threshold"]["chosen_on"] == str(tmp_path / "val.csv")
    m = group == "darker"
    assert report["per_group"]["darker"]["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(label[m], score[m]))
    assert app.main(["fairness", str(tmp_path / "test.csv"), "--n-boot", "0"]) == 0
    table = capsys.readouterr().out
    assert "malignant if score >= 0.5000 (fixed)" in table and "equalized odds diff." in table


def _youden_by_hand(label, score):
    """argmax over candidate thresholds of sensitivity + specificity - 1 (highest threshold on ties)."""
    best = max(sorted(set(score), reverse=True), key=lambda c: round(
        ((score >= c) & (label == 1)).sum() / (label == 1).sum() - ((score >= c) & (label == 0)).sum() / (label == 0).sum(),
        12))
    return float(best)


def test_fairness_youden_threshold_comes_from_the_val_file(tmp_path, capsys):
    """Val and test are drawn so that their Youden thresholds differ: reading the wrong file shows."""
    label, score, _ = _predictions(tmp_path / "test.csv", 4)
    val_label, val_score, _ = _predictions(tmp_path / "val.csv", 5)
    on_val, on_test = _youden_by_hand(val_label, val_score), _youden_by_hand(label, score)
    assert abs(on_val - on_test) > 0.01 and ((score >= on_val) != (score >= on_test)).any()
    assert app.main(["fairness", str(tmp_path / "test.csv"), "--threshold", "youden", "--val",
                     str(tmp_path / "val.csv"), "--n-boot", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold"]["value"] == pytest.approx(on_val) and report["threshold"]["n"] == len(val_label)
    assert report["overall"]["n_predicted_positive"] == int((score >= on_val).sum())  # applied to the test file
    assert report["overall"]["n"] == len(label)


def test_fairness_reads_multiclass_predictions_and_refuses_bad_thresholds(tmp_path, capsys):
    rows = ["label,group,score_a,score_b,score_c"]
    for i in range(30):
        k = i % 3
        p = [0.1, 0.1, 0.1]
        p[k] = 0.8
        rows.append(f"{'abc'[k]},{'xy'[i % 2]},{p[0]},{p[1]},{p[2]}")
    (tmp_path / "mc.csv").write_text("\n".join(rows) + "\n")
    assert app.main(["fairness", str(tmp_path / "mc.csv"), "--n-boot", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "multiclass" and report["classes"] == ["a", "b", "c"]
    assert report["per_group"]["x"]["metrics"]["balanced_accuracy"]["value"] == 1.0
    _predictions(tmp_path / "t.csv", 2)
    assert app.main(["fairness", str(tmp_path / "t.csv"), "--threshold", "high"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'youden'" in err and "Traceback" not in err
    assert app.main(["fairness", str(tmp_path / "t.csv"), "--threshold", "youden"]) == 1
    assert "val" in capsys.readouterr().err


def test_audit_then_split_keeps_copies_under_other_patients_on_one_side(tmp_path, capsys):
    from downstream_data import with_copies

    ds, copies = with_copies(tmp_path / "ds")
    assert app.main(["audit", str(ds), "--workers", "1"]) == 0  # writes ds_audit/duplicates.csv
    capsys.readouterr()
    out = tmp_path / "split.csv"
    assert app.main(["split", str(ds), "--out", str(out), "--seed", "1", "--fractions", "0.5,0.25,0.25"]) == 0
    printed = capsys.readouterr().out
    splits = read_split_file(out)
    assert all(splits.assignment[c] == splits.assignment[o] for c, o in copies.items())
    assert splits.meta["duplicates"]["file"] == str(tmp_path / "ds_audit" / "duplicates.csv")
    assert splits.meta["duplicates"]["patient_groups_merged"] == 6 and splits.meta["duplicates"]["merged_into"] == 3
    assert "merged 6 patient_id groups into 3" in printed
    assert app.main(["split", str(ds), "--out", str(out), "--seed", "1", "--fractions", "0.5,0.25,0.25",
                     "--duplicates", "none"]) == 0
    assert "duplicates: none read" in capsys.readouterr().out
    assert any(read_split_file(out).assignment[c] != read_split_file(out).assignment[o] for c, o in copies.items())
