"""Tone-balanced sampling weights: uniform expected mix, the cap, and an epoch of the training sampler."""

from collections import Counter

import pytest

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.data.balance import expected_mix, format_mix, group_weights
from dermdiff_lora.data.sampler import StepBatchSampler

GROUPS = ["lighter"] * 1400 + ["brown"] * 500 + ["darker"] * 100  # 70 / 25 / 5 %


def _epoch_mix(weights, seed=0):
    """The group shares of one epoch drawn by training's sampler (``weights=None``: unweighted)."""
    sampler = StepBatchSampler(len(GROUPS), 100, seed=seed, start=0, stop=len(GROUPS) // 100, weights=weights)
    counts = Counter(GROUPS[i] for batch in sampler for i, _ in batch)
    return {g: counts[g] / len(GROUPS) for g in set(GROUPS)}


def test_weights_make_the_expected_mix_uniform():
    weights = group_weights(GROUPS)
    assert sum(weights) == pytest.approx(len(GROUPS))  # mean weight 1
    mix = expected_mix(GROUPS, weights)
    assert mix == pytest.approx({"brown": 1 / 3, "darker": 1 / 3, "lighter": 1 / 3})
    assert weights[GROUPS.index("darker")] / weights[0] == pytest.approx(14.0)


def test_sampled_epoch_is_close_to_uniform():
    for seed in range(3):
        mix = _epoch_mix(group_weights(GROUPS), seed)
        assert all(abs(share - 1 / 3) < 0.04 for share in mix.values()), mix
    unweighted = _epoch_mix(None)
    assert unweighted["darker"] < 0.08  # without the weights the rare group stays rare


def test_cap_bounds_the_weight_ratio_and_sets_the_mix():
    weights = group_weights(GROUPS, cap=4.0)
    assert max(weights) / min(weights) == pytest.approx(4.0)
    mix = expected_mix(GROUPS, weights)
    # shares ∝ n_g·min(1/n_g, 4/1400): brown (ratio 2.8) is untouched, darker (ratio 14) is capped
    raw = {"lighter": 1.0, "brown": 1.0, "darker": 100 * 4 / 1400}
    target = {g: v / sum(raw.values()) for g, v in raw.items()}
    assert mix == pytest.approx(target)
    sampled = _epoch_mix(weights, seed=1)
    assert all(abs(sampled[g] - target[g]) < 0.04 for g in target), (sampled, target)
    assert group_weights(GROUPS, cap=100.0) == pytest.approx(group_weights(GROUPS))  # loose cap: no effect
    assert expected_mix(GROUPS, group_weights(GROUPS, cap=1.0)) == pytest.approx(
        {"lighter": 0.7, "brown": 0.25, "darker": 0.05}
    )


def test_any_hashable_groups_and_format():
    groups = [("benign", 0), ("benign", 0), ("malignant", 2)]
    mix = expected_mix(groups, group_weights(groups))
    assert mix == pytest.approx({("benign", 0): 0.5, ("malignant", 2): 0.5})
    line = format_mix(expected_mix(GROUPS, group_weights(GROUPS)))
    assert line == "expected group mix per epoch: brown 33.3% · darker 33.3% · lighter 33.3%"


def test_bad_arguments():
    with pytest.raises(ConfigError, match="cap=0.5 must be >= 1"):
        group_weights(GROUPS, cap=0.5)
    with pytest.raises(DataError, match="empty"):
        group_weights([])
    with pytest.raises(DataError, match="one per sample"):
        expected_mix(GROUPS, [1.0])


def _index(sizes: dict[tuple[str, str], int]):
    from dermdiff_lora.data.dataset import DatasetIndex, Record

    records = [Record(None, "", {"skin_tone": tone, "benign_malignant": dx})
               for (dx, tone), n in sizes.items() for _ in range(n)]
    return DatasetIndex(None, records)


def test_default_cap_and_a_warning_naming_each_small_diagnosis_tone_group(caplog):
    from dermdiff_lora.core import config
    from dermdiff_lora.data.balance import sampling_weights

    index = _index({("benign", "lighter"): 1400, ("benign", "brown"): 500, ("benign", "darker"): 100,
                    ("malignant", "lighter"): 60, ("malignant", "darker"): 5})
    cfg = config.load(None, ["data.balance=tone_x_diagnosis"]).data
    assert (cfg.balance_cap, cfg.balance_min_group) == (10.0, 50)
    with caplog.at_level("WARNING", logger="dermdiff_lora.data.balance"):
        weights, mix = sampling_weights(index, cfg)
    assert max(weights) / min(weights) == pytest.approx(10.0)  # capped by default
    assert set(mix) == {"lighter/benign", "brown/benign", "darker/benign", "lighter/malignant", "darker/malignant"}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "benign_malignant=malignant × skin_tone=darker: 5 image(s)" in warnings[0]
    assert "memorised" in warnings[0] and "skin_tone=lighter" not in warnings[0]  # 60 and more: not named
    uncapped = config.load(None, ["data.balance=tone_x_diagnosis", "data.balance_cap=null"]).data
    weights, _ = sampling_weights(index, uncapped)
    assert max(weights) / min(weights) == pytest.approx(1400 / 5)  # what the cap prevents by default
    caplog.clear()
    quiet = config.load(None, ["data.balance=tone", "data.balance_min_group=0"]).data
    with caplog.at_level("WARNING", logger="dermdiff_lora.data.balance"):
        assert sampling_weights(index, quiet)[0] is not None
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert sampling_weights(index, config.load(None, []).data) == (None, None)  # data.balance=none
