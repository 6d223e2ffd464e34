"""The CLI is a thin layer: fast help, one-line errors, subcommands that call the library."""

import json
import subprocess
import sys

from dermdiff_lora.cli import app as cli


def test_help_lists_subcommands_without_importing_torch():
    code = ("import sys; from dermdiff_lora.cli import app as cli; cli.build_parser(); "
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    text = cli.build_parser().format_help()
    for name in ("train", "demo", "audit", "rebalance", "make-data"):
        assert name in text


def test_config_error_is_one_line_and_exit_1(capsys):
    assert cli.main(["train", "demo", "train.max_step=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 config error(s)") and "Traceback" not in err
    assert "did you mean 'train.max_steps'" in err


def test_audit_command_writes_new_files_only(demo_data, tmp_path, capsys):
    before = sorted(p.name for p in demo_data.iterdir())
    out = tmp_path / "tones.csv"
    assert cli.main(["audit", str(demo_data), "--out", str(out), "--workers", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(row["count"] for row in summary["table"]) == 24 and out.is_file()
    assert sorted(p.name for p in demo_data.iterdir()) == before


def test_merge_takes_the_base_recorded_in_the_adapter(trained_lora, tmp_path, capsys):
    out = tmp_path / "merged"
    assert cli.main(["merge", "--adapter", str(trained_lora), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["base_model"] == "tiny-random"
    assert (out / "model_index.json").is_file()


def test_extract_takes_the_base_from_the_saved_config(trained_full, tmp_path, capsys):
    out = tmp_path / "extracted"
    assert cli.main(["extract", str(trained_full), "--rank", "2", "--targets", "to_q", "--out", str(out),
                     "--json"]) == 0
    capsys.readouterr()
    assert (out / "pytorch_lora_weights.safetensors").is_file()
