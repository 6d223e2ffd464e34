"""scripts/check_sizes.py: the size limits CI enforces, and that it never says ok having checked nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "check_sizes.py"


@pytest.fixture(scope="module")
def check_sizes():
    spec = importlib.util.spec_from_file_location("check_sizes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function_of(lines: int) -> str:
    """A function whose def line through its last line spans ``lines`` lines."""
    return "def f():\n" + "    x = 1\n" * (lines - 1)


def test_limits_are_inclusive(check_sizes, tmp_path, capsys):
    (tmp_path / "ok.py").write_text(function_of(60) + "\n" * (400 - 60))
    assert check_sizes.main([str(tmp_path)]) == 0
    assert "sizes ok: 1 files" in capsys.readouterr().out


def test_long_module_and_function_fail(check_sizes, tmp_path, capsys):
    (tmp_path / "long.py").write_text("x = 1\n" * 401)
    (tmp_path / "fn.py").write_text(function_of(61))
    assert check_sizes.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "long.py: 401 lines" in out and "function f has 61 lines" in out


def test_nothing_checked_is_an_error(check_sizes, tmp_path, capsys):
    assert check_sizes.main([str(tmp_path)]) == 2
    assert "nothing was checked" in capsys.readouterr().out
    assert check_sizes.main([str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().out


def test_no_argument_checks_the_default_folders(check_sizes, monkeypatch, capsys):
    monkeypatch.chdir(SCRIPT.parents[1])
    check_sizes.main([])
    count = int(capsys.readouterr().out.split("sizes ok: ")[1].split(" files")[0])
    assert count == sum(len(list(Path(d).rglob("*.py"))) for d in check_sizes.DEFAULT) > 100
