"""DoRA, LoHa and LoKr files: what their users' loaders compute from them equals what peft trained.

LoHa / LoKr deltas are recomputed here from the raw LyCORIS tensors with LyCORIS' own formulas (as ComfyUI's
``weight_adapter/loha.py`` / ``lokr.py`` compute them: Hadamard or Kronecker product, alpha / rank, no alpha
when both LoKr factors are full), independently of the package, and compared with peft's ``get_delta_weight``.
"""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import make_method_adapter, pipeline, text_out, unet_out
from safetensors.torch import load_file

from dermdiff_lora.adapters import io, kohya, lora
from dermdiff_lora.core.models import load_pipeline

LYCORIS = [("loha", {}), ("lokr", {}), ("lokr", {"rank": 1, "decompose_both": True}),
           ("lokr", {"rank": 2, "factor": 4})]


def _comfyui_delta(parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """LyCORIS' formulas on a file's tensors (float64)."""
    p = {k: v.double() for k, v in parts.items()}
    alpha = parts["alpha"].item() if "alpha" in parts else None
    if "hada_w1_a" in p:
        w = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
        return w.reshape(shape) * (alpha / p["hada_w1_b"].shape[0] if alpha is not None else 1.0)
    dim = None
    w1 = p.get("lokr_w1")
    if w1 is None:
        dim, w1 = p["lokr_w1_b"].shape[0], p["lokr_w1_a"] @ p["lokr_w1_b"]
    w2 = p.get("lokr_w2")
    if w2 is None:
        dim, w2 = p["lokr_w2_b"].shape[0], p["lokr_w2_a"] @ p["lokr_w2_b"]
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    scale = alpha / dim if (alpha is not None and dim is not None) else 1.0
    return torch.kron(w1, w2).reshape(shape) * scale


@pytest.mark.parametrize(("method", "kw"), LYCORIS, ids=["loha", "lokr", "lokr-both", "lokr-f4"])
def test_lycoris_file_delta_equals_peft_delta(tiny_base, method, kw):
    folder, unet, te = make_method_adapter(method, **kw)
    tensors = load_file(str(folder / lora.WEIGHT_NAME))
    stems: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        stem, _, part = key.partition(".")
        stems.setdefault(stem, {})[part] = value
    checked, kinds = 0, set()
    for component, model in (("unet", unet), ("text_encoder", te)):
        for name, module in model.named_modules():
            if "default" not in getattr(module, "scaling", {}):
                continue
            parts = stems.pop(kohya.kohya_name(f"{component}.{name}"))
            weight = module.get_base_layer().weight
            expected = module.get_delta_weight("default").double()
            assert torch.allclose(_comfyui_delta(parts, weight.shape), expected, atol=1e-6, rtol=0)
            checked += 1
            kinds.add((weight.dim(), "lokr_w1" in parts, "lokr_w2" in parts))
    assert not stems and checked > 20  # every layer of the file is one of the model's
    assert any(k[0] == 4 for k in kinds) and any(k[0] == 2 for k in kinds)
    if method == "lokr" and not kw:  # the alpha trap: both factors full, alpha / r baked into w1
        assert (2, True, True) in kinds and unet.peft_config["default"].alpha != unet.peft_config["default"].r


@pytest.mark.parametrize(("method", "kw"), [("lora", {}), ("dora", {}), *LYCORIS],
                         ids=["lora", "dora", "loha", "lokr", "lokr-both", "lokr-f4"])
def test_file_read_back_gives_the_trained_outputs(tiny_base, method, kw):
    """Our loader on the written file (diffusers loader for LoRA/DoRA, folded ΔW for LoHa/LoKr) = live peft."""
    folder, unet, te = make_method_adapter(method, **kw)
    adapter = io.load(folder)
    assert adapter.method == method and adapter.meta["method"] == method
    ours = pipeline((folder, 1.0))
    assert torch.allclose(unet_out(ours.unet), unet_out(unet), atol=1e-5)
    assert torch.allclose(text_out(ours.text_encoder), text_out(te), atol=1e-5)
    assert not torch.allclose(unet_out(unet), unet_out(load_pipeline("tiny-random").unet), atol=1e-3)


def test_dora_file_loads_in_stock_diffusers_with_the_same_images(tiny_base):
    folder, unet, _ = make_method_adapter("dora")
    stock = load_pipeline("tiny-random")
    stock.load_lora_weights(str(folder))
    modules = [m for m in stock.unet.modules() if hasattr(m, "lora_magnitude_vector") and m.lora_magnitude_vector]
    assert modules and all(m.use_dora[next(iter(m.use_dora))] for m in modules)
    ours = pipeline((folder, 1.0))
    images = []
    for pipe in (stock, ours):
        g = torch.Generator().manual_seed(0)
        images.append(pipe("benign skin disease on darker skin tone", num_inference_steps=2, generator=g,
                           output_type="np", height=32, width=32).images)
    assert abs(images[0] - images[1]).max() < 1e-5
    assert torch.allclose(unet_out(stock.unet), unet_out(unet), atol=1e-5)


@pytest.mark.parametrize(("keys", "message"), [
    (["hada_w1_a", "hada_w1_b"], "lacks one of hada_w1_a"),
    (["lokr_w1"], "lacks its lokr_w1 or lokr_w2"),
    (["hada_t1"], "Tucker-decomposed convolutions or kohya DoRA"),
    (["dora_scale", "lora_down.weight", "lora_up.weight"], "kohya DoRA")])
def test_incomplete_or_unsupported_lycoris_layers_are_named(tmp_path, keys, message):
    from safetensors.torch import save_file

    from dermdiff_lora.core.errors import AdapterError

    stem = "lora_unet_down_blocks_0_resnets_0_conv1"
    save_file({f"{stem}.{k}": torch.ones(2, 2) for k in keys}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(AdapterError, match=message) as err:
        io.load(tmp_path / "odd.safetensors")
    assert stem in str(err.value)
