"""Does a model draw what it is asked for? Tone fidelity, lesion presence and diversity of generated images.

A generated image is *in group* when the package's ITA estimator (``skintone.estimate_ita``, border
strategy, paper scheme: darker (-inf, -30), brown [-30, 28), lighter [28, inf)) puts it in the tone
group its prompt named; *in core* when its ITA also lies in a given core range of that group (well inside
it: a sharper measure once nearly every image is in group); it *has a lesion* when the estimator's lesion mask covers at least
``LESION_MIN_FRACTION`` of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..core.prompts import PromptBuilder

LESION_MIN_FRACTION = 0.02


@dataclass
class Sample:
    """One generated image, what it was asked for, and what the ITA estimator measured."""

    words: dict[str, str]
    prompt: str
    seed: int
    image: Image.Image
    ita: float | None = None
    category: str | None = None
    lesion_fraction: float = 0.0


def generate_samples(pipe, builder: PromptBuilder, seeds: Sequence[int], *, steps: int = 20,
                     guidance_scale: float = 4.0, size: int = 32, batch_size: int = 24) -> list[Sample]:
    """One image per (grid cell of the prompt template, seed), each measured with ``measure``."""
    from ..generation.generate import render

    jobs = [(words, prompt, int(seed)) for words, prompt in builder.grid() for seed in seeds]
    images = render(pipe, [p for _, p, _ in jobs], [s for _, _, s in jobs], steps=steps,
                    guidance_scale=guidance_scale, height=size, width=size, batch_size=batch_size)
    return [measure(Sample(w, p, s, im)) for (w, p, s), im in zip(jobs, images)]


def measure(sample: Sample, scheme: str = "paper") -> Sample:
    """Fill in the ITA, tone category and lesion share of ``sample``'s image."""
    from .skintone import estimate_ita

    est = estimate_ita(sample.image, scheme=scheme)
    sample.ita, sample.category, sample.lesion_fraction = est.ita, est.category, est.lesion_fraction
    return sample


def tone_report(samples: Sequence[Sample], tone_column: str = "skin_tone",
                core: dict[str, tuple[float, float]] | None = None) -> dict[str, dict]:
    """Per prompted tone word: images, share in group, mean ITA, share with a lesion, undetermined; with
    ``core`` (tone -> [low, high) ITA range) also the share in that core range."""
    report: dict[str, dict] = {}
    for tone in dict.fromkeys(s.words[tone_column] for s in samples):
        group = [s for s in samples if s.words[tone_column] == tone]
        itas = [s.ita for s in group if s.ita is not None]
        report[tone] = {
            "n": len(group),
            "in_group": sum(s.category == tone for s in group) / len(group),
            "mean_ita": float(np.mean(itas)) if itas else float("nan"),
            "lesion": sum(s.lesion_fraction >= LESION_MIN_FRACTION for s in group) / len(group),
            "undetermined": len(group) - len(itas),
        }
        if core and tone in core:
            lo, hi = core[tone]
            report[tone]["in_core"] = sum(lo <= ita < hi for ita in itas) / len(group)
    return report


def tone_by_class(samples: Sequence[Sample], class_column: str, tone_column: str = "skin_tone") -> dict[str, dict]:
    """Per diagnosis class (any number of them) and prompted tone: the share of images in the tone group."""
    report: dict[str, dict[str, float]] = {}
    for cls in dict.fromkeys(s.words[class_column] for s in samples):
        mine = [s for s in samples if s.words[class_column] == cls]
        report[cls] = {tone: sum(s.category == tone for s in group) / len(group)
                       for tone in dict.fromkeys(s.words[tone_column] for s in mine)
                       for group in [[s for s in mine if s.words[tone_column] == tone]]}
    return report


def diversity(samples: Sequence[Sample]) -> float:
    """Mean pairwise RMS pixel distance (0-255 scale) between images of the same prompt across seeds."""
    by_prompt: dict[str, list[np.ndarray]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt, []).append(np.asarray(s.image.convert("RGB"), dtype=np.float32))
    distances = [float(np.sqrt(np.mean((a - b) ** 2)))
                 for arrays in by_prompt.values()
                 for i, a in enumerate(arrays) for b in arrays[i + 1:]]
    return float(np.mean(distances)) if distances else 0.0


def format_table(reports: dict[str, dict[str, dict]]) -> str:
    """A plain-text table: one row per tone; in-group share, in-core share (when measured) and mean ITA for
    each named report."""
    tones = list(next(iter(reports.values())))
    core = all("in_core" in r[t] for r in reports.values() for t in tones)
    head = f"{'prompted tone':<14}" + "".join(
        f"{n + ' in group':>20}" + (f"{'in core':>9}" if core else "") + f"{'mean ITA':>10}" for n in reports)
    lines = [head, "-" * len(head)]
    for tone in tones:
        cells = "".join(f"{r[tone]['in_group']:>19.0%} " + (f"{r[tone]['in_core']:>8.0%} " if core else "")
                        + f"{r[tone]['mean_ita']:>9.1f}" for r in reports.values())
        lines.append(f"{tone:<14}{cells}")
    return "\n".join(lines)
