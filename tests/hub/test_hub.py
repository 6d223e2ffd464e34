"""push / pull / load-by-id against a local fake Hub (tests/fake_hub.py) with the real huggingface_hub client.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import time, so the client side runs in
subprocesses (Xet off: the fake Hub speaks Git LFS). Faults are covered too: unreachable endpoint, no
token, 401, 403, 404, a namespace of someone else, a failed commit, --private on a public repo, no weights.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import FakeHub
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_TESTalice0a1b2c3d4e5f6a7b8c9d0SECRET"
REPO = "alice/skin-demo"
PUSHED = {"README.md", "dermdiff_config.yaml", "pytorch_lora_weights.safetensors", "validation/step-000004.png"}
CLIENTS: list[subprocess.CompletedProcess] = []  # every client run, scanned for the token


def client_env(home: Path, endpoint: str, *, token: str | None = TOKEN, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="3", TOKENIZERS_PARALLELISM="false")
    if token:
        env["HF_TOKEN"] = token
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_client(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    CLIENTS.append(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def all_files(*roots: Path):
    for root in roots:
        yield from (p for p in Path(root).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def hub():
    fake = FakeHub(tokens={TOKEN: "alice"}, fail_commit={"alice/flaky"},
                   orgs={"alice": {"derm-lab": "write", "viewers": "read"}}).start()
    fake.add_repo("bob/skin-lora", {"README.md": b"bob's adapter"})
    fake.add_repo("viewers/shared", {"README.md": b"read-only for alice"})
    fake.add_repo("alice/public-one")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def run_dir(trained_lora, tmp_path_factory) -> Path:
    """A copy of the trained LoRA run with a validation grid, a checkpoint and logs."""
    from dermdiff_lora.generation.grid import save_png

    run = tmp_path_factory.mktemp("hubrun") / "lora"
    shutil.copytree(trained_lora, run)
    save_png(Image.new("RGB", (96, 64), (200, 150, 120)), run / "validation" / "step-000004.png", {"step": "4"})
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "checkpoints" / "step-000002" / "trainer_state.json").write_text('{"step": 2}')
    (run / "logs").mkdir()
    (run / "logs" / "events.out.tfevents.1").write_bytes(b"tensorboard")
    return run


@pytest.fixture(scope="module")
def pushed(hub, run_dir, trained_full, tmp_path_factory) -> dict:
    """Dry-run, push and pull the LoRA run, push and pull the full-model run as a base model, through the
    real client (HF_DEBUG=1: every request is logged)."""
    tmp = tmp_path_factory.mktemp("hubclient")
    code = f"""
import json
from dermdiff_lora.core import hubio
from dermdiff_lora.hub import publish
from dermdiff_lora.core import models
dry = publish.push({str(run_dir)!r}, {REPO!r}, dry_run_dir={str(tmp / 'dry')!r})
done = publish.push({str(run_dir)!r}, {REPO!r}, message="first adapter")
path = hubio.pull({REPO!r})
publish.push({str(trained_full)!r}, "alice/full-demo")
base = models.resolve_base("alice/full-demo")
print(json.dumps({{"dry": dry, "push": done, "pull": str(path), "base": str(base)}}))
"""
    out = run_client(code, {**client_env(tmp / "hf-home", hub.url), "HF_DEBUG": "1"})
    return {**out, "tmp": tmp}


def test_push_then_pull_gives_identical_files(hub, run_dir, pushed):
    pulled = Path(pushed["pull"])
    dry = pushed["tmp"] / "dry"
    names = {p.relative_to(pulled).as_posix() for p in all_files(pulled)}
    assert names == PUSHED  # no checkpoints, logs, summary
    for name in names:
        assert (pulled / name).read_bytes() == (dry / name).read_bytes(), name
    assert (pulled / "pytorch_lora_weights.safetensors").read_bytes() == \
        (run_dir / "pytorch_lora_weights.safetensors").read_bytes()
    assert [tuple(f) for f in pushed["push"]["files"]] == [tuple(f) for f in pushed["dry"]["files"]]
    assert "alice/skin-demo" in (pulled / "README.md").read_text()


def test_full_model_round_trip_is_a_base_model_by_id(trained_full, pushed):
    from dermdiff_lora.hub.publish import upload_plan

    base = Path(pushed["base"])
    plan = upload_plan(trained_full)
    names = {p.relative_to(base).as_posix() for p in all_files(base)}
    assert names == (set(plan) - {"dermdiff_config.yaml"}) | {"README.md"}
    assert "unet/diffusion_pytorch_model.safetensors" in names
    for name in names - {"README.md"}:
        assert (base / name).read_bytes() == plan[name].read_bytes(), name


def test_push_is_one_commit_through_regular_and_lfs_paths(hub, pushed):
    repo = hub.repos[REPO]
    assert len(repo.commits) == 2  # the repo's initial commit + ours
    assert pushed["push"]["commit"] == repo.commits[-1][0]
    (lines,) = [p for p in hub.commit_payloads if p[0]["value"]["summary"] == "first adapter"]
    kinds = {item["value"]["path"]: item["key"] for item in lines[1:]}
    assert kinds == {"README.md": "file", "dermdiff_config.yaml": "file",
                     "pytorch_lora_weights.safetensors": "lfsFile", "validation/step-000004.png": "lfsFile"}
    assert any(e["method"] == "PUT" and e["path"].startswith("/lfs-storage/") for e in hub.log)


def test_token_never_written_or_logged(hub, run_dir, pushed, faults):
    outputs = "".join(p.stdout + p.stderr for p in CLIENTS)
    assert "authenticated: True" in outputs and "<TOKEN>" in outputs  # HF_DEBUG logging did run
    assert TOKEN not in outputs and TOKEN[-12:] not in outputs
    for path in all_files(run_dir, pushed["tmp"]):
        assert TOKEN.encode() not in path.read_bytes(), path
    stored = [content for repo in hub.repos.values() for _, files in repo.commits for content in files.values()]
    assert stored and not any(TOKEN.encode() in content for content in stored)


def test_offline_pull_uses_the_cache_and_names_what_is_missing(hub, pushed):
    code = f"""
