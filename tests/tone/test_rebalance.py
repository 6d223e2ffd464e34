"""Rebalancing with a stand-in generator of known tone: counts, rejection, resume, no duplicates."""

import csv
import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.core.lock import LOCK_NAME
from dermdiff_lora.tone.rebalance import (
    REPORT_FILE,
    TRIES_FILE,
    default_prompt,
    pipeline_generate_fn,
    plan_counts,
    rebalance,
)
from dermdiff_lora.tone.skintone import estimate_ita
from dermdiff_lora.tone.synthetic import TONE_GROUPS, TONE_ITA_RANGES, draw_skin, make_dataset

WRONG = {"lighter": "darker", "brown": "lighter", "darker": "brown"}
# benign/0: 7, malignant/0: 3, benign/1: 3, malignant/1: 1, benign/2: 1, malignant/2: 0 -> all up to 7
EXPECTED_PLAN = {
    "benign/0": 0,
    "malignant/0": 4,
    "benign/1": 4,
    "malignant/1": 6,
    "benign/2": 6,
    "malignant/2": 7,
}


class StandIn:
    """Draws the prompt's tone and diagnosis, except on a fixed schedule of bad images (by slot, try)."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, prompt, seed):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls += 1
        diagnosis, tone = prompt.split()[0], prompt.split(" on ")[1].split()[0]
        attempt, slot = seed % 1000, seed // 1000 % 1000
        if slot == 6 or (slot % 2 == 1 and attempt == 0):
            return Image.new("RGB", (64, 64), (0, 0, 0))  # blank
        if slot % 3 == 2 and attempt <= 1:
            tone = WRONG[tone]
        fraction = 0.0 if slot == 4 and attempt == 0 else 0.2  # no lesion
        ita = float(np.random.default_rng(seed).uniform(*TONE_ITA_RANGES[tone]))
        return draw_skin(64, ita, diagnosis, seed=seed, lesion_fraction=fraction)[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("rebalance")
    return make_dataset(root / "data", size=48, seed=5, tone_counts={"lighter": 10, "brown": 4, "darker": 1})


@pytest.fixture(scope="module")
def clean_run(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "out"
    return rebalance(source, out, StandIn(), target="equal", progress=False), out


def _rows(folder):
    with open(folder / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def _files(folder):
    """The output's files (the report, and the writer's lock with its pid and time, change per run)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in (REPORT_FILE, LOCK_NAME)}


def test_plan_counts():
    existing = {"a": 5, "b": 2, "c": 0}
    assert plan_counts(existing) == {"a": 0, "b": 3, "c": 5}
    assert plan_counts(existing, {"a": 4, "b": 4, "d": 1}) == {"a": 0, "b": 2, "c": 0, "d": 1}
    with pytest.raises(ConfigError, match="'equal'"):
        plan_counts(existing, "max")


def test_default_prompt():
    assert default_prompt({"benign_malignant": "malignant", "skin_tone": "2"}) == (
        "malignant skin disease on darker skin tone"
    )
    with pytest.raises(DataError, match="code 0/1/2"):
        default_prompt({"benign_malignant": "benign", "skin_tone": "7"})


