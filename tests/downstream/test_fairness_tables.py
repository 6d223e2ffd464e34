"""Text tables, the comparison table, the chart and atomic writes of fairness reports."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.core.fsutil import atomic_path, save_json
from dermdiff_lora.downstream.chart import save_chart
from dermdiff_lora.downstream.fairness import choose_threshold, fairness_report
from dermdiff_lora.downstream.multiclass import multiclass_report
from dermdiff_lora.downstream.tables import compare_table, format_table


def _reports():
    rng = np.random.default_rng(0)
    n = 400
    g = rng.choice(["I-II", "III-IV", "V-VI"], n)
    y = rng.integers(0, 2, n)
    y[g == "V-VI"] = 0
    noise = rng.normal(0, 0.25, n)
    real = np.clip(0.5 + 0.2 * (y - 0.5) + noise, 0, 1)
    synth = np.clip(0.5 + 0.4 * (y - 0.5) + noise, 0, 1)
    th = choose_threshold(y[:100], real[:100])
    return (fairness_report(y, real, g, threshold=th, n_boot=50, seed=4),
            fairness_report(y, synth, g, threshold=0.5, n_boot=50, seed=4))


def test_format_table_header_rows_and_reasons():
    a, _ = _reports()
    text = format_table(a)
    assert f"score >= {a['threshold']['value']:.4f} (youden, J=" in text
    assert "B=50 resamples within each group, seed 4" in text
    assert f"Samples: 400 ({a['overall']['n_positive']} malignant" in text
    row = next(line for line in text.splitlines() if line.startswith("I-II"))
    auc = a["per_group"]["I-II"]["metrics"]["auc"]
    assert f"{auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]" in row
    assert "V-VI AUC: only one class" in text and "equalized odds diff." in text


def test_compare_table_shows_both_and_difference():
    a, b = _reports()
    text = compare_table(a, b)
    row = next(line for line in text.splitlines() if line.startswith("I-II") and " AUC " in line)
    auc = [r["per_group"]["I-II"]["metrics"]["auc"]["value"] for r in (a, b)]
    diff = auc[1] - auc[0]
    assert row.rstrip().endswith(f"{diff:+.3f}")
    assert "[real only]" in text and "[real + synthetic]" in text and "WARNING" not in text
    other = fairness_report([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], ["I-II"] * 4, n_boot=0)
    assert "different test sets" in compare_table(a, other)


def test_seed_averaged_tables_print_mean_sd_and_each_seeds_threshold(tmp_path):
    """Three seeds, each with its own Youden threshold: the table shows mean ± sd over seeds and every
    seed's threshold, never a mean threshold or mean interval ends printed as an interval."""
    from dermdiff_lora.downstream.seeds import average_reports

    rng = np.random.default_rng(1)
    n = 300
    g = rng.choice(["I-II", "V-VI"], n)
    y = rng.integers(0, 2, n)
    reports, thresholds = [], []
    for seed in range(3):
        score = np.clip(0.5 + (0.15 + 0.05 * seed) * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)
        th = choose_threshold(y[:100], score[:100])
        thresholds.append(th["value"])
        reports.append(fairness_report(y[100:], score[100:], g[100:], threshold=th, n_boot=30, seed=seed))
    assert len(set(thresholds)) == 3
    averaged = average_reports(reports, [0, 1, 2])
    text = format_table(averaged)
    aucs = [r["per_group"]["V-VI"]["metrics"]["auc"]["value"] for r in reports]
    row = next(line for line in text.splitlines() if line.startswith("V-VI"))
    assert row.split()[3:6] == [f"{np.mean(aucs):.3f}", "±", f"{np.std(aucs, ddof=1):.3f}"]
    assert "[" not in row  # no interval: the per-seed bootstrap intervals stay in each seed's report
    assert "threshold chosen for each seed: " + ", ".join(f"{t:.4f}" for t in thresholds) in text
    assert f"{np.mean(thresholds):.4f}" not in text
    assert "mean ± standard deviation over 3 training seeds (0, 1, 2)" in text
    eo = [r["gaps"]["equalized_odds_difference"]["value"] for r in reports]
    assert f"{np.mean(eo):.3f} ± {np.std(eo, ddof=1):.3f}" in text
    both = compare_table(averaged, averaged)
    assert f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}" in both and "threshold chosen for each seed" in both
    assert save_chart(averaged, averaged, tmp_path / "c.png").is_file()


def test_multiclass_table():
    rep = multiclass_report([0, 1, 2, 0, 1, 2], np.eye(3)[[0, 1, 2, 1, 1, 2]] * 0.9 + 0.03,
                            ["a", "a", "a", "b", "b", "b"], classes=["x", "y", "z"], n_boot=20)
    text = format_table(rep)
    assert "3 classes (x, y, z)" in text and "AUC z vs rest" in text and "bal. acc. gap" in text


def test_save_chart_and_json_are_atomic(tmp_path):
    a, b = _reports()
    out = save_chart(a, b, tmp_path / "chart.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png"]  # no temporary file left
    with pytest.raises(ConfigError):
        save_chart(a, b, tmp_path / "chart.gif")
    save_json(a, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == a


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.json"]
