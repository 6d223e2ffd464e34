"""Real dataset layouts end to end through the CLI, with images of known tone (tone/synthetic.py):

- ISIC 2020 as downloaded (no skin-tone column): ``audit`` then ``train`` on the audit's output, two
  commands, no join by hand; the undetermined image is left out and counted everywhere.
- HAM10000's seven classes: audit counts → train → generate grid → rebalance --groups → card.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import yaml

from dermdiff_lora.cli.app import main
from dermdiff_lora.tone.synthetic import TONE_GROUPS, draw_skin

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"
ITA = {"lighter": 50.0, "brown": 0.0, "darker": -50.0}
TRAIN = ["model.base=tiny-random", "train.max_steps=2", "train.batch_size=2", "data.resolution=16",
         "train.checkpoint_every=0", "logging.tensorboard=false", "logging.progress=false",
         "validation.at_end=false"]


def download(name: str, tmp: Path, column: str, place, gray: str | None = None) -> tuple[Path, dict]:
    """The fixture's metadata with a lesion image of known tone per row; returns (root, key -> tone)."""
    root = tmp / name
    shutil.copytree(FIXTURES / name, root)
    metadata = next(root.glob("*.csv"))
    with metadata.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    truth = {}
    for i, row in enumerate(rows):
        key, tone = row[column], TONE_GROUPS[i % 3]
        path = root / place(key, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        diagnosis = "malignant" if row.get("benign_malignant") == "malignant" else "benign"
        image = draw_skin(32, ITA[tone], diagnosis, seed=i, lesion_fraction=0.1)[0]
        (image.convert("L").convert("RGB") if key == gray else image).save(path, quality=95)
        truth[key] = tone if key != gray else None
    return root, truth


def test_isic2020_download_to_tone_balanced_training_in_two_commands(tiny_base, tmp_path, capsys):
    root, truth = download("isic2020_challenge", tmp_path, "image_name", lambda k, i: f"jpeg/train/{k}.jpg",
                           gray="ISIC_0074311")
    assert main(["audit", str(root), "--preset", "isic2020", "--workers", "1"]) == 0
    tones = Path(f"{root}_audit") / "tones.csv"
    assert f"data.tones={tones}" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["train", "demo", "data.preset=isic2020", f"data.dir={root}", f"data.tones={tones}",
                 "data.balance=tone_x_diagnosis", f"output.dir={out}", *TRAIN]) == 0
    capsys.readouterr()
    data = json.loads((out / "summary.json").read_text())["data"]
    known = {k: t for k, t in truth.items() if t}
    assert data["images"] == 8 and data["left_out"] == {"tone undetermined by the ITA audit": 1}
    assert (data["tone"]["given"], data["tone"]["estimated"]) == (0, 8)
    with open(root / "train.csv", newline="") as fh:
        diag = {r["image_name"]: r["benign_malignant"] for r in csv.DictReader(fh)}
    expected: dict = {}
    for key, tone in known.items():
        expected.setdefault(tone, {}).setdefault(diag[key], 0)
        expected[tone][diag[key]] += 1
    assert data["tone_x_diagnosis"] == expected  # the audit's ITA groups are the drawn ones
    saved = yaml.safe_load((out / "dermdiff_config.yaml").read_text())["data"]
    assert (saved["preset"], saved["tones"], saved["unknown_tone"]) == ("isic2020", str(tones), "estimate")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["group_mix"]) == 6  # tone x diagnosis groups of balanced sampling
    balanced = tmp_path / "balanced"  # DATASET omitted: the run's data (preset, audit tones) read as training did
    assert main(["rebalance", str(balanced), "--adapter", str(out), "--target", '{"malignant,0": 2}',
                 "--max-tries", "1", "--steps", "1", "--size", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"]["left_out"] == {"tone undetermined by the ITA audit": 1}
    assert report["groups"]["malignant/0"]["requested"] == 2 - expected.get("lighter", {}).get("malignant", 0)
    with open(balanced / "metadata.csv", newline="") as fh:
        real = [r for r in csv.DictReader(fh) if r["synthetic"] == "false"]
    assert {r["image_name"]: TONE_GROUPS[int(r["skin_tone"])] for r in real} == known
    assert {r["tone_source"] for r in real} == {"estimated"}
    from dermdiff_lora.hub.card import build_card

    card = build_card(out, repo_id="alice/isic")
    assert "8 estimated by the ITA of the skin around the lesion" in card
    assert "1 left out (tone undetermined by the ITA audit)" in card
    assert "CC BY-NC 4.0" in card and "**Non-commercial.**" in card and str(tmp_path) not in card


def test_ham10000_seven_classes_train_grid_rebalance_card(tiny_base, tmp_path, capsys):
    root, truth = download("ham10000", tmp_path, "image_id",
                           lambda k, i: f"HAM10000_images_part_{1 + (i >= 8)}/{k}.jpg")
    audit_out = tmp_path / "audit" / "tones.csv"
    assert main(["audit", str(root), "--preset", "ham10000", "--diagnosis-column", "dx", "--workers", "1",
                 "--out", str(audit_out), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["diagnoses"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert audit["undetermined"] == 0 and sum(r["count"] for r in audit["table"]) == 15
    run = tmp_path / "run"
    assert main(["train", "demo", "data.preset=ham10000", f"data.dir={root}", f"data.tones={audit_out}",
                 "data.diagnosis_column=dx", "prompts.template={dx} on {skin_tone} skin tone",
                 f"output.dir={run}", *TRAIN]) == 0
    capsys.readouterr()
    renders = tmp_path / "renders"
    assert main(["generate", "--adapter", str(run), "--grid", "dx,skin_tone", "--steps", "1", "--height", "16",
                 "--width", "16", "--out", str(renders), "--no-progress"]) in (0, 3)
    record = json.loads((renders / "generate.json").read_text())
    prompts = sorted({p["prompt"] for p in record["images"]} | {b["prompt"] for b in record["blank"]})
    assert len(prompts) == 21 and "actinic keratosis on darker skin tone" in prompts
    capsys.readouterr()
    balanced = tmp_path / "balanced"
    assert main(["rebalance", str(balanced), "--adapter", str(run), "--groups", "skin_tone,dx", "--target",
                 '{"1,mel": 1}', "--max-tries", "1", "--steps", "1", "--size", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["groups"]) == 21 and report["groups"]["1/mel"]["requested"] == 1
    assert report["totals"]["generated"] == 1 and report["input"]["tone"]["estimated"] == 15
    with open(balanced / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["dx"] for r in rows} == set(audit["diagnoses"]) and rows[0]["file_name"].endswith(".jpg")
    assert {r["skin_tone"] for r in rows[:15]} == {"0", "1", "2"}
    from dermdiff_lora.hub.card import build_card

    card = build_card(run, repo_id="alice/ham")
    header = next(line for line in card.splitlines() if line.startswith("| skin tone |"))
    assert header.count("|") == 7 + 4 and "melanocytic nevus" in header  # 7 classes + tone, total, share
    assert "CC BY-NC 4.0" in card and "**Non-commercial.**" in card
    assert "akiec -> malignant (a choice: actinic keratoses and intraepithelial carcinoma" in card