def test_rebalance_fills_groups_with_checked_images(source, clean_run):
    report, out = clean_run
    rows = _rows(out)
    real = [r for r in rows if r["synthetic"] == "false"]
    synthetic = [r for r in rows if r["synthetic"] == "true"]
    assert real == [
        {**r, "tone_source": "given", "synthetic": "false", "seed": "", "prompt": "", "ita_estimated": ""}
        for r in _rows(source)
    ]
    for r in real:
        assert (out / f"{r['image_name']}.png").read_bytes() == (
            source / f"{r['image_name']}.png"
        ).read_bytes()
    counts = Counter(f"{r['benign_malignant']}/{r['skin_tone']}" for r in rows)
    assert counts == {g: 7 for g in EXPECTED_PLAN} | {"malignant/2": 6}  # its slot 6 is always blank
    for r in synthetic:
        with Image.open(out / f"{r['image_name']}.png") as img:
            assert img.text["prompt"] == r["prompt"] == default_prompt(r) and img.text["seed"] == r["seed"]
            assert estimate_ita(img).category == TONE_GROUPS[int(r["skin_tone"])]
        assert r["target"] == str(int(r["benign_malignant"] == "malignant"))
    assert len({r["image_name"] for r in rows}) == len(rows)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{r['image_name']}.png" for r in rows)
    groups = report.groups
    assert {g: v["requested"] for g, v in groups.items()} == EXPECTED_PLAN
    mal2 = groups["malignant/2"]
    assert (
        mal2["accepted"] == 6 and mal2["rejected"]["blank"] == 3 + 5
    )  # slots 1, 3, 5 once; slot 6 five times
    assert (
        mal2["rejected"]["wrong tone"] == 2 + 1 and mal2["rejected"]["no lesion"] == 1
    )  # slots 2, 5; slot 4
    assert mal2["generated"] == mal2["accepted"] + sum(mal2["rejected"].values())
    assert mal2["acceptance_rate"] == pytest.approx(6 / mal2["generated"], abs=1e-4)
    assert json.loads((out / REPORT_FILE).read_text())["groups"] == groups


def test_rerun_adds_nothing(source, clean_run):
    report, out = clean_run
    before = _files(out)
    again = StandIn()
    second = rebalance(source, out, again, target="equal", progress=False)
    assert again.calls == 0 and second.added == 0 and second.groups == report.groups
    assert _files(out) == before


def test_interrupted_run_resumes_to_the_same_result(source, clean_run, tmp_path):
    _, clean_out = clean_run
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="interrupted"):
        rebalance(source, out, StandIn(fail_after=13), target="equal", progress=False)
    partial = [r for r in _rows(out) if r["synthetic"] == "true"]
    assert 0 < len(partial) < 26
    # also a stop while appending the last accepted image's row: its image is on disk, its row half-written
    meta, journal = out / "metadata.csv", out / TRIES_FILE
    meta.write_text("".join(meta.read_text().splitlines(keepends=True)[:-1]) + "syn_half,")
    lines = journal.read_text().splitlines(keepends=True)
    last_accept = max(i for i, line in enumerate(lines) if '"reason": null' in line)
    journal.write_text("".join(lines[:last_accept]))
    resumed = rebalance(source, out, StandIn(), target="equal", progress=False)
    assert resumed.added == 26 - len(partial) + 1  # 27 requested, one slot always blank
    assert _files(out) == _files(clean_out)
    assert resumed.groups == json.loads((clean_out / REPORT_FILE).read_text())["groups"]


