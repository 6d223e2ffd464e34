"""Tone statistics per cell from given ITA values: hand-computed shares, means and Wasserstein distances."""

from __future__ import annotations

import numpy as np
import pytest

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.eval.tone_stats import tone_stats


def categorize(ita: float) -> str:
    return "darker" if ita < -30 else "lighter"


def test_known_values_per_cell():
    gen_cells = [("malignant", "darker")] * 4 + [("benign", "lighter")] * 2
    real_cells = [("malignant", "darker")] * 2 + [("benign", "lighter")] * 2
    out = tone_stats([-40.0, -35.0, 10.0, None, 10.0, 20.0], gen_cells,
                     [-50.0, float("nan"), 10.0, 30.0], real_cells, categorize=categorize)
    dark, light = out["cells"]["malignant|darker"], out["cells"]["benign|lighter"]
    assert dark["prompted_group"] == "darker"
    assert dark["generated"]["in_group"] == pytest.approx(2 / 4)  # the undetermined image counts as a miss
    assert dark["generated"]["undetermined"] == 1 and dark["real"]["undetermined"] == 1
    assert dark["generated"]["mean_ita"] == pytest.approx(-65 / 3)
    assert dark["generated"]["std_ita"] == pytest.approx(np.std([-40, -35, 10]))
    assert dark["wasserstein"] == pytest.approx((10 + 15 + 60) / 3)  # every generated value against -50
    assert light["wasserstein"] == pytest.approx(5.0)  # sorted pairs (10, 10), (20, 30)
    assert light["generated"]["in_group"] == 1.0 and light["real"]["in_group"] == 1.0


def test_prompted_group_can_be_any_part_of_the_cell():
    out = tone_stats([-40.0], [("darker", "malignant")], categorize=categorize,
                     prompted_group=lambda cell: cell[0])
    cell = out["cells"]["darker|malignant"]
    assert cell["generated"]["in_group"] == 1.0 and cell["wasserstein"] is None and cell["real"]["n"] == 0


def test_without_a_scheme_only_ita_figures_are_given():
    out = tone_stats([1.0, 3.0], [("a", "b")] * 2)
    assert "in_group" not in out["cells"]["a|b"]["generated"]
    assert out["cells"]["a|b"]["generated"]["mean_ita"] == 2.0
    with pytest.raises(ConfigError):
        tone_stats([1.0], [])
