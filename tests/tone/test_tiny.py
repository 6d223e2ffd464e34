"""The shipped ``tiny`` base: a small safetensors pipeline that draws the skin tone its prompt names."""

from __future__ import annotations

import json

import pytest

from dermdiff_lora.core import models
from dermdiff_lora.core.prompts import PromptBuilder
from dermdiff_lora.tone import fidelity
from dermdiff_lora.tone.synthetic import draw_skin, make_dataset


@pytest.fixture(scope="module")
def tiny_samples():
    pipe = models.load_pipeline("tiny")
    return fidelity.generate_samples(pipe, PromptBuilder(), range(4), steps=10, guidance_scale=2.0)


def test_tiny_is_a_small_safetensors_pipeline_folder():
    folder = models.resolve_base("tiny")
    assert folder == models.TINY_ASSET
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 10_000_000
    assert not [f for f in files if f.suffix in models.PICKLE_SUFFIXES]
    for part in ("unet", "vae", "text_encoder"):
        assert (folder / part / "diffusion_pytorch_model.safetensors").is_file() or (
            folder / part / "model.safetensors").is_file()
    parts = models.load_parts("tiny")
    assert parts.vae.config.scaling_factor != 0.18215  # set from the trained VAE's latents
    assert json.loads((folder / "build_info.json").read_text())["unet_steps"] > 0


def test_tiny_orders_tones_and_lands_in_the_prompted_group(tiny_samples):
    report = fidelity.tone_report(tiny_samples)
    assert report["lighter"]["mean_ita"] > report["brown"]["mean_ita"] > report["darker"]["mean_ita"]
    hits = sum(s.category == s.words["skin_tone"] for s in tiny_samples)
    assert hits / len(tiny_samples) >= 0.8
    assert fidelity.diversity(tiny_samples) > 2.0  # different seeds, different pictures


def test_tiny_draws_melanomas_larger_than_benign_lesions(tiny_samples):
    """The diagnosis word reaches the image: the training data's melanomas cover 18-34 % of the image,
    benign lesions 8-18 % (scripts/eval_tiny.py measures the diagnosis with a classifier)."""
    for tone in ("lighter", "brown", "darker"):
        size = {d: [s.lesion_fraction for s in tiny_samples if s.words == {"benign_malignant": d, "skin_tone": tone}]
                for d in ("benign", "malignant")}
        assert min(size["malignant"]) > max(size["benign"]), (tone, size)


def test_tone_report_on_real_synthetic_images_is_exact():
    samples = [fidelity.measure(fidelity.Sample({"skin_tone": tone}, tone, seed, draw_skin(32, ita, seed=seed)[0]))
               for seed, (tone, ita) in enumerate([("lighter", 50.0), ("brown", 0.0), ("darker", -45.0)] * 2)]
    report = fidelity.tone_report(samples, core={"lighter": (45.0, 55.0), "brown": (5.0, 10.0)})
    assert [r["in_group"] for r in report.values()] == [1.0, 1.0, 1.0]
    assert [r["lesion"] for r in report.values()] == [1.0, 1.0, 1.0]
    assert abs(report["brown"]["mean_ita"]) < 3.0
    assert report["lighter"]["in_core"] == 1.0 and report["brown"]["in_core"] == 0.0
    assert "in_core" not in report["darker"]
    assert "in core" not in fidelity.format_table({"before": report, "after": report})  # darker has none
    del report["darker"]
    assert "in core" in fidelity.format_table({"before": report, "after": report})


def test_make_dataset_draws_tones_inside_given_ranges(tmp_path):
    import csv

    folder = make_dataset(tmp_path / "d", n=9, size=16, ita_ranges={"darker": (-50.0, -45.0)})
    rows = list(csv.DictReader(open(folder / "metadata.csv")))
    darker = [float(r["ita_true"]) for r in rows if r["skin_tone"] == "2"]
    assert len(darker) == 3 and all(-50.0 <= v <= -45.0 for v in darker)


def test_demo_targets_the_weakest_group():
    from dermdiff_lora.cli.demo import weakest_group

    report = {"lighter": {"in_group": 1.0, "mean_ita": 50.0}, "brown": {"in_group": 0.75, "mean_ita": 0.0},
              "darker": {"in_group": 0.75, "mean_ita": -33.0}}
    assert weakest_group(report) == "darker"  # tie on in_group: darker's mean is farther from its core
    for tone, core in zip(report, (0.5, 1.0, 0.9)):
        report[tone].update(in_group=1.0, in_core=core)
    assert weakest_group(report) == "lighter"  # all in group: fewest in core


def test_rebalance_fills_a_missing_tone_with_the_tiny_model(tmp_path):
    """End to end: a dataset without darker skin, filled by the tiny model; every image kept is checked."""
    import csv

    from dermdiff_lora.tone.rebalance import pipeline_generate_fn, rebalance
    from dermdiff_lora.tone.skintone import estimate_ita

    source = make_dataset(tmp_path / "data", size=32, seed=3, malignant_fraction=0.5,
                          tone_counts={"lighter": 2, "brown": 2})
    generate = pipeline_generate_fn(models.load_pipeline("tiny"), steps=10, guidance_scale=2.0, height=32,
                                    width=32)
    report = rebalance(source, tmp_path / "out", generate, max_tries=4, progress=False)
    assert {g: v["requested"] for g, v in report.groups.items() if v["requested"]} == {
        "benign/2": 1, "malignant/2": 1}
    assert report.groups["benign/2"]["accepted"] == report.groups["malignant/2"]["accepted"] == 1
    rows = list(csv.DictReader(open(tmp_path / "out" / "metadata.csv")))
    synthetic = [r for r in rows if r["synthetic"] == "true"]
    assert len(rows) == 6 and {r["skin_tone"] for r in synthetic} == {"2"}
    for r in synthetic:
        assert estimate_ita(tmp_path / "out" / f"{r['image_name']}.png").category == "darker"
    again = rebalance(source, tmp_path / "out", generate, max_tries=4, progress=False)
    assert again.added == 0
