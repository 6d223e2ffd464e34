"""Hostile adapter files: corrupt headers and NaN/inf weights are refused with one line naming the file."""

from __future__ import annotations

import struct

import pytest
import torch
from adapter_helpers import make_adapter
from safetensors.torch import load_file, save_file

from dermdiff_lora.adapters import io, lora
from dermdiff_lora.adapters.combine import combine
from dermdiff_lora.adapters.inspect import inspect_adapter
from dermdiff_lora.adapters.merge import merge
from dermdiff_lora.cli import app
from dermdiff_lora.core.errors import AdapterError

HEADERS = {
    "truncated": struct.pack("<Q", 1000) + b'{"a": 1',  # says 1000 header bytes, holds 7
    "oversized": struct.pack("<Q", 2**62) + b"{}",  # a header length no file can have
    "not_json": struct.pack("<Q", 4) + b"abcd",
    "empty": b"",
}


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_corrupt_header_is_one_line_naming_the_file(tmp_path, kind, capsys):
    bad = tmp_path / f"{kind}.safetensors"
    bad.write_bytes(HEADERS[kind])
    for call in (lambda: io.load(bad), lambda: lora.read_header(bad), lambda: lora.read_metadata(bad)):
        with pytest.raises(AdapterError, match=rf"{kind}\.safetensors is not a readable safetensors file.*again"):
            call()
    assert app.main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "Traceback" not in err


@pytest.fixture(scope="module")
def nan_adapter(tmp_path_factory):
    """A real adapter with one NaN in one lora_B tensor (as a diverged run would leave)."""
    src = io.weights_file(make_adapter("hostile-src", targets=("to_q", "to_v")))
    tensors = load_file(str(src))
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        header = f.metadata()
    victim = sorted(k for k in tensors if "lora_B" in k)[1]
    tensors[victim] = tensors[victim].clone()
    tensors[victim][0, 0] = float("nan")
    out = tmp_path_factory.mktemp("nan") / "pytorch_lora_weights.safetensors"
    save_file(tensors, str(out), metadata=header)
    return out, victim


def test_nan_adapter_is_refused_by_every_consumer_naming_the_tensor(nan_adapter, tmp_path):
    path, victim = nan_adapter
    calls = {
        "load (generate, attach)": lambda: io.load(path),
        "merge": lambda: merge("tiny-random", [(path, 1.0)], tmp_path / "merged"),
        "combine": lambda: combine([(path, 1.0), (path, 0.5)], tmp_path / "sum"),
        "model.init_adapter": lambda: lora.load_into(_tiny_unet(), path, "unet"),
    }
    for what, call in calls.items():
        with pytest.raises(AdapterError, match="NaN or inf") as err:
            call()
        assert victim in str(err.value), what
    assert not (tmp_path / "merged").exists() and not (tmp_path / "sum").exists()


def test_inspect_reports_nan_tensors_instead_of_refusing(nan_adapter, capsys):
    path, victim = nan_adapter
    info = inspect_adapter(path)
    module = victim.removesuffix(".lora_B.weight")
    assert info["non_finite_tensors"] == [f"{module}.up"]
    assert app.main(["inspect", str(path)]) == 0
    assert "NaN/inf" in capsys.readouterr().out


def test_finite_adapter_reports_no_bad_tensors():
    info = inspect_adapter(make_adapter("hostile-src", targets=("to_q", "to_v")))
    assert info["non_finite_tensors"] == []


def _tiny_unet():
    from dermdiff_lora.core.models import load_parts

    return load_parts("tiny-random").unet


def test_non_finite_finds_inf_and_nan_only_in_float_tensors():
    tensors = {"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")]), "c": torch.tensor([1, 2]),
               "d": torch.tensor([float("nan")])}
    assert io.non_finite(tensors) == ["b", "d"]
