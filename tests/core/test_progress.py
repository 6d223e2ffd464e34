"""Progress off a terminal: a few whole lines with counts and ETA, never carriage-return redraws."""

from __future__ import annotations

import io

from conftest import make_cfg

from dermdiff_lora.core.progress import LineProgress, progress
from dermdiff_lora.training import train


def test_a_log_gets_one_line_per_five_percent_with_the_eta():
    out = io.StringIO()
    bar = progress(total=1000, desc="caching latents", unit="img", file=out)
    assert isinstance(bar, LineProgress)  # a StringIO is not a terminal
    with bar:
        for _ in range(1000):
            bar.update(1)
            bar.set_postfix(loss="0.1234")
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 20  # 5 %, 10 %, ..., 100 %
    assert lines[0].startswith("caching latents:   5% 50/1000 [") and "<" in lines[0]  # elapsed<remaining
    assert lines[-1].startswith("caching latents: 100% 1000/1000") and lines[-1].endswith("loss=0.1234]")


def test_iterables_resumed_passes_delay_and_disable():
    out = io.StringIO()
    assert [x for x in progress(range(7), desc="x", file=out)] == list(range(7))
    assert len(out.getvalue().splitlines()) == 7  # fewer steps than lines: one per step at most
    out = io.StringIO()
    with progress(total=100, initial=50, file=out) as bar:  # a resumed run: no lines for the steps done
        for _ in range(50):
            bar.update(1)
    assert len(out.getvalue().splitlines()) == 10
    for kwargs in ({"delay": 60.0}, {"disable": True}):
        out = io.StringIO()
        with progress(total=10, file=out, **kwargs) as bar:
            bar.update(10)
        assert out.getvalue() == ""


def test_training_log_is_a_few_lines(tiny_base, demo_data, tmp_path, capsys):
    steps = 40
    train.train(make_cfg(demo_data, tmp_path / "run", f"train.max_steps={steps}", "logging.progress=true",
                         f"speed.cache_dir={tmp_path / 'lc'}"))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train (lora):")]
    assert 1 <= len(lines) <= 20 and lines[-1].startswith(f"train (lora): 100% {steps}/{steps}")
    assert len(err.splitlines()) <= 30  # with the cache's lines
