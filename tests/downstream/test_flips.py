"""Counterfactual flip rates: hand-counted answers from CSV files (``fairness --counterfactual``), the
bootstrap interval, clear errors, and agreement with what ``downstream`` wrote."""

import csv
import json

import numpy as np
import pytest

from dermdiff_lora.cli import app
from dermdiff_lora.core.errors import DataError
from dermdiff_lora.downstream.flips import flip_report, flips_from_csv


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def files(tmp_path):
    # 4 lighter and 2 darker test images; at threshold 0.5: a, b, e malignant
    pred = _write(tmp_path / "test.csv", ["file", "label", "group", "score"],
                  [["a", 1, "lighter", 0.9], ["b", 1, "lighter", 0.6], ["c", 0, "lighter", 0.2],
                   ["d", 0, "lighter", 0.4], ["e", 1, "darker", 0.7], ["f", 0, "darker", 0.1]])
    # lighter -> darker: b flips (0.6 -> 0.3), d flips (0.4 -> 0.55); a, c do not: 2 of 4
    # darker -> lighter: e flips (0.7 -> 0.45), f does not: 1 of 2
    cf = _write(tmp_path / "cf.csv", ["file", "target_group", "score"],
                [["a", "darker", 0.8], ["b", "darker", 0.3], ["c", "darker", 0.1], ["d", "darker", 0.55],
                 ["e", "lighter", 0.45], ["f", "lighter", 0.2]])
    return pred, cf


def test_flip_rates_are_the_hand_counted_shares(files):
    report = flips_from_csv(*files, threshold=0.5, n_boot=200)
    cells = report["cells"]
    assert (cells["lighter|darker"]["value"], cells["lighter|darker"]["n"]) == (0.5, 4)
    assert (cells["darker|lighter"]["value"], cells["darker|lighter"]["n"]) == (0.5, 2)
    assert report["overall"]["value"] == pytest.approx(3 / 6)
    low, high = cells["lighter|darker"]["low"], cells["lighter|darker"]["high"]
    assert 0.0 <= low < 0.5 < high <= 1.0
    # the threshold decides what flips: at 0.65, b (0.6 -> 0.3) and d (0.4 -> 0.55) stay benign
    assert flips_from_csv(*files, threshold=0.65, n_boot=0)["cells"]["lighter|darker"]["value"] == 0.0


def test_seeds_average_and_bootstrap_resamples_source_images():
    flips = [np.array([1, 0, 0, 0]), np.array([1, 1, 0, 0])]  # seed rates 0.25 and 0.5
    report = flip_report(flips, ["lighter"] * 4, ["darker"] * 4, group_order=["lighter", "darker"], n_boot=300)
    cell = report["cells"]["lighter|darker"]
    assert cell["value"] == pytest.approx(0.375) and report["n_seeds"] == 2
    assert report["cells"]["darker|lighter"]["value"] is None and report["cells"]["darker|lighter"]["n"] == 0
    assert 0.0 <= cell["low"] <= 0.375 <= cell["high"] <= 1.0


def test_cli_prints_the_table_and_refuses_unknown_ids(files, tmp_path, capsys):
    assert app.main(["fairness", str(files[0]), "--counterfactual", str(files[1]), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "score >= 0.5000" in out and "lighter -> darker" in out and "0.500" in out
    bad = _write(tmp_path / "bad.csv", ["file", "target_group", "score"], [["zz", "darker", 0.5]])
    with pytest.raises(DataError, match="zz"):
        flips_from_csv(files[0], bad)
    bad = _write(tmp_path / "bad2.csv", ["file", "target_group", "score"], [["a", "darker", 1.5]])
    with pytest.raises(DataError, match="outside"):
        flips_from_csv(files[0], bad)


def test_downstream_flips_agree_with_fairness_on_its_own_csv_files(tmp_path, capsys):
    from test_downstream_command import TINY, _setup

    from dermdiff_lora.downstream.command import DownstreamOptions, downstream

    setup = _setup(tmp_path, ("benign", "malignant"))
    out = tmp_path / "out"
    result = downstream(DownstreamOptions(
        dataset=str(setup["ds"]), split=str(setup["split"]), synthetic=str(setup["synthetic"]), out=str(out),
        adapter=str(setup["adapter"]), classifier=TINY, seeds=[2], n_boot=30, arms="real", threshold="0.5"))
    pred = out / "predictions" / "real_only_seed2_test.csv"
    again = flips_from_csv(pred, out / "predictions" / "real_only_seed2_counterfactual.csv", threshold=0.5, n_boot=30)
    mine = result["counterfactual"]["real_only"]
    assert {k: c["value"] for k, c in again["cells"].items()} == {k: c["value"] for k, c in mine["cells"].items()}
    assert json.loads(json.dumps(mine))["overall"]["n"] == again["overall"]["n"]


def test_multiclass_flips_compare_the_argmax(tmp_path):
    pred = _write(tmp_path / "mc.csv", ["file", "label", "group", "score_nevus", "score_melanoma"],
                  [["a", "nevus", "brown", 0.8, 0.2], ["b", "melanoma", "brown", 0.3, 0.7]])
    cf = _write(tmp_path / "mc_cf.csv", ["file", "target_group", "score_nevus", "score_melanoma"],
                [["a", "darker", 0.4, 0.6], ["b", "darker", 0.1, 0.9]])  # a's argmax changes, b's does not
    report = flips_from_csv(pred, cf, n_boot=0)
    assert report["threshold"] is None and report["cells"]["brown|darker"]["value"] == 0.5
