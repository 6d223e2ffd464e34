"""Rebalance targets: ``equal_keep_prior`` on group counts (hand-computed answers), and the label-prior report."""

import json

import pytest

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.tone.rebalance import REPORT_FILE, rebalance
from dermdiff_lora.tone.rebalance_targets import apportion, plan_counts, prior_change

# 125 images: benign 110 (88 %), malignant 15 (12 %); tone 0 has 100, tone 1 has 25.
EXISTING = {("benign", "0"): 90, ("malignant", "0"): 10, ("benign", "1"): 20, ("malignant", "1"): 5}


def test_keep_prior_brings_every_tone_to_the_smallest_n_with_the_whole_label_mix():
    plan = plan_counts(EXISTING, "equal_keep_prior", tone_index=1)
    # By hand: N = 102 is the smallest size whose largest-remainder split (89.76 -> 90 benign, 12.24 -> 12
    # malignant) needs no fewer than the 90 benign images tone 0 already has; N = 101 gives 89 + 12.
    assert plan == {("benign", "0"): 0, ("malignant", "0"): 2, ("benign", "1"): 70, ("malignant", "1"): 7}
    after = {k: EXISTING[k] + plan[k] for k in EXISTING}
    for tone in ("0", "1"):
        assert after[("benign", tone)] + after[("malignant", tone)] == 102
        assert after[("malignant", tone)] / 102 == pytest.approx(15 / 125, abs=1 / 102)
    assert apportion(101, {"benign": 110 / 125, "malignant": 15 / 125}) == {"benign": 89, "malignant": 12}
    # the tone column may sit anywhere in the key
    swapped = {(t, d): n for (d, t), n in EXISTING.items()}
    assert plan_counts(swapped, "equal_keep_prior", tone_index=0) == {(t, d): n for (d, t), n in plan.items()}


def test_keep_prior_fills_an_empty_tone_group_and_equal_keeps_its_meaning():
    existing = {**EXISTING, ("benign", "2"): 0, ("malignant", "2"): 0}
    plan = plan_counts(existing, "equal_keep_prior", tone_index=1)
    assert (plan[("benign", "2")], plan[("malignant", "2")]) == (90, 12)
    assert plan_counts(existing, "equal") == {k: 90 - n for k, n in existing.items()}
    change = prior_change(existing, plan_counts(existing, "equal"), 1)
    assert change["before"]["1"] == {"benign": 0.8, "malignant": 0.2}
    assert change["after"]["1"] == {"benign": 0.5, "malignant": 0.5}  # equal moves the label prior
    with pytest.raises(ConfigError, match="'equal_keep_prior'"):
        plan_counts(existing, "equal_prior")


def test_rebalance_defaults_to_keep_prior_and_reports_the_prior(tmp_path):
    from test_rebalance import StandIn

    from dermdiff_lora.tone.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", size=48, seed=5, tone_counts={"lighter": 10, "brown": 4, "darker": 1})
    report = rebalance(data, tmp_path / "out", StandIn(), max_tries=1, progress=False)
    # 15 images: benign 11, malignant 4; the lighter group's 7 benign + 3 malignant set N = 10 (7.33 -> 7,
    # 2.67 -> 3)
    assert {g: v["requested"] for g, v in report.groups.items()} == {
        "benign/0": 0, "malignant/0": 0, "benign/1": 4, "malignant/1": 2, "benign/2": 6, "malignant/2": 3}
    saved = json.loads((tmp_path / "out" / REPORT_FILE).read_text())["label_prior"]
    assert saved["target"] == "equal_keep_prior" and saved["before"]["0"] == {"benign": 0.7, "malignant": 0.3}
    accepted = {g: v["accepted"] for g, v in report.groups.items()}
    for tone in ("1", "2"):
        mal = next(n for label, n in EXISTING_FIXTURE[tone].items() if label == "malignant")
        total = sum(EXISTING_FIXTURE[tone].values())
        added_mal, added_all = accepted[f"malignant/{tone}"], accepted[f"benign/{tone}"] + accepted[f"malignant/{tone}"]
        assert saved["after"][tone]["malignant"] == pytest.approx((mal + added_mal) / (total + added_all), abs=1e-4)


EXISTING_FIXTURE = {"0": {"benign": 7, "malignant": 3}, "1": {"benign": 3, "malignant": 1},
                    "2": {"benign": 1, "malignant": 0}}
