"""``data.dataset``: datasets laid out as on the Hub (parquet shards + README front matter), loaded with
``datasets.load_dataset`` from a local folder and by Hub id from the fake Hub (revision, offline cache,
errors). huggingface_hub and datasets read their environment at import, so Hub-id loads run in
subprocesses (as in tests/hub/test_hub.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import FakeHub
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TONES = ["lighter", "brown", "darker"]
README = """---
license: cc-by-4.0
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# derm-mini: a made-up dermatology dataset for tests
"""


def colour(i: int, shift: int = 0) -> tuple[int, int, int]:
    return (200 - 20 * i, 150 - shift, 120)


def hub_layout(folder: Path, n: int = 6, shift: int = 0) -> dict[str, bytes]:
    """Write a dataset as it sits on the Hub (two parquet shards + README) and return its files."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["benign", "malignant"]),
                                  "skin_tone": datasets.Value("string")})
    rows: dict[str, list] = {"image": [], "label": [], "skin_tone": []}
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), colour(i, shift)).save(buf, "PNG")
        rows["image"].append({"bytes": buf.getvalue(), "path": f"img_{i}.png"})
        rows["label"].append(i % 2)
        rows["skin_tone"].append(TONES[i % 3])
    ds = datasets.Dataset.from_dict(rows, features=features)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ds.select(range(n // 2)).to_parquet(str(folder / "data" / "train-00000-of-00002.parquet"))
    ds.select(range(n // 2, n)).to_parquet(str(folder / "data" / "train-00001-of-00002.parquet"))
    (folder / "README.md").write_text(README)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_local_hub_layout_trains_with_in_table_images(tmp_path, tiny_base, monkeypatch):
    import datasets

    from dermdiff_lora.core import config
    from dermdiff_lora.data import cache
    from dermdiff_lora.data.dataset import prepare
    from dermdiff_lora.training.train import train

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "ds-cache"))
    hub_layout(tmp_path / "derm-mini")
    overrides = [f"data.dataset={tmp_path / 'derm-mini'}", "prompts.template={label} skin disease on {skin_tone} skin tone",
                 f"output.dir={tmp_path / 'run'}", "data.resolution=16", "train.max_steps=2", "logging.tensorboard=false",
                 "logging.progress=false", "validation.at_end=false", "data.balance=tone", "data.diagnosis_column=label"]
    cfg, builder, index = prepare(config.load(None, overrides))
    assert [r.key for r in index.records] == [f"img_{i}.png" for i in range(6)]
    assert [r.caption for r in index.records][:2] == ["benign skin disease on lighter skin tone",
                                                      "malignant skin disease on brown skin tone"]
    assert all(r.path is None for r in index.records) and index.records[3].open().getpixel((0, 0)) == colour(3)
    assert cfg.prompts.value_maps["label"] == {"benign": "benign", "malignant": "malignant"}
    key = index.origin["cache_key"]
    assert cache.latents_description(tmp_path, index, cfg.data, "fp32")["images"][0] == [key, "img_0.png"]
    summary = train(config.load(None, overrides))
    assert summary["data"]["source"]["kind"] == "datasets" and summary["data"]["tone"]["given"] == 6
    assert summary["data"]["tone_x_diagnosis"] == {"lighter": {"benign": 1, "malignant": 1},
                                                   "brown": {"malignant": 1, "benign": 1},
                                                   "darker": {"benign": 1, "malignant": 1}}


CLIENT = """
import json, sys
from pathlib import Path
from dermdiff_lora.core import config
from dermdiff_lora.core.errors import DermDiffError
from dermdiff_lora.data import cache
from dermdiff_lora.data.dataset import prepare
out = []
for ref in sys.argv[1:]:
    try:
        cfg, builder, index = prepare(config.load(None, [f"data.dataset={ref}",
                                      "prompts.template={label} skin disease on {skin_tone} skin tone"]))
    except DermDiffError as exc:
        out.append({"error": f"{type(exc).__name__}: {exc}"})
        continue
    out.append({"sha": index.origin.get("sha"), "keys": [r.key for r in index.records],
                "pixel": list(index.records[0].open().getpixel((0, 0))),
                "latent_key": cache.latents_description(Path("."), index, cfg.data, "fp32")["images"][0]})
print(json.dumps(out))
"""


def client(refs: list[str], home: Path, endpoint: str, offline: bool = False) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="3", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", CLIENT, *refs], env=env, capture_output=True, text=True,
                          timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hubdata")
    fake = FakeHub(tokens={}).start()
    repo = fake.add_repo("alice/derm-mini", hub_layout(tmp / "v1"), repo_type="dataset")
    first = repo.commits[-1][0]
    second = fake.add_commit("alice/derm-mini", hub_layout(tmp / "v2", shift=30), repo_type="dataset")
    yield fake, first, second, tmp
    fake.stop()


def test_hub_id_revision_cache_and_offline(hub):
    fake, first, second, tmp = hub
    home = tmp / "hf-home"
    online = client(["alice/derm-mini", f"alice/derm-mini@{first}", "alice/missing"], home, fake.url)
    latest, pinned, missing = online
    assert latest["sha"] == second and pinned["sha"] == first  # the commit each revision resolved to
    assert latest["pixel"] == list(colour(0, 30)) and pinned["pixel"] == list(colour(0))
    assert latest["keys"] == [f"img_{i}.png" for i in range(6)]
    assert latest["latent_key"] == [second, "img_0.png"] and pinned["latent_key"] == [first, "img_0.png"]
    assert missing["error"].startswith("DataError: data.dataset alice/missing not found on http://127.0.0.1")
    heads = [e for e in fake.log if e["method"] == "HEAD" and e["status"] == 404]
    assert heads, "datasets probes optional files with HEAD; the fake Hub answers 404 without a body"
    served = len(fake.log)
    offline, pinned_offline, gone = client(["alice/derm-mini", f"alice/derm-mini@{second}", "alice/never-loaded"],
                                           home, fake.url, offline=True)
    assert len(fake.log) == served  # offline: nothing asked of the Hub
    # datasets reads the newest cached version (here the pinned first commit, loaded last) whatever the
    # revision; the key is still the commit read, and another pinned commit is refused, not silently swapped
    assert offline["keys"] == latest["keys"] and offline["sha"] == first and offline["latent_key"][0] == first
    assert f"the datasets cache holds commit {first}, not {second}" in pinned_offline["error"]
    assert "not in the datasets cache and HF_HUB_OFFLINE=1 is set" in gone["error"]
