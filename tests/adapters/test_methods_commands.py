"""Every adapter command with DoRA, LoHa and LoKr: merge, generate with several, inspect, combine, resize,
convert and the card; what a method cannot do is refused in one line naming the method and the alternative."""

from __future__ import annotations

import re

import pytest
import torch
from adapter_helpers import make_method_adapter, pipeline, scratch, text_out, unet_out
from safetensors.torch import load_file

from dermdiff_lora.adapters import io, lora
from dermdiff_lora.core.errors import AdapterError

METHODS = ["lora", "dora", "loha", "lokr"]


@pytest.mark.parametrize("method", METHODS)
def test_merged_equals_unfused(tiny_base, method):
    from diffusers import StableDiffusionPipeline

    from dermdiff_lora.adapters.merge import merge

    folder, unet, te = make_method_adapter(method)
    out = scratch("merged-") / "m"
    record = merge("tiny-random", [(folder, 1.0)], out)
    assert record["adapters"][0]["method"] == method
    merged = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert not any("lora" in n or "hada" in n or "lokr" in n for n, _ in merged.unet.named_parameters())
    assert torch.allclose(unet_out(merged.unet), unet_out(unet), atol=1e-5)
    assert torch.allclose(text_out(merged.text_encoder), text_out(te), atol=1e-5)


def _peft_delta_reference(items):
    """The tiny-random base with Σ scale · peft's get_delta_weight added (the additive methods)."""
    from dermdiff_lora.core.models import load_pipeline

    ref = load_pipeline("tiny-random")
    with torch.no_grad():
        for (_, unet, _), scale in items:
            for name, module in unet.named_modules():
                if "default" in getattr(module, "scaling", {}):
                    ref.unet.get_submodule(name).weight += scale * module.get_delta_weight("default")
    return ref


def test_generate_with_several_adapters_of_different_methods(tiny_base):
    items = [(make_method_adapter(m), s) for m, s in (("lora", 0.5), ("loha", 1.0), ("lokr", 0.7))]
    ours = pipeline(*[(item[0], s) for item, s in items])
    assert torch.allclose(unet_out(ours.unet), unet_out(_peft_delta_reference(items).unet), atol=1e-5)


def test_inspect_names_method_rank_and_kronecker_factor(tiny_base):
    from dermdiff_lora.adapters.inspect import format_table, inspect_adapter

    for method in METHODS:
        info = inspect_adapter(make_method_adapter(method)[0])
        assert info["method"] == method and re.search(rf"^method\s+{method}$", format_table(info), re.M)
        assert info["parameters"] == sum(p.numel() for m in make_method_adapter(method)[1:]
                                         for n, p in m.named_parameters() if p.requires_grad)
    info = inspect_adapter(make_method_adapter("lokr", rank=2, factor=4)[0])
    assert [4, 4] in info["components"]["unet"]["kron_w1_shapes"]


def test_combine_is_exact_for_lora_refused_or_svd_for_the_others(tiny_base):
    from dermdiff_lora.adapters.combine import combine

    lora_a, loha, dora = (make_method_adapter(m)[0] for m in ("lora", "loha", "dora"))
    with pytest.raises(AdapterError, match=r"combine: loha factors .* do not add exactly; pass --rank"):
        combine([(lora_a, 1.0), (loha, 1.0)], scratch("c-") / "x")
    with pytest.raises(AdapterError, match=r"combine: .* is a DoRA adapter.*merge"):
        combine([(lora_a, 1.0), (dora, 1.0)], scratch("c-") / "x", rank=4)
    out = scratch("c-") / "svd"
    result = combine([(lora_a, 0.5), (loha, 1.0)], out, rank=64)  # at full rank: the exact sum
    assert result["exact"] is False and result["rel_error"] < 1e-6
    items = [(make_method_adapter("lora"), 0.5), (make_method_adapter("loha"), 1.0)]
    assert torch.allclose(unet_out(pipeline((out, 1.0)).unet), unet_out(_peft_delta_reference(items).unet),
                          atol=1e-5)
    low = combine([(lora_a, 0.5), (loha, 1.0)], scratch("c-") / "low", rank=1)
    assert 0 < low["rel_error"] < 1 and io.load(low["output"]).method == "lora"


