"""``review --report``: study figures and agreement from several readers' logs, QC verdicts combined by the
stated rule and written back into the metadata (previous kept), which ``data.reviewed`` then filters."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from review_data import review_folder

from dermdiff_lora.cli import app
from dermdiff_lora.data.reviewed import filter_reviewed
from dermdiff_lora.review.command import ReviewOptions, make_report, open_session
from dermdiff_lora.review.stats import category_table


def _answer_qc(folder, reader, verdicts):
    with open_session(ReviewOptions(str(folder), reader, "qc")) as s:
        for p, v in verdicts.items():
            reasons = ["tone"] if v == "reject" else []
            s.answer(p, {"verdict": v, "reasons": reasons})
        return [it.sha256 for it in s.items]


def _rows(folder):
    with open(folder / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("rule, first", [("all", "rejected"), ("majority", "accepted")])
def test_qc_verdicts_go_back_into_the_metadata_by_the_rule(tmp_path, rule, first):
    folder = review_folder(tmp_path / "reb")
    before = (folder / "metadata.csv").read_text()
    _answer_qc(folder, "ana", {0: "accept", 1: "accept", 2: "accept"})
    _answer_qc(folder, "bo", {0: "reject", 1: "reject"})
    shas = _answer_qc(folder, "cy", {0: "accept", 1: "reject"})
    assert app.main(["review", str(folder), "--report", "--rule", rule]) == 0
    assert (folder / "metadata.previous.csv").read_text() == before
    rows = _rows(folder)
    from dermdiff_lora.review.items import sha256_file

    by_sha = {sha256_file(folder / f"{r['image_name']}.png"): r for r in rows if r["synthetic"] == "true"}
    assert by_sha[shas[0]]["review"] == first and by_sha[shas[1]]["review"] == "rejected"
    assert by_sha[shas[1]]["review_reasons"] == "tone" and by_sha[shas[1]]["reviewers"] == "ana;bo;cy"
    assert by_sha[shas[2]]["review"] == "accepted" and by_sha[shas[2]]["reviewers"] == "ana"
    assert by_sha[shas[3]]["review"] == "" and by_sha[shas[3]]["review_rule"] == rule
    assert all(r["review"] == "" and r["review_rule"] == "" for r in rows if r["synthetic"] == "false")
    kept, summary = filter_reviewed([r for r in rows if r["synthetic"] == "true"])
    assert len(kept) == (2 if first == "accepted" else 1) and summary["rule"] == rule
    report = json.loads((folder / "review" / "review.json").read_text())
    assert report["qc"]["combined"]["n_images"] == 3 and report["written_back"]["unreviewed"] == 9
    for name in ("review.md", "review.png"):
        assert (folder / "review" / name).stat().st_size > 100


def test_study_report_matches_the_reference_statistics(tmp_path):
    from scipy.stats import binomtest
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import fleiss_kappa

    folder = review_folder(tmp_path / "reb")
    rng = np.random.default_rng(3)
    calls = {}
    for reader in ("ana", "bo", "cy"):
        with open_session(ReviewOptions(str(folder), reader, "study", repeat_share=0.3)) as s:
            for p, item in enumerate(s.items):
                right = rng.random() < 0.7
                source = ("synthetic" if item.synthetic else "real") if right else ("real" if item.synthetic else "synthetic")
                s.answer(p, {"source": source, "confidence": 3, "realism": int(rng.integers(1, 6)),
                             "diagnosis": "benign", "tone": "lighter"})
            calls[reader] = {(a["sha256"], bool(a["repeat"])): (a["source"], a["synthetic"]) for a in s.log.answers.values()}
    study = make_report(folder)["study"]
    first = {r: {sha: v for (sha, rep), v in c.items() if not rep} for r, c in calls.items()}
    correct = sum((src == "synthetic") == syn for c in first.values() for src, syn in c.values())
    overall = study["overall"]["real_vs_synthetic"]
    assert overall["n"] == 3 * 18 and overall["correct"] == correct
    assert overall["p_value"] == pytest.approx(binomtest(correct, 54).pvalue)
    shas = sorted(first["ana"])
    table = category_table([[first[r][s][0] for r in sorted(first)] for s in shas], ["real", "synthetic"])
    assert study["inter_reader"]["fleiss"]["fleiss_kappa"] == pytest.approx(fleiss_kappa(table))
    pair = study["inter_reader"]["pairs"]["ana vs bo"]
    assert pair["cohen_kappa"] == pytest.approx(cohen_kappa_score([first["ana"][s][0] for s in shas],
                                                                  [first["bo"][s][0] for s in shas]))
    again = [(first["ana"][sha][0], v[0]) for (sha, rep), v in calls["ana"].items() if rep]
    intra = study["readers"]["ana"]["intra_reader"]
    assert intra["n_pairs"] == len(again) == 5
    assert intra["same"] == sum(a == b for a, b in again)
    assert intra["cohen_kappa"] == pytest.approx(cohen_kappa_score(*zip(*again)))
    sens = study["readers"]["bo"]["real_vs_synthetic"]["sensitivity"]
    assert sens["n"] == 12 and sens["called_synthetic"] == sum(src == "synthetic" for src, syn in first["bo"].values() if syn)
    assert set(study["overall"]["by_tone"]) == {"lighter", "brown", "darker"}
    assert "Fleiss' kappa, 3 readers" in (folder / "review" / "review.md").read_text()


def test_model_card_reports_the_review_of_the_evaluated_folder(trained_lora, tmp_path):
    import shutil

    from dermdiff_lora.hub.card import build_card

    folder = review_folder(tmp_path / "reb")
    _answer_qc(folder, "dr_secret_name", {0: "accept", 1: "reject", 2: "accept"})
    make_report(folder)
    run = tmp_path / "run"
    shutil.copytree(trained_lora, run)
    plain = build_card(run)
    assert "Clinician review" not in plain
    (run / "eval.json").write_text(json.dumps({"inputs": {"generated": str(folder)}}))  # as evaluate records it
    card = build_card(run)
    section = card.split("## Clinician review", 1)[1]
    assert "| 3 |" not in section and "1 reader(s)" in section
    cells = json.loads((folder / "review" / "review.json").read_text())["qc"]["combined"]["cells"]
    for cell, c in cells.items():
        assert f"| {cell} | {c['n']} | {c['accepted']} | {c['rejected']} |" in section
    assert "dr_secret_name" not in card and str(tmp_path) not in section  # no reader names, no local paths
