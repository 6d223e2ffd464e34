"""Tone fidelity over any number of diagnosis classes: HAM10000's seven × the three tone groups."""

from __future__ import annotations

from types import SimpleNamespace

from dermdiff_lora.core.prompts import PromptBuilder
from dermdiff_lora.data.presets import PRESET_TABLE
from dermdiff_lora.tone import fidelity
from dermdiff_lora.tone.synthetic import draw_skin

ITA = {"lighter": 50.0, "brown": 0.0, "darker": -50.0}


class DrawsThePromptedTone:
    """A stand-in pipeline: each prompt's tone word decides the skin drawn; 'melanoma' is always drawn brown."""

    def __call__(self, prompts, generator, **kw):
        images = []
        for prompt, gen in zip(prompts, generator):
            tone = "brown" if prompt.startswith("melanoma ") else prompt.split(" on ")[1].split()[0]
            images.append(draw_skin(kw["height"], ITA[tone], seed=gen.initial_seed(), lesion_fraction=0.1)[0])
        return SimpleNamespace(images=images)


def test_tone_fidelity_per_class_for_seven_classes():
    words = PRESET_TABLE["ham10000"].class_words
    builder = PromptBuilder("{dx} on {skin_tone} skin tone",
                            {"dx": words, "skin_tone": {"0": "lighter", "1": "brown", "2": "darker"}})
    samples = fidelity.generate_samples(DrawsThePromptedTone(), builder, [1, 2], size=32, steps=1)
    assert len(samples) == 7 * 3 * 2
    report = fidelity.tone_report(samples)
    assert {t: r["n"] for t, r in report.items()} == {"lighter": 14, "brown": 14, "darker": 14}
    by_class = fidelity.tone_by_class(samples, "dx")
    assert list(by_class) == list(words.values())
    assert by_class["melanoma"] == {"lighter": 0.0, "brown": 1.0, "darker": 0.0}
    assert all(v == {"lighter": 1.0, "brown": 1.0, "darker": 1.0} for k, v in by_class.items() if k != "melanoma")
    assert report["lighter"]["in_group"] == 6 / 7