import json
from dermdiff_lora.core import hubio
from dermdiff_lora.hub import publish
from dermdiff_lora.adapters import lora
from dermdiff_lora.core.errors import HubError
path = hubio.pull({REPO!r})
meta = lora.read_metadata({REPO!r})
try:
    hubio.pull("alice/never-pulled")
    missing = "no error"
except HubError as exc:
    missing = str(exc)
print(json.dumps({{"path": str(path), "rank": meta["rank"], "missing": missing}}))
"""
    out = run_client(code, client_env(pushed["tmp"] / "hf-home", hub.url, offline=True))
    assert out["path"] == pushed["pull"] and out["rank"] == 4
    assert "alice/never-pulled" in out["missing"] and "not (fully) in the local Hugging Face cache" in out["missing"]
    assert "HF_HUB_OFFLINE" in out["missing"]


def test_init_adapter_accepts_a_hub_id(pushed, demo_data, tmp_path, monkeypatch):
    """Training with model.init_adapter=user/repo (from the cache, offline) starts from the pulled weights."""
    from conftest import make_cfg
    from huggingface_hub import constants
    from safetensors.torch import load_file

    from dermdiff_lora.training.train import train

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(pushed["tmp"] / "hf-home" / "hub"))
    out = tmp_path / "from-hub"
    train(make_cfg(demo_data, out, f"model.init_adapter={REPO}", "train.max_steps=1", "optim.lr=0",
                   "optim.weight_decay=0"))
    start = load_file(str(Path(pushed["pull"]) / "pytorch_lora_weights.safetensors"))
    after = load_file(str(out / "pytorch_lora_weights.safetensors"))
    assert start.keys() == after.keys() and all((start[k] == after[k]).all() for k in start)


FAULT_CASES = {
    "no_token": ("push", "alice/new-lora", None),
    "bad_token": ("push", "alice/new-lora", "hf_not_a_valid_token"),
    "someone_else": ("push", "bob/skin-lora", TOKEN),
    "forbidden_create": ("push", "viewers/new-lora", TOKEN),
    "forbidden_existing": ("push", "viewers/shared", TOKEN),
    "commit_fails": ("push", "alice/flaky", TOKEN),
    "private_on_public": ("push_private", "alice/public-one", TOKEN),
    "not_found": ("pull", "alice/missing", TOKEN),
    "bad_revision": ("pull", "bob/skin-lora@v9", TOKEN),
}


@pytest.fixture(scope="module")
def faults(hub, run_dir, tmp_path_factory) -> dict:
    """Every fault case in one client process: {case: error message}."""
    tmp = tmp_path_factory.mktemp("faults")
    code = f"""
import json, os
from dermdiff_lora.core import hubio
from dermdiff_lora.hub import publish
from dermdiff_lora.core.errors import DermDiffError
out = {{}}
for case, (what, repo, token) in {FAULT_CASES!r}.items():
    os.environ.pop("HF_TOKEN", None)
    if token:
        os.environ["HF_TOKEN"] = token
    try:
        if what == "pull":
            hubio.pull(repo)
        else:
            publish.push({str(run_dir)!r}, repo, private=what == "push_private")
        out[case] = "no error"
    except DermDiffError as exc:
        out[case] = str(exc)