@pytest.mark.parametrize("method", ["loha", "lokr"])
def test_resize_turns_lycoris_into_lora_with_the_error(tiny_base, method):
    from dermdiff_lora.adapters.resize import resize

    src = make_method_adapter(method)[0]
    full = resize(src, scratch("r-") / "full", energy=1.0)
    assert full["rel_error"] < 1e-6 and io.load(full["output"]).method == "lora"
    assert torch.allclose(unet_out(pipeline((full["output"], 1.0)).unet), unet_out(pipeline((src, 1.0)).unet),
                          atol=1e-5)
    small = resize(src, scratch("r-") / "small", rank=1)
    assert 0 < small["rel_error"] < 1


def test_convert_refuses_what_a_format_cannot_hold_and_keeps_lycoris_exact(tiny_base):
    from dermdiff_lora.adapters.convert import convert
    from dermdiff_lora.adapters.resize import resize

    with pytest.raises(AdapterError, match=r"is DoRA, which has no kohya form.*merge"):
        convert(make_method_adapter("dora")[0], scratch("k-") / "d.safetensors", to="kohya")
    with pytest.raises(AdapterError, match="DoRA adapter"):
        resize(make_method_adapter("dora")[0], scratch("k-") / "r", rank=2)
    loha = make_method_adapter("loha")[0]
    with pytest.raises(AdapterError, match=r"is loha, which stock diffusers cannot load.*merge"):
        convert(loha, scratch("k-") / "d", to="diffusers")
    out = scratch("k-") / "again.safetensors"
    convert(loha, out, to="kohya")
    a, b = load_file(str(out)), load_file(str(loha / lora.WEIGHT_NAME))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_card_of_a_lycoris_adapter_says_merge_first(tiny_base):
    from dermdiff_lora.hub.card import build_card

    text = build_card(make_method_adapter("lokr")[0], repo_id="you/x")
    assert "dermdiff-lora merge --adapter you/x --out merged" in text and "load_lora_weights(adapter)" not in text
    assert "| LoKr rank / alpha |" in text and "ComfyUI and AUTOMATIC1111 load the file" in text
    assert "pipe.load_lora_weights(adapter)" in build_card(make_method_adapter("dora")[0], repo_id="you/x")


def test_a_file_mixing_lora_and_loha_layers_loads_both(tiny_base):
    from safetensors.torch import save_file

    from dermdiff_lora.adapters.convert import convert
    from dermdiff_lora.core.models import load_pipeline

    (lora_dir, lora_unet, _), (loha_dir, loha_unet, _) = make_method_adapter("lora"), make_method_adapter("loha")
    work = scratch("mixed-")
    convert(lora_dir, work / "lora_k.safetensors", to="kohya")
    mixed = {k: v for k, v in load_file(str(work / "lora_k.safetensors")).items() if "attn" in k}
    mixed.update({k: v for k, v in load_file(str(loha_dir / lora.WEIGHT_NAME)).items()
                  if k.startswith("lora_unet_") and "resnets" in k})
    save_file(mixed, str(work / "mixed.safetensors"))
    assert io.load(work / "mixed.safetensors").method == "loha+lora"
    ref = load_pipeline("tiny-random")
    with torch.no_grad():
        for unet, keep in ((lora_unet, "attn"), (loha_unet, "resnets")):
            for name, module in unet.named_modules():
                if "default" in getattr(module, "scaling", {}) and keep in name:
                    ref.unet.get_submodule(name).weight += module.get_delta_weight("default")
    assert torch.allclose(unet_out(pipeline((work / "mixed.safetensors", 1.0)).unet), unet_out(ref.unet), atol=1e-5)
