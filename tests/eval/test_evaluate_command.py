"""``evaluate`` end to end on the tiny-random base: inputs read from the adapter's saved config, outputs
beside the run, planted training copies flagged, two runs compared."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import pytest
from PIL import Image

from dermdiff_lora.cli import app
from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.eval.command import EvaluateOptions, evaluate


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Real images the adapter never saw (another seed of the synthetic generator)."""
    from dermdiff_lora.tone.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("heldout") / "ds", n=18, size=32, seed=7)


@pytest.fixture(scope="module")
def rendered(trained_lora, held_out, tmp_path_factory):
    """evaluate --adapter: 2 images per cell rendered from the adapter, compared with the held-out set."""
    out = tmp_path_factory.mktemp("eval") / "run"
    opts = EvaluateOptions(real=str(held_out), adapter=str(trained_lora), out=str(out), extractor="tiny-dinov2",
                           per_cell=2, steps=2)
    return evaluate(opts), out


def test_evaluate_renders_per_cell_and_writes_every_output(rendered, trained_lora):
    result, out = rendered
    for name in ("eval.json", "eval.txt", "eval_fid.png", "eval_closest_pairs.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "eval.json").read_text())
    assert saved["inputs"]["adapter"] == str(trained_lora)
    assert saved["inputs"]["train"]  # the training data came from the adapter's saved config
    assert "random weights" in saved["extractor"]["name"]
    assert set(saved["cells"]) == {f"{d}|{t}" for d in ("benign", "malignant") for t in ("lighter", "brown", "darker")}
    assert all(c["n_generated"] == 2 for c in saved["cells"].values())
    assert "random weights" in (out / "eval.txt").read_text().splitlines()[0]
    assert "memorisation" in saved["overall"] and "tone" in next(iter(saved["cells"].values()))


def test_planted_training_copies_are_flagged_from_a_rebalance_folder(trained_lora, held_out, tmp_path):
    """A rebalance-style folder whose synthetic rows are exact copies of training images: every one flagged."""
    from dermdiff_lora.core.config import load_saved

    train_dir = load_saved(trained_lora).data.dir
    rows = list(csv.DictReader(open(f"{train_dir}/metadata.csv")))[:4]
    fake = tmp_path / "rebalanced"
    fake.mkdir()
    for row in rows:
        shutil.copy(f"{train_dir}/{row['image_name']}.png", fake / f"{row['image_name']}.png")
        row["synthetic"] = "true"
    with open(fake / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (fake / "rebalance_run.json").write_text(json.dumps({"adapter": str(trained_lora)}))  # as rebalance records
    opts = EvaluateOptions(real=str(held_out), generated=str(fake), out=str(tmp_path / "ev"),
                           extractor="tiny-dinov2")
    memo = evaluate(opts)["overall"]["memorisation"]  # the training set comes from the recorded adapter
    assert memo["share_above_threshold"] == 1.0 and memo["n_generated"] == 4
    # --adapter naming the weights file stands for its run folder (as in downstream): same template, same
    # training set, so memorisation is not silently skipped
    (fake / "rebalance_run.json").unlink()
    from dermdiff_lora.adapters.lora import WEIGHT_NAME

    result = evaluate(replace(opts, adapter=str(trained_lora / WEIGHT_NAME), out=str(tmp_path / "ev_file")))
    assert result["inputs"]["adapter"] == str(trained_lora) and result["inputs"]["train"] == train_dir
    assert result["inputs"]["template"] == load_saved(trained_lora).prompts.template
    assert result["overall"]["memorisation"]["share_above_threshold"] == 1.0


def _imagefolder(folder, rows, images):
    """An imagefolder: ``rows`` (metadata) with ``images[i]`` copied to row i's image_name.png."""
    folder.mkdir()
    for row, image in zip(rows, images):
        shutil.copy(image, folder / f"{row['image_name']}.png")
    with open(folder / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_same_patient_photos_are_left_out_of_the_threshold_end_to_end(trained_lora, held_out, tmp_path,
                                                                     monkeypatch):
    """Held-out photos of training patients (here: copies of their training images, under other names) would
    push the memorisation threshold to 1.0 and hide every copy; ``evaluate`` excludes same-patient pairs.
    The pixel-copy finder (which would leave these copies out as leakage too) is off: this tests the
    patient exclusion alone."""
    from dermdiff_lora.core.config import load_saved
    from dermdiff_lora.eval import leakage

    monkeypatch.setattr(leakage, "found_leaks", lambda *a, **k: [])

    train_dir = load_saved(trained_lora).data.dir
    train_rows = list(csv.DictReader(open(f"{train_dir}/metadata.csv")))
    real_rows = list(csv.DictReader(open(held_out / "metadata.csv")))
    for i, row in enumerate(real_rows):  # patients of their own (the generator reuses ids across seeds)
        row["patient_id"] = f"HELD_{i}"
    copies = [{**r, "image_name": f"COPY_{i}"} for i, r in enumerate(train_rows[:5])]  # same patient ids
    images = [held_out / f"{r['image_name']}.png" for r in real_rows]
    images += [f"{train_dir}/{r['image_name']}.png" for r in train_rows[:5]]
    planted = [{**r, "synthetic": "true"} for r in train_rows[5:8]]
    generated = _imagefolder(tmp_path / "gen", planted, [f"{train_dir}/{r['image_name']}.png" for r in planted])
    (generated / "rebalance_run.json").write_text(json.dumps({"adapter": str(trained_lora)}))  # the training set

    def memorisation(real_rows, name):
        real = _imagefolder(tmp_path / name, real_rows, images)
        result = evaluate(EvaluateOptions(real=str(real), generated=str(generated), out=str(tmp_path / f"ev_{name}"),
                                          extractor="tiny-dinov2"))
        return result["memorisation"], result["overall"]["memorisation"]

    info, found = memorisation(real_rows + copies, "same_patient")
    assert info["n_heldout"] == info["n_heldout_used"] == 23
    # the copies' own training images were not candidates (a random-weight extractor puts every lesion photo
    # near 1 - 1e-4, an exact copy at 1 within float rounding)
    assert info["threshold"] < 1 - 1e-5
    assert found["share_above_threshold"] == 1.0 and found["n_generated"] == 3  # planted copies flagged
    # the same photos filed under new patients: nothing to exclude, the copies set the threshold to 1.0
    naive, _ = memorisation(real_rows + [{**r, "patient_id": f"OTHER_{i}"} for i, r in enumerate(copies)], "other")
    assert naive["threshold"] == pytest.approx(1.0, abs=1e-6)


def test_generate_folder_is_read_with_its_words(trained_lora, held_out, tmp_path):
    from dermdiff_lora.generation.generate import GenerateSettings, generate

    generate(GenerateSettings(base="tiny-random", adapters=[(str(trained_lora), 1.0)], steps=2, height=32,
                              width=32), tmp_path / "gen", progress=False)
    opts = EvaluateOptions(real=str(held_out), generated=str(tmp_path / "gen"), out=str(tmp_path / "ev"),
                           extractor="tiny-dinov2", memorisation=False)
    result = evaluate(opts)
    assert result["inputs"]["adapter"] == str(trained_lora)  # found through generate.json
    assert sum(c["n_generated"] for c in result["cells"].values()) == 6


def test_compare_prints_two_runs_and_refuses_other_extractors(rendered, tmp_path, capsys):
    result, out = rendered
    other = json.loads((out / "eval.json").read_text())
    other["extractor"]["name"] = "dinov2"
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert app.main(["evaluate", "--compare", str(out), str(out / "eval.json")]) == 0
    assert "benign|darker" in capsys.readouterr().out
    assert app.main(["evaluate", "--compare", str(out), str(tmp_path / "b.json")]) == 1
    assert "error:" in capsys.readouterr().err


def test_bad_inputs_are_one_clear_error(trained_lora, held_out, tmp_path):
    with pytest.raises(DataError, match="neither a `generate` output"):
        evaluate(EvaluateOptions(real=str(held_out), generated=str(tmp_path), adapter=str(trained_lora),
                                 out=str(tmp_path / "o"), extractor="tiny-dinov2"))
    with pytest.raises(ConfigError, match="prompt template"):
        evaluate(EvaluateOptions(real=str(held_out), generated=str(tmp_path), out=str(tmp_path / "o"),
                                 overrides=["prompts.template="]))
    from dermdiff_lora.core.config import load_saved

    with pytest.raises(DataError, match="every real image .* was a training image"):
        evaluate(EvaluateOptions(real=load_saved(trained_lora).data.dir, adapter=str(trained_lora),
                                 out=str(tmp_path / "o2"), extractor="tiny-dinov2", per_cell=1, steps=1))
    assert Image  # PIL imported for fixtures' images


def test_card_shows_the_evaluation_table(rendered, trained_lora, tmp_path):
    from dermdiff_lora.hub.card import build_card

    result, out = rendered
    shutil.copytree(trained_lora, tmp_path / "run")
    shutil.copy(out / "eval.json", tmp_path / "run" / "eval.json")
    card = build_card(tmp_path / "run")
    assert "dermdiff-lora evaluate" in card and "random weights" in card and "malignant|darker" in card


def test_without_real_the_runs_split_gives_the_test_part(tiny_base, demo_data, tmp_path):
    """A run trained on data.split_file's train part is evaluated on that split's test part, and the
    memorisation set is its train part: no image in both."""
    from conftest import make_cfg

    from dermdiff_lora.data.splits import read_split_file
    from dermdiff_lora.downstream.samples import split_dataset
    from dermdiff_lora.training.train import train

    split_dataset(demo_data, tmp_path / "split.csv", fractions=(0.5, 0.25, 0.25))
    run = tmp_path / "run"
    train(make_cfg(demo_data, run, f"data.split_file={tmp_path / 'split.csv'}", "train.max_steps=1"))
    result = evaluate(EvaluateOptions(adapter=str(run), extractor="tiny-dinov2", per_cell=1, steps=1))
    assignment = read_split_file(tmp_path / "split.csv").assignment
    assert result["counts"]["real"] == sum(v == "test" for v in assignment.values())
    assert result["counts"]["train"] == sum(v == "train" for v in assignment.values())
    assert "test part" in result["inputs"]["real"]
    fake = tmp_path / "rebalanced"  # a rebalance folder is its own imagefolder: the run's split does not list it
    fake.mkdir()
    rows = list(csv.DictReader(open(demo_data / "metadata.csv")))[:2]
    for row in rows:
        shutil.copy(demo_data / f"{row['image_name']}.png", fake / f"syn_{row['image_name']}.png")
        row.update(image_name=f"syn_{row['image_name']}", synthetic="true")
    with open(fake / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    again = evaluate(EvaluateOptions(adapter=str(run), generated=str(fake), out=str(tmp_path / "ev2"),
                                     extractor="tiny-dinov2"))
    assert again["counts"]["generated"] == 2
