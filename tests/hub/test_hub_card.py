"""Model cards: Hub front matter, a loading snippet that runs, tone × diagnosis counts, audit/eval JSON."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

REQUIRED = {"library_name": "diffusers", "pipeline_tag": "text-to-image"}


def split_card(text: str) -> tuple[dict, str]:
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "card must start with YAML front matter"
    return yaml.safe_load(match.group(1)), match.group(2)


@pytest.fixture()
def run(trained_lora, tmp_path) -> Path:
    """A copy of the trained LoRA run with a validation grid."""
    from dermdiff_lora.generation.grid import save_png

    folder = tmp_path / "run"
    shutil.copytree(trained_lora, folder)
    save_png(Image.new("RGB", (96, 64), "tan"), folder / "validation" / "step-000004.png", {"step": "4"})
    return folder


def rebase(folder: Path, base: str) -> None:
    """Pretend the run was trained on ``base`` (metadata header and saved config)."""
    from dermdiff_lora.adapters import lora
    from dermdiff_lora.core import config

    weights = folder / lora.WEIGHT_NAME
    meta = {**lora.read_metadata(weights), "base_model": base}
    lora.add_header_metadata(weights, {lora.META_KEY: json.dumps(meta)})
    cfg = config.load_saved(folder)
    cfg.model.base = base
    config.save(cfg, folder)


def test_front_matter_has_what_the_hub_needs(run):
    from dermdiff_lora.hub.card import build_card

    rebase(run, "CompVis/stable-diffusion-v1-4")
    meta, body = split_card(build_card(run, repo_id="alice/skin-demo"))
    assert REQUIRED.items() <= meta.items()
    assert meta["base_model"] == "CompVis/stable-diffusion-v1-4" and meta["license"] == "creativeml-openrail-m"
    assert {"lora", "stable-diffusion", "dermatology", "skin-tone"} <= set(meta["tags"])
    texts = [w["text"] for w in meta["widget"]]
    assert len(texts) == 6 and meta["instance_prompt"] in texts
    assert "malignant skin disease on darker skin tone" in texts
    assert (run / meta["widget"][0]["output"]["url"]).is_file()
    assert "Not a diagnostic device" in body and "## Limitations and bias" in body
    assert "## Intended use" in body and "## Training data" in body


def test_license_and_base_for_tiny_and_local_bases(run, tmp_path, demo_data):
    from dermdiff_lora.hub.card import build_card

    meta, body = split_card(build_card(run))
    assert "base_model" not in meta and meta["license"] == "apache-2.0" and "Demo adapter" in body
    rebase(run, str(tmp_path / "my-local-sd"))
    text = build_card(run, repo_id="alice/x")
    meta, body = split_card(text)
    assert "base_model" not in meta and meta["license"] == "other" and meta["license_name"] == "unknown"
    for private in (str(tmp_path), str(demo_data), str(run)):  # no local paths leak into a card
        assert private not in text
    assert "`my-local-sd`" in body


def test_loading_snippet_runs_against_the_tiny_model(run, tiny_base, tmp_path, monkeypatch):
    from dermdiff_lora.hub.card import build_card

    _, body = split_card(build_card(run, repo_id="alice/skin-demo"))
    code = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    assert 'adapter = "alice/skin-demo"' in code and "load_lora_weights(adapter)" in code
    code = re.sub(r'^base = .*$', f"base = {str(tiny_base)!r}", code, flags=re.M)
    code = code.replace('adapter = "alice/skin-demo"', f"adapter = {str(run)!r}")
    code = code.replace("num_inference_steps=30", "num_inference_steps=2")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "card-snippet", "exec"), namespace)
    with Image.open(tmp_path / "sample.png") as image:
        assert image.size == (32, 32)
    assert namespace["pipe"].get_list_adapters()["unet"]


def table_rows(body: str, heading: str) -> dict[str, list[str]]:
    section = body.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    return {r[0]: r[1:] for r in rows[1:]}


def test_tone_by_diagnosis_counts_match_the_metadata(run, demo_data):
    from dermdiff_lora.hub.card import build_card

    with open(demo_data / "metadata.csv", newline="") as fh:
        counted = Counter((r["skin_tone"], r["benign_malignant"]) for r in csv.DictReader(fh))
    rows = table_rows(split_card(build_card(run))[1], "## Training data")
    for code, tone in {"0": "lighter", "1": "brown", "2": "darker"}.items():
        assert rows[tone][:2] == [str(counted[code, "benign"]), str(counted[code, "malignant"])]
    assert rows["**all**"][2] == str(sum(counted.values()))


def test_audit_and_eval_json_are_rendered(run):
    from dermdiff_lora.hub.card import build_card

    (run / "audit.json").write_text(json.dumps({"tone_x_diagnosis": {
        "0": {"benign": 50, "malignant": 9}, "1": {"benign": 20, "malignant": 4}, "2": {"benign": 3, "malignant": 1}}}))
    (run / "eval.json").write_text(json.dumps({"fid": {"lighter": 41.234567, "darker": 55.0}, "n": 30}))
    body = split_card(build_card(run, eval_results=run / "eval.json"))[1]
    rows = table_rows(body, "## Training data")
    assert rows["lighter"] == ["50", "9", "59", "68%"] and rows["darker"][:3] == ["3", "1", "4"]
    assert "from the skin-tone audit (audit.json)" in body and "darker × malignant with 1 image" in body
    assert table_rows(body, "## Evaluation")["`fid.lighter`"] == ["41.23"]


def test_audit_summary_beside_the_data_is_found(run, tmp_path):
    """The skin-tone audit's summary (default ``<data>_audit/tones_summary.json``) is used automatically when
    the run's summary does not record what training read (a run from before summary.json had ``data``)."""
    from dermdiff_lora.core import config
    from dermdiff_lora.hub.card import build_card

    cfg = config.load_saved(run)
    cfg.data.dir = str(tmp_path / "isic")
    config.save(cfg, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "data"}))
    rows = [{"diagnosis": d, "tone": t, "count": n, "percent": 0.0} for d, t, n in (
        ("benign", "lighter", 70), ("benign", "brown", 12), ("benign", "darker", 5), ("benign", "undetermined", 2),
        ("malignant", "lighter", 9), ("malignant", "brown", 1), ("malignant", "darker", 0),
        ("malignant", "undetermined", 1))]
    (tmp_path / "isic_audit").mkdir()
    (tmp_path / "isic_audit" / "tones_summary.json").write_text(json.dumps({
        "scheme": "paper", "scheme_boundaries": [-30.0, 28.0], "undetermined": 3, "table": rows,
        "tones": ["lighter", "brown", "darker", "undetermined"], "dataset_dir": str(tmp_path / "isic")}))
    body = split_card(build_card(run))[1]
    table = table_rows(body, "## Training data")
    assert list(table) == ["lighter", "brown", "darker", "undetermined", "**all**"]
    assert table["darker"][:3] == ["5", "0", "5"] and table["**all**"][2] == "100"
    assert "ITA scheme 'paper' with boundaries -30°, 28°; 3 image(s) of undetermined tone" in body
    assert "darker × malignant with 0 image" in body and str(tmp_path) not in body


