"""The arms' training sets: resampled rows and CIELAB-shifted copies, per cell as many as the rebalance added,
deterministic per seed; every arm on the same split and seeds in ``downstream``."""

import csv
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.downstream.arms import LabShifter, lab_arm, parse_arms, resample_arm
from dermdiff_lora.downstream.samples import Sample
from dermdiff_lora.tone.labshift import prepare
from dermdiff_lora.tone.skintone import estimate_ita
from dermdiff_lora.tone.synthetic import TONE_GROUPS, draw_skin

ITAS = {"lighter": 50.0, "brown": 0.0, "darker": -45.0}
ADDED = {("malignant", "darker"): 4, ("benign", "brown"): 2, ("malignant", "lighter"): 1}


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    root = tmp_path_factory.mktemp("arms")
    out = []
    for i, (label, tone, k) in enumerate((lb, t, k) for lb in ("benign", "malignant") for t in TONE_GROUPS
                                         for k in range(3)):
        img, _ = draw_skin(48, ITAS[tone] + 3 * k, label, seed=i)
        img.save(root / f"IMG_{i:03d}.png")
        out.append(Sample(root / f"IMG_{i:03d}.png", f"IMG_{i:03d}", label, tone))
    return out


def test_resample_duplicates_real_rows_of_each_cell_deterministically(train):
    arm, short = resample_arm(train, ADDED, seed=0)
    assert arm[:len(train)] == train and not short
    extra = arm[len(train):]
    assert Counter((s.label, s.group) for s in extra) == ADDED
    assert all(s in train for s in extra)  # duplicates of real rows, nothing new
    assert resample_arm(train, ADDED, seed=0)[0] == arm
    assert len({tuple(s.file for s in resample_arm(train, ADDED, seed=k)[0]) for k in range(5)}) > 1
    _, short = resample_arm(train, {("nevus", "brown"): 3}, seed=0)
    assert short == {"nevus|brown": 3}


def test_lab_arm_adds_shifted_copies_that_measure_in_the_cell_with_the_lesion_kept(train, tmp_path):
    shifter = LabShifter(tmp_path / "lab", TONE_GROUPS)
    arm, short = lab_arm(train, ADDED, seed=3, shifter=shifter)
    extra = arm[len(train):]
    assert not short and Counter((s.label, s.group) for s in extra) == ADDED
    sources = {s.file: s for s in train}
    for s in extra:
        source = sources[s.file.split("->")[0]]
        assert source.label == s.label and source.group != s.group
        assert estimate_ita(s.path).category == s.group
        prep = prepare(source.path)
        shifted = np.asarray(Image.open(s.path).convert("RGB"))
        assert shifted[prep.lesion].tobytes() == prep.rgb[prep.lesion].tobytes()
    again, _ = lab_arm(train, ADDED, seed=3, shifter=LabShifter(tmp_path / "lab2", TONE_GROUPS))
    assert [s.file for s in again] == [s.file for s in arm]
    assert all(a.path.read_bytes() == b.path.read_bytes() for a, b in zip(again[len(train):], extra))
    assert len({tuple(s.file for s in lab_arm(train, ADDED, seed=k, shifter=shifter)[0]) for k in range(4)}) > 1


def test_parse_arms_orders_them_with_real_first_and_refuses_unknown_ones():
    assert parse_arms("real+lab,real+resample", TONE_GROUPS) == (["real_only", "real_resample", "real_lab"], [])
    assert parse_arms("all", TONE_GROUPS)[0] == ["real_only", "real_resample", "real_lab", "real_plus_synthetic"]
    arms, warnings = parse_arms("all", ["I-II", "V-VI"])
    assert "real_lab" not in arms and "ITA categories" in warnings[0]
    with pytest.raises(ConfigError, match="real\\+smote"):
        parse_arms("real,real+smote", TONE_GROUPS)
    with pytest.raises(ConfigError, match="ITA categories"):
        parse_arms("real+lab", ["I-II", "V-VI"])


def test_every_arm_runs_on_the_same_split_seeds_and_test_images(tmp_path):
    from test_downstream_command import TINY, _setup

    from dermdiff_lora.downstream.command import DownstreamOptions, downstream

    setup = _setup(tmp_path, ("benign", "malignant"))
    out = tmp_path / "out"
    result = downstream(DownstreamOptions(
        dataset=str(setup["ds"]), split=str(setup["split"]), synthetic=str(setup["synthetic"]), out=str(out),
        adapter=str(setup["adapter"]), classifier=TINY, seeds=[0, 4], n_boot=20, arms="real+resample,real",
        counterfactual=False))
    assert list(result["arms"]) == ["real_only", "real_resample"]
    tests = set()
    for arm, block in result["arms"].items():
        assert [r["seed"] for r in block["per_seed"]] == [0, 4] and block["report"]["seeds"] == [0, 4]
        assert {g: block["report"]["per_group"][g]["n"] for g in block["report"]["groups"]} == {
            g: result["arms"]["real_only"]["report"]["per_group"][g]["n"] for g in result["groups"]}
        for seed in (0, 4):
            with open(out / "predictions" / f"{arm}_seed{seed}_test.csv") as fh:
                tests.add(tuple(r["file"] for r in csv.DictReader(fh)))
    assert len(tests) == 1  # the same test images, in the same order, for every arm and seed
    assert result["split_file"]["sha256"] and set(result["threshold"]["by_seed"]) == set(result["arms"])
    assert result["comparison"]["reference"] == "real_only" and "real_resample" in result["comparison"]["differences"]
    assert result["counterfactual"] == {} and not (out / "predictions" / "real_only_seed0_counterfactual.csv").exists()