print(json.dumps(out))
"""
    return run_client(code, client_env(tmp / "hf-home", hub.url, token=None))


@pytest.mark.parametrize("case, expected", [
    ("no_token", ["no Hugging Face token", "hf auth login", "HF_TOKEN"]),
    ("bad_token", ["rejected", "401", "alice/new-lora", "hf auth login"]),
    ("someone_else", ["bob/skin-lora", "'bob'", "'alice'", "alice/skin-lora"]),
    ("forbidden_create", ["viewers/new-lora", "403", "nothing was uploaded"]),
    ("forbidden_existing", ["viewers/shared", "403", "no commit was made"]),
    ("commit_fails", ["alice/flaky", "500", "no commit was made"]),
    ("private_on_public", ["alice/public-one", "public", "--private"]),
    ("not_found", ["alice/missing", "not found", "hf auth login"]),
    ("bad_revision", ["bob/skin-lora@v9", "revision not found"]),
])
def test_fault_messages_name_the_repo_and_the_fix(faults, case, expected):
    message = faults[case]
    assert "\n" not in message
    for part in expected:
        assert part in message, (case, message)


def test_faults_leave_other_repos_untouched(hub, faults):
    assert len(hub.repos["bob/skin-lora"].commits) == 1 and len(hub.repos["viewers/shared"].commits) == 1
    assert len(hub.repos["alice/flaky"].commits) == 1 and len(hub.repos["alice/public-one"].commits) == 1
    assert "viewers/new-lora" not in hub.repos and "alice/new-lora" not in hub.repos
    assert not any(e["method"] == "POST" and "bob/" in e["path"] for e in hub.log)


def _silent_server() -> socket.socket:
    """A socket that accepts connections (backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_unreachable_endpoint_is_one_line(run_dir, tmp_path):
    """Closed port (through the CLI) and a silent server (timeout): one line each, nothing uploaded."""
    closed = _silent_server()
    port = closed.getsockname()[1]
    closed.close()
    silent = _silent_server()
    code = f"""
import contextlib, io, json
from dermdiff_lora.core import hubio
from dermdiff_lora.hub import publish
from dermdiff_lora.cli.app import main
from dermdiff_lora.core.errors import HubError
out = {{}}
for name, argv in (("push", ["push", {str(run_dir)!r}, "alice/x"]), ("pull", ["pull", "alice/x"])):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out[name] = [main(argv), err.getvalue()]
print(json.dumps(out))
"""
    out = run_client(code, client_env(tmp_path / "a", f"http://127.0.0.1:{port}"))
    for name in ("push", "pull"):
        rc, stderr = out[name]
        assert rc == 1 and stderr.count("\n") == 1 and stderr.startswith("error: cannot reach"), stderr
        assert f"127.0.0.1:{port}" in stderr
    assert "nothing was uploaded" in out["push"][1] and "not in the local Hugging Face cache" in out["pull"][1]
    code = f"""
import json
from dermdiff_lora.core import hubio
from dermdiff_lora.hub import publish
from dermdiff_lora.core.errors import HubError
out = {{}}
for name, call in (("push", lambda: publish.push({str(run_dir)!r}, "alice/x")), ("pull", lambda: hubio.pull("alice/x"))):
    try:
        call()
    except HubError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""
    env = {**client_env(tmp_path / "b", f"http://127.0.0.1:{silent.getsockname()[1]}"), "HF_HUB_ETAG_TIMEOUT": "1"}
    out = run_client(code, env)
    silent.close()
    assert "cannot reach" in out["push"] and "Timeout" in out["push"] and "nothing was uploaded" in out["push"]
    assert "cannot reach" in out["pull"] and "Timeout" in out["pull"]


def test_dry_run_writes_exactly_what_would_go_up(run_dir, tmp_path, capsys):
    from dermdiff_lora.cli.app import main
    from dermdiff_lora.cli.hub import _human
    from dermdiff_lora.core.errors import HubError
    from dermdiff_lora.hub.publish import push

    assert main(["push", str(run_dir), REPO, "--dry-run", str(tmp_path / "dry")]) == 0
    printed = capsys.readouterr().out
    assert {p.relative_to(tmp_path / "dry").as_posix() for p in all_files(tmp_path / "dry")} == PUSHED
    for path in all_files(tmp_path / "dry"):
        assert f"{_human(path.stat().st_size):>10}  {path.relative_to(tmp_path / 'dry').as_posix()}" in printed
    assert "total, 4 file(s)" in printed
    with_ckpt = push(run_dir, REPO, dry_run_dir=tmp_path / "ckpt", include_checkpoints=True)
    assert {f for f, _ in with_ckpt["files"]} == PUSHED | {"checkpoints/step-000002/trainer_state.json"}
    with pytest.raises(HubError, match="not empty"):
        push(run_dir, REPO, dry_run_dir=tmp_path / "dry")


def test_an_earlier_card_in_the_folder_is_used_with_notes(run_dir, tmp_path, capsys):
    from dermdiff_lora.cli.app import main

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "README.md").write_text("---\nlicense: other\n---\n# my own card for bob/old\n")
    os.utime(run / "README.md", (1_000_000_000, 1_000_000_000))
    assert main(["push", str(run), REPO, "--dry-run", str(tmp_path / "dry")]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "dry" / "README.md").read_text().endswith("bob/old\n")
    assert f"model card: {run / 'README.md'}" in printed
    assert "older than the weights" in printed and f"does not mention {REPO}" in printed


def test_folder_without_weights_is_refused(tmp_path):
    from dermdiff_lora.core.errors import ModelError
    from dermdiff_lora.hub.publish import push

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    with pytest.raises(ModelError, match="holds no weights"):
        push(tmp_path / "run", REPO)
    with pytest.raises(ModelError, match="holds no weights"):
        push(tmp_path / "run", REPO, dry_run_dir=tmp_path / "dry")
    assert not (tmp_path / "dry").exists()