def test_bad_audit_is_named(run):
    from dermdiff_lora.core.errors import DataError
    from dermdiff_lora.hub.card import build_card

    (run / "bad.json").write_text(json.dumps({"counts": [1, 2, 3]}))
    with pytest.raises(DataError, match="bad.json: expected tone × diagnosis counts"):
        build_card(run, audit=run / "bad.json")


def test_card_command_writes_and_refuses_to_overwrite(run, capsys):
    from dermdiff_lora.cli.app import main

    assert main(["card", str(run), "--repo-id", "alice/skin-demo"]) == 0
    first = (run / "README.md").read_text()
    assert split_card(first)[0]["library_name"] == "diffusers" and "alice/skin-demo" in first
    assert main(["card", str(run)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["card", str(run), "--overwrite"]) == 0 and "your-name/run" in (run / "README.md").read_text()


def test_full_model_card_and_upload_plan(trained_full, tmp_path):
    from dermdiff_lora.hub.card import build_card
    from dermdiff_lora.hub.publish import upload_plan

    meta, body = split_card(build_card(trained_full, repo_id="alice/full"))
    assert "lora" not in meta["tags"] and 'model = "alice/full"' in body and "EMA" in body
    plan = upload_plan(trained_full)
    assert "model_index.json" in plan and "unet/diffusion_pytorch_model.safetensors" in plan
    assert not any(p.startswith(("checkpoints/", "logs/")) or p.endswith(".bin") for p in plan)


def test_example_card_in_docs_is_current_and_parses():
    text = (Path(__file__).resolve().parents[2] / "docs" / "example_model_card.md").read_text()
    meta, body = split_card(text)
    assert REQUIRED.items() <= meta.items() and meta["widget"][0]["output"]["url"] == "example_model_card_grid.png"
    assert (Path(__file__).resolve().parents[2] / "docs" / "example_model_card_grid.png").is_file()
    assert "Not a diagnostic device" in body and "/tmp" not in text
