"""The adapter subcommands end to end through ``dermdiff_lora.cli.app``: output, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest
from adapter_helpers import make_adapter

from dermdiff_lora.adapters import io
from dermdiff_lora.cli.adapters import adapter_spec
from dermdiff_lora.cli.app import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_adapter_spec_parses_optional_scales():
    assert adapter_spec("runs/lora") == ("runs/lora", 1.0)
    assert adapter_spec("runs/lora:0.5") == ("runs/lora", 0.5)
    assert adapter_spec("C:/x/lora:-1") == ("C:/x/lora", -1.0)
    assert adapter_spec("C:/x/lora") == ("C:/x/lora", 1.0)


def test_inspect_convert_resize_combine_from_the_shell(trained_lora, tmp_path, capsys):
    code, out, _ = _run(capsys, "inspect", trained_lora, "--json")
    assert code == 0 and json.loads(out)["components"]["unet"]["rank"] == 4
    code, out, _ = _run(capsys, "convert", trained_lora, "--to", "kohya", "--out", tmp_path / "k.safetensors")
    assert code == 0 and "32 layers as kohya keys" in out
    code, out, _ = _run(capsys, "inspect", tmp_path / "k.safetensors")
    assert code == 0 and "kohya" in out and "unet.alpha" in out
    code, out, _ = _run(capsys, "resize", tmp_path / "k.safetensors", "--rank", "2", "--out", tmp_path / "r2")
    assert code == 0 and "overall: relative error" in out and "4→2" in out
    code, out, _ = _run(capsys, "combine", f"{trained_lora}:0.5", f"{tmp_path / 'r2'}:0.5", "--out",
                        tmp_path / "c", "--json")
    assert code == 0 and json.loads(out)["exact"] and io.load(tmp_path / "c").layers


def test_extract_and_merge_from_the_shell(trained_full, tmp_path, capsys):
    code, out, _ = _run(capsys, "extract", trained_full, "--base", "tiny-random", "--rank", "4", "--targets",
                        "to_q,to_v", "--out", tmp_path / "ex")
    assert code == 0 and "not carried: conv_norm_out.weight (GroupNorm)" in out
    code, out, _ = _run(capsys, "merge", "--base", "tiny-random", "--adapter", f"{tmp_path / 'ex'}:0.5",
                        "--out", tmp_path / "m", "--dtype", "bf16")
    assert code == 0 and json.loads(out)["dtype"] == "bf16" and (tmp_path / "m" / "model_index.json").is_file()


def test_generate_from_the_shell(tiny_base, tmp_path, capsys):
    code, out, _ = _run(capsys, "generate", "--adapter", f"{make_adapter('broad')}:0.7", "--steps", "2",
                        "--height", "32", "--width", "32", "--no-progress", "--out", tmp_path / "g")
    assert code == 0 and "wrote 6 image(s), grid.png" in out
    assert json.loads((tmp_path / "g" / "generate.json").read_text())["settings"]["adapters"][0][1] == 0.7


@pytest.mark.parametrize("argv, message", [
    (["inspect", "{tmp}/missing"], "adapter {tmp}/missing not found"),
    (["convert", "{tmp}/a.ckpt", "--to", "kohya", "--out", "{tmp}/k.safetensors"], "a.ckpt is a pickle file"),
    (["resize", "{lora}", "--rank", "2", "--out", "{lora}", "--overwrite"], "is an input"),
    (["combine", "{lora}", "--out", "{tmp}"], "already exists"),
])
def test_errors_are_one_line(trained_lora, tmp_path, capsys, argv, message):
    (tmp_path / "a.ckpt").write_bytes(b"not really a pickle")
    fill = {"tmp": tmp_path, "lora": trained_lora}
    code, _, err = _run(capsys, *[a.format(**fill) for a in argv])
    assert code == 1 and err.count("\n") == 1 and message.format(**fill) in err
