"""rebalance --dry-run against a stand-in generator of known acceptance: 30 % in one group, 70 % in the other."""

import numpy as np
import pytest
from PIL import Image

from dermdiff_lora.tone.rebalance import rebalance
from dermdiff_lora.tone.rebalance_dryrun import dry_run, expected_renders, format_dry_run
from dermdiff_lora.tone.synthetic import TONE_ITA_RANGES, draw_skin, make_dataset

ACCEPT = {"benign": 0.3, "malignant": 0.7}
TARGET = {("benign", "2"): 100, ("malignant", "2"): 100}


class Known:
    """Each render is accepted with its group's probability (independently per seed); else blank."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompt, seed):
        self.calls += 1
        diagnosis, tone = prompt.split()[0], prompt.split(" on ")[1].split()[0]
        rng = np.random.default_rng(seed)
        if rng.random() >= ACCEPT[diagnosis]:
            return Image.new("RGB", (32, 32), (0, 0, 0))
        return draw_skin(32, float(rng.uniform(*TONE_ITA_RANGES[tone])), diagnosis, seed=seed)[0]


def test_expected_renders_closed_form():
    assert expected_renders(1.0, 5) == 1 and expected_renders(0.0, 5) == 5
    # tries until the first success, capped at 3: 1·p + 2·(1-p)p + 3·(1-p)^2
    assert expected_renders(0.3, 3) == pytest.approx(0.3 + 2 * 0.7 * 0.3 + 3 * 0.49)


def test_dry_run_predicts_the_render_count_within_20_percent(tmp_path):
    data = make_dataset(tmp_path / "data", n=12, size=32, seed=2, tone_counts={"lighter": 1, "brown": 0, "darker": 0})
    kw = {"target": TARGET, "max_tries": 8}
    gen = Known()
    plan = dry_run(data, gen, pilot=40, batch_size=8, **kw)
    assert gen.calls == 80 == plan["pilot_renders"] and not (tmp_path / "out").exists()
    groups = plan["groups"]
    assert {k: g["needs"] for k, g in groups.items() if g["needs"]} == {"benign/2": 100, "malignant/2": 100}
    assert groups["benign/2"]["acceptance"] == pytest.approx(0.3, abs=0.12)
    assert groups["malignant/2"]["acceptance"] == pytest.approx(0.7, abs=0.12)
    assert "benign/2" in format_dry_run(plan) and "renders" in format_dry_run(plan)
    report = rebalance(data, tmp_path / "out", Known(), batch_size=8, progress=False, **kw)
    actual = report.speed["renders"]
    assert abs(plan["expected_renders"] - actual) <= 0.2 * actual, (plan["expected_renders"], actual)
    for label in ("benign/2", "malignant/2"):
        g = report.groups[label]
        assert abs(groups[label]["expected_renders"] - g["generated"]) <= 0.2 * g["generated"]
