"""The CIELAB tone shift against ITA: the shifted image measures in the target group, the lesion's pixels are
unchanged bit for bit, and the L* shift is the smallest that reaches the group (closed form on uniform skin)."""

import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.tone.labshift import (
    MARGINS,
    ShiftError,
    apply_shift,
    interval,
    planned_delta,
    prepare,
    scheme_for,
    shift_to,
)
from dermdiff_lora.tone.skintone import SCHEMES, estimate_ita
from dermdiff_lora.tone.synthetic import TONE_GROUPS, draw_skin

PAPER = SCHEMES["paper"]


def _edge(source_ita: float, target: str) -> float:
    low, high = interval(PAPER, target)
    return low if source_ita < low else high


def test_known_answer_on_uniform_skin_is_the_closed_form_shift():
    img, _ = draw_skin(64, 10.0, "malignant", seed=4, texture=False)
    prep = prepare(img)
    skin = rgb2lab(np.asarray(img)[:1, :1])[0, 0]  # a corner pixel: skin, one colour everywhere
    assert (prep.lightness, prep.b) == pytest.approx((skin[0], skin[2]), abs=1e-9)
    shifted = shift_to(prep, "lighter")
    # ITA = atan((L* - 50) / b*): the smallest L* with ITA >= 28 + 0.25 at this b*
    expected = 50.0 + skin[2] * math.tan(math.radians(28.0 + MARGINS[0])) - skin[0]
    assert shifted.margin == MARGINS[0] and shifted.delta_l == pytest.approx(expected, abs=1e-9)
    assert estimate_ita(shifted.rgb).category == "lighter"
    assert 28.0 <= shifted.ita_after <= 28.0 + 1.0


@pytest.mark.parametrize("source_ita", [62.0, 40.0, 15.0, -5.0, -25.0, -40.0, -58.0])
@pytest.mark.parametrize("diagnosis", ["benign", "malignant"])
def test_shift_measures_in_every_target_group_with_the_lesion_unchanged(source_ita, diagnosis):
    img, _ = draw_skin(96, source_ita, diagnosis, seed=int(source_ita) + 100, hair=8)
    prep = prepare(img)
    for target in TONE_GROUPS:
        shifted = shift_to(prep, target)
        assert estimate_ita(shifted.rgb).category == target
        assert shifted.rgb[prep.lesion].tobytes() == prep.rgb[prep.lesion].tobytes()  # bit for bit
        if target == prep.category:
            assert shifted.delta_l == 0.0 and shifted.rgb is prep.rgb
            continue
        assert prep.lesion.any() and (shifted.rgb[~prep.lesion] != prep.rgb[~prep.lesion]).any()
        edge = _edge(prep.ita, target)
        assert abs(shifted.ita_after - edge) <= shifted.margin + 1.0  # lands just inside the near edge
        # smallest: the shift aimed half a degree short of the edge, and those of the smaller margins, stay
        # outside the group
        smaller = [m for m in MARGINS if m < shifted.margin]
        for margin in [-0.5, *smaller]:
            delta = planned_delta(prep, *interval(PAPER, target), margin)
            assert abs(delta) < abs(shifted.delta_l)
            assert estimate_ita(apply_shift(prep.rgb, prep.lesion, delta)).category != target


def test_shift_is_deterministic_and_refuses_what_it_cannot_measure():
    img, _ = draw_skin(64, -45.0, "benign", seed=9)
    a, b = shift_to(prepare(img), "lighter"), shift_to(prepare(np.asarray(img)), "lighter")
    assert a.rgb.tobytes() == b.rgb.tobytes() and a.delta_l == b.delta_l
    with pytest.raises(ShiftError, match="grayscale"):
        prepare(Image.new("L", (32, 32), 128))
    with pytest.raises(ConfigError, match="not a category"):
        shift_to(prepare(img), "olive")
    assert scheme_for(["darker", "lighter"]) is PAPER and scheme_for(["dark", "tan"]).name == "del_bino"
    with pytest.raises(ConfigError, match="ITA categories"):
        scheme_for(["I-II", "III-IV"])