def test_hard_links_and_jsonl_input(source, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(source, data)
    rows = _rows(data)
    lines = [
        {
            "file_name": f"{r['image_name']}.png",
            "benign_malignant": r["benign_malignant"],
            "skin_tone": int(r["skin_tone"]),
        }
        for r in rows
    ]
    (data / "metadata.csv").unlink()
    (data / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    target = {("benign", "2"): 2, ("malignant", "2"): 1}
    report = rebalance(data, tmp_path / "out", StandIn(), target=target, link=True, progress=False)
    assert report.added == 2
    out_rows = _rows(tmp_path / "out")
    assert [r["file_name"] for r in out_rows[-2:]] == [
        "syn0_benign-2_00000.png",
        "syn0_malignant-2_00000.png",
    ]
    first = lines[0]["file_name"]
    assert (tmp_path / "out" / first).stat().st_ino == (data / first).stat().st_ino


def test_refusals(source, clean_run, tmp_path):
    _, out = clean_run
    with pytest.raises(DataError, match="inside it"):
        rebalance(source, source / "more", StandIn(), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="pick a new or empty folder"):
        rebalance(source, other, StandIn(), progress=False)
    with pytest.raises(DataError, match="other seed"):
        rebalance(source, out, StandIn(), target="equal", seed=1, progress=False)
    with pytest.raises(ConfigError, match="need a prompt_fn"):
        rebalance(source, tmp_path / "x", StandIn(), groups=("diagnosis", "skin_tone"), progress=False)
    with pytest.raises(DataError, match="available columns"):
        rebalance(
            source, tmp_path / "x", StandIn(), groups=("dx", "skin_tone"), prompt_fn=str, progress=False
        )


def test_pipeline_generate_fn_passes_settings_and_one_seeded_generator_per_image():
    seen = {}

    class FakePipe:
        def __call__(self, prompt, **kwargs):
            seen.update(kwargs, prompt=prompt)
            return type("Out", (), {"images": [Image.new("RGB", (8, 8)) for _ in prompt]})()

    generate = pipeline_generate_fn(FakePipe(), steps=3, guidance_scale=2.0, height=64, width=96)
    assert generate("benign skin disease on brown skin tone", 1234).size == (8, 8)
    assert seen["prompt"] == ["benign skin disease on brown skin tone"]
    assert (seen["num_inference_steps"], seen["guidance_scale"], seen["height"], seen["width"]) == (3, 2.0, 64, 96)
    assert [g.initial_seed() for g in seen["generator"]] == [1234]
    assert len(generate.render_batch(["a", "b"], [7, 9])) == 2
    assert seen["prompt"] == ["a", "b"] and [g.initial_seed() for g in seen["generator"]] == [7, 9]


class BatchedStandIn(StandIn):
    """The stand-in with a ``render_batch``: records the batch sizes it was given."""

    def __init__(self, fail_after=None):
        super().__init__(fail_after)
        self.batches = []

    def render_batch(self, prompts, seeds):
        self.batches.append(len(prompts))
        return [self(p, s) for p, s in zip(prompts, seeds)]


@pytest.mark.parametrize("batch_size, workers", [(4, 0), (3, 1)])
def test_batched_and_worker_checked_runs_accept_the_same_slots_and_seeds(source, clean_run, tmp_path,
                                                                         batch_size, workers):
    """Batches of different slots, checked in a worker process while the next batch renders: the same
    accepted (slot, seed) set, the same files, byte for byte, as the one-by-one run."""
    report, clean_out = clean_run
    gen = BatchedStandIn()
    batched = rebalance(source, tmp_path / "out", gen, batch_size=batch_size, workers=workers, target="equal",
                        progress=False)
    assert max(gen.batches) == batch_size and sum(gen.batches) == gen.calls
    assert _files(tmp_path / "out") == _files(clean_out)
    assert batched.groups == report.groups and batched.added == 26
    speed = json.loads((tmp_path / "out" / REPORT_FILE).read_text())["speed"]
    assert speed["renders"] == gen.calls == sum(g["generated"] for g in report.groups.values())
    assert speed["accepted"] == 26 and speed["acceptance"]["malignant/2"] == pytest.approx(6 / 18, abs=1e-4)


def test_batched_run_stopped_mid_batch_resumes_to_the_same_files(source, clean_run, tmp_path):
    _, clean_out = clean_run
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="interrupted"):
        rebalance(source, out, BatchedStandIn(fail_after=22), batch_size=5, target="equal", progress=False)
    assert 0 < sum(r["synthetic"] == "true" for r in _rows(out)) < 26
    rebalance(source, out, BatchedStandIn(), batch_size=2, target="equal", progress=False)
    assert _files(out) == _files(clean_out)


def test_progress_shows_acceptance_and_eta_per_group(source, tmp_path, capsys):
    rebalance(source, tmp_path / "out", StandIn(), batch_size=4, target="equal", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rebalance:")]
    assert lines and lines[-1].startswith("rebalance: 100% 27/27")
    assert re.search(r"malignant/2 \d+/7 acc \d+% eta \d+s", "\n".join(lines))
