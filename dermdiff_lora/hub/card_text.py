"""The body of a model card: prose and tables rendered from ``card.Facts`` (no local paths, no secrets)."""

from __future__ import annotations

import re
from pathlib import Path

from .card_facts import PAPER, TINY_BASES, Facts, grid_prompts, is_hub_base, package_version

NOT_DIAGNOSTIC = ("> **Not a diagnostic device.** This model makes synthetic images. It does not detect, "
                  "diagnose or rule out any disease, and its images must not be used to make or support "
                  "decisions about anyone's health.")

INTENDED_USE = """## Intended use

- Research on skin-tone bias in dermatology AI: generating labelled synthetic images to rebalance training
  sets across skin tones, and probing how classifiers behave on each tone group.
- Method development and teaching where synthetic images are preferable to patient photographs.

## Out-of-scope use

- Diagnosis, screening, triage or treatment decisions, or any statement about a real patient.
- Presenting generated images as real clinical photographs, or as a reference for how a disease looks on a
  given skin tone.
- Using generated images as ground truth to evaluate a medical device, a classifier's clinical readiness, or
  a clinician."""

LIMITATIONS = """## Limitations and bias

- The diagnosis word in a prompt is a conditioning signal, not a guarantee: an image prompted "malignant"
  need not show features a dermatologist would call malignant. No clinician reviewed these outputs.
- Skin tone is reduced to a few coarse groups. They hide wide variation within each group, and colour-based
  tone estimates shift with lighting, camera and the lesion itself.
- The model inherits the biases of its base model (trained on web images) and of its training data: where a
  tone × diagnosis group has few images, outputs for it are less varied and may echo those few images.
- Diffusion models can reproduce training images. If the training data hold patient photographs, check
  generated images for near-copies before sharing them.
- Rebalancing a dataset with synthetic images can improve per-tone metrics, but a classifier can also learn
  the generator's artefacts: always validate on real, held-out images of every tone group."""


def body(f: Facts, repo_id: str) -> str:
    """Markdown after the front matter."""
    parts = [_intro(f, repo_id), _samples(f), _usage(f, repo_id), _prompts(f), _training(f), _data(f),
             _evaluation(f), *_review(f), *_downstream(f), INTENDED_USE, LIMITATIONS, _provenance(f)]
    return "\n\n".join(p.strip() for p in parts if p) + "\n"


def _table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _base_text(f: Facts) -> str:
    if is_hub_base(f.base):
        rev = f" (revision `{f.revision}`)" if f.revision else ""
        return f"[{f.base}](https://huggingface.co/{f.base}){rev}"
    if f.base in TINY_BASES:
        return f"`{f.base}`, a tiny model built by dermdiff-lora,"
    return f"a local base model (`{Path(f.base).name}`)"


def _intro(f: Facts, repo_id: str) -> str:
    what = "A LoRA adapter for" if f.kind == "lora" else "A full UNet fine-tune (EMA weights) of"
    text = (f"# {repo_id.split('/')[-1]}\n\n{what} {_base_text(f)} that generates synthetic dermatology images "
            "conditioned on diagnosis and skin tone. It was trained with dermdiff-lora "
            f"{package_version(f)}, following {PAPER}, to counter the under-representation of darker skin "
            f"tones in dermatology image datasets.\n\n{NOT_DIAGNOSTIC}")
    steps = f.meta.get("train_steps") or (f.cfg.train.max_steps if f.cfg else "a few")
    if f.base == "tiny-random":
        text += ("\n\n> **Demo adapter.** `tiny-random` is a tiny, randomly initialised model with the Stable "
                 "Diffusion v1 architecture that dermdiff-lora builds in code for offline tests; this adapter was "
                 f"trained on it for {steps} steps on generated synthetic skin images. Its outputs are not "
                 "realistic skin: it shows what a dermdiff-lora release contains. Adapters for real use are "
                 "trained on SD v1-4 (`model.base=CompVis/stable-diffusion-v1-4`).")
    elif f.base == "tiny":
        text += ("\n\n> **Demo model.** `tiny` is a small model shipped with dermdiff-lora and trained on "
                 "synthetic skin images; its outputs are coarse. Adapters for real use are trained on SD v1-4.")
    return text


def _samples(f: Facts) -> str:
    if not f.grid:
        return "## Samples\n\nNo sample grid was saved with this run (validation.at_end was off)."
    step = re.search(r"step-(\d+)", f.grid)
    where = f"Validation grid at step {int(step.group(1))}" if step else "Sample grid"
    columns = f.builder.columns if f.builder else []
    layout = (f"rows: `{columns[0]}`; columns: {', '.join(f'`{c}`' for c in columns[1:])}; "
              if len(columns) > 1 else "")
    v = f.cfg.validation if f.cfg else None
    how = (f"one seed ({v.seed}) for every cell, {v.inference_steps} sampling steps, guidance {v.guidance_scale:g}. "
           if v else "")
    return f"## Samples\n\n![diagnosis × skin tone grid]({f.grid})\n\n*{where}; {layout}{how}All images are synthetic.*"


def snippet(f: Facts, repo_id: str) -> str:
    """Python that loads this adapter (or model) with plain diffusers and renders one image."""
    prompts = grid_prompts(f.builder)
    prompt = prompts[-1] if prompts else "malignant skin disease on darker skin tone"
    res = f.cfg.data.resolution if f.cfg else 512
    if f.kind == "lora":
        if is_hub_base(f.base):
            base = f'base = "{f.base}"'
        elif f.base in TINY_BASES:
            base = (f'base = "path/to/{f.base}"  # its folder: python -c "from dermdiff_lora.models import '
                    f"resolve_base; print(resolve_base('{f.base}'))\"")
        else:
            base = f'base = "path/to/{Path(f.base).name}"  # the base model this adapter was trained on'
        extra = "pipe.load_lora_weights(adapter)\n"
        if _lycoris(f):  # stock diffusers cannot load LoHa / LoKr into SD 1.x: merge them first
            base, extra = (f'model = "merged"  # dermdiff-lora merge --adapter {repo_id} --out merged', "")
        head = base if _lycoris(f) else f'{base}\nadapter = "{repo_id}"'
        load = "model" if _lycoris(f) else "base"
    else:
        head, load, extra = f'model = "{repo_id}"', "model", ""
    return f"""```python
import torch
from diffusers import StableDiffusionPipeline

{head}
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.float16 if device == "cuda" else torch.float32

pipe = StableDiffusionPipeline.from_pretrained(
    {load}, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
).to(device)
{extra}
prompt = "{prompt}"
generator = torch.Generator(device).manual_seed(0)
image = pipe(prompt, num_inference_steps=30, guidance_scale=7.5, height={res}, width={res},
             generator=generator).images[0]
image.save("sample.png")
```"""


def _lycoris(f: Facts) -> bool:
    return f.kind == "lora" and f.meta.get("method") in ("loha", "lokr")


def _usage(f: Facts, repo_id: str) -> str:
    text = f"## How to use\n\nWith plain diffusers:\n\n{snippet(f, repo_id)}\n\n"
    if _lycoris(f):
        text += (f"This is a {f.meta['method'].upper().replace('LOHA', 'LoHa').replace('LOKR', 'LoKr')} adapter "
                 "with LyCORIS key names: ComfyUI and AUTOMATIC1111 load the file as it is; stock diffusers "
                 "cannot load it into SD 1.x, so merge it into the base first (above). ")
    elif f.kind == "lora":
        text += ("`load_lora_weights` reads the rank and alpha stored in the file, so the adapter applies at its "
                 "trained strength; `pipe.fuse_lora(lora_scale=0.8)` (or `cross_attention_kwargs={\"scale\": 0.8}` "
                 "in the call) weakens it. ")
    return text + ("SD's NSFW safety checker is off in this snippet because it blacks out many ordinary skin "
                   "images; switch it back on (drop `safety_checker=None`) before showing outputs to a general "
                   "audience. Write prompts with the template and words below.")


def _prompts(f: Facts) -> str:
    if not f.builder:
        return "## Prompts\n\nCaptions came from the dataset's caption column; no prompt template was recorded."
    rows = [[col, f"`{raw}`", f"`{word}`"] for col, mapping in f.builder.value_maps.items()
            if col in f.builder.columns for raw, word in mapping.items()]
    text = ("## Prompts\n\nEvery training caption was built from one template over the image metadata:\n\n"
            f"```text\n{f.builder.template}\n```\n\n")
    if rows:
        text += _table(["column", "value in the metadata", "word in the prompt"], rows) + "\n\n"
    prompts = grid_prompts(f.builder)
    if prompts:
        text += (f"The {len(prompts)} prompts of the grid:\n\n" + "\n".join(f"- `{p}`" for p in prompts) + "\n\n")
    return text + ("Use exactly these words: other phrasings (\"dark skin\", Fitzpatrick types, clinical "
                   "diagnoses) were never seen in training.")


def _training(f: Facts) -> str:
    c, m, s = f.cfg, f.meta, f.summary
    rows: list[list[object]] = []
    if f.kind == "lora":
        rank, alpha = m.get("rank") or (c.lora.rank if c else None), m.get("alpha") or (c.lora.alpha if c else None)
        targets = m.get("target_modules") or (c.lora.target_modules if c else [])
        if rank:
            label = {"dora": "DoRA", "loha": "LoHa", "lokr": "LoKr"}.get(m.get("method"), "LoRA")
            rows += [[f"{label} rank / alpha", f"{rank} / {alpha:g} (scale alpha/rank = {alpha / rank:g})"],
                     ["target modules (UNet)", ", ".join(f"`{t}`" for t in targets)],
                     ["text-encoder LoRA", "yes" if m.get("text_encoder") or (c and c.lora.text_encoder) else "no"]]
    elif c:
        rows += [["mode", "full UNet fine-tune"], ["EMA", f"decay {c.train.ema_decay:g}" if c.train.ema else "off"]]
    if c:
        rows += _config_rows(c)
    if s:
        rows += [["final loss", f"{s['final_loss']:.4f}" if isinstance(s.get("final_loss"), float) else "-"],
                 ["images seen", s.get("images_seen", "-")],
                 ["training time", f"{s.get('seconds', 0) / 60:.1f} min on {s.get('processes', 1)} × "
                                   f"{s.get('device', '?')}"]]
    if not rows:
        return "## Training\n\nNo training settings were recorded with this adapter."
    return "## Training\n\n" + _table(["setting", "value"], rows)


def _config_rows(c) -> list[list[object]]:
    t, o, d = c.train, c.optim, c.data
    rows = [["steps", t.max_steps],
            ["batch size × gradient accumulation", f"{t.batch_size} × {t.gradient_accumulation}"],
            ["optimizer", f"{o.name}, lr {o.lr:g}, betas {tuple(o.betas)}, weight decay {o.weight_decay:g}"],
            ["LR schedule", f"{o.scheduler}, {o.warmup_steps} warm-up steps"],
            ["mixed precision", t.mixed_precision],
            ["resolution", f"{d.resolution} px, {'center' if d.center_crop else 'random'} crop, "
                           f"{'random flips' if d.random_flip else 'no flips'}"],
            ["caption dropout", f"{c.prompts.caption_dropout:g}"],
            ["min-SNR γ", t.snr_gamma if t.snr_gamma else "off"],
            ["noise offset", f"{t.noise_offset:g}"],
            ["tone-balanced sampling", d.balance + (f" (cap {d.balance_cap:g})" if d.balance_cap else "")],
            ["seed", t.seed]]
    if c.model.init_adapter:
        init = c.model.init_adapter
        rows.append(["started from adapter", init if is_hub_base(init) else Path(init).name])
    return rows


def _data(f: Facts) -> str:
    if not f.counts:
        return ("## Training data\n\nThe skin tone × diagnosis counts of the training data were not recorded "
                "(pass an audit JSON with `dermdiff-lora card --audit FILE`).")
    diags = list(next(iter(f.counts.values())))
    total = sum(sum(row.values()) for row in f.counts.values()) or 1
    rows = [[tone, *row.values(), sum(row.values()), f"{100 * sum(row.values()) / total:.0f}%"]
            for tone, row in f.counts.items()]
    rows.append(["**all**", *[sum(r[d] for r in f.counts.values()) for d in diags], total, "100%"])
    tone, diag, n = min(((t, d, n) for t, r in f.counts.items() for d, n in r.items()), key=lambda x: x[2])
    return (f"## Training data\n\nSkin tone × diagnosis counts, {f.counts_source}:\n\n"
            + _table(["skin tone", *diags, "total", "share"], rows)
            + f"\n\nThe smallest group is {tone} × {diag} with {n} image(s); outputs for small groups are the "
            f"least reliable. {_measures(f)}" + _terms(f))


def _measures(f: Facts) -> str:
    tone = (f.data or {}).get("tone") or {}
    if tone.get("given") and "Fitzpatrick" in str(tone.get("given_by")):
        est = f" and {tone['estimated']} from the Individual Typology Angle (ITA) of the skin colour" \
            if tone.get("estimated") else ""
        return (f"Here {tone['given']} images got their tone group from their Fitzpatrick type{est}. Fitzpatrick "
                "type (a questionnaire about burning and tanning) and ITA (a colour measurement) are different "
                "measures; DermDiff's groups are ITA thresholds, so the two kinds of group are not interchangeable.")
    text = ("In DermDiff the tone groups come from thresholds on the Individual Typology Angle (ITA) of the skin "
            "colour; they are not Fitzpatrick types.")
    if tone.get("given"):
        text += f" Here {tone['given']} images' groups were given by {tone.get('given_by')}."
    return text


def _terms(f: Facts) -> str:
    lic = (f.data or {}).get("licence")
    if not lic:
        return ""
    text = (f"\n\n### Terms of the training data\n\nTrained on {lic['dataset']}: {lic['name']} ({lic['url']}). "
            f"Cite: {lic['citation']}.")
    if lic.get("per_image"):
        text += "\n\n" + _table(["licence of the training images", "images"], list(map(list, lic["per_image"].items())))
    if lic.get("attributions"):
        text += "\n\nAttributions:\n\n" + "\n".join(f"- {a} ({n} images)" for a, n in lic["attributions"].items())
    if lic.get("non_commercial"):
        text += ("\n\n**Non-commercial.** Training images under a non-commercial licence (or terms) bind this "
                 "model: use it, and images made with it, for non-commercial purposes only.")
    return text


def _evaluation(f: Facts) -> str:
    if not f.evals:
        return ("## Evaluation\n\nNo evaluation results were recorded with this adapter. Before using its images, "
                "measure image quality per tone group and the effect on a downstream classifier's per-tone "
                "sensitivity and specificity.")
    if isinstance(f.evals, dict) and "cells" in f.evals and "extractor" in f.evals:
        from ..eval.report import format_table

        return ("## Evaluation\n\nGenerated vs held-out real images per diagnosis × tone cell "
                "(`dermdiff-lora evaluate`; lower FID/KID = closer to real, lower MS-SSIM = more diverse):\n\n"
                f"```\n{format_table(f.evals)}\n```")
    flat = _flatten(f.evals) if isinstance(f.evals, dict) else {"results": f.evals}
    rows = [[f"`{k}`", f"{v:.4g}" if isinstance(v, float) else v] for k, v in flat.items()]
    return "## Evaluation\n\n" + _table(["metric", "value"], rows)


def _downstream(f: Facts) -> list[str]:
    """The downstream-fairness table (the arms side by side per tone group), when recorded."""
    if not f.downstream:
        return []
    from ..downstream.command import result_text

    return ["## Downstream fairness\n\nA lesion classifier trained on real images only, beside the same with "
            "added images (resampled, CIELAB tone-shifted, or this model's synthetic ones), on one "
            "patient-level split (`dermdiff-lora downstream`), test split per tone "
            f"group:\n\n```\n{result_text(f.downstream)}\n```"]


def _review(f: Facts) -> list[str]:
    """The clinician review (QC acceptance per cell, the blinded study), when one was reported."""
    if not f.review:
        return []
    from ..review.outputs import card_section

    return [card_section(f.review)]


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _provenance(f: Facts) -> str:
    lines = [f"- Trained with dermdiff-lora {package_version(f)} ({PAPER}, arXiv:2503.17536)."]
    if f.meta.get("fingerprint"):
        lines.append(f"- Adapter fingerprint `{f.meta['fingerprint']}`: a digest of the shapes of the "
                     f"{f.meta.get('layers', '')} layers it touches, equal for every base with the same layout.")
    lines.append("- Images generated with dermdiff-lora carry their provenance (synthetic, base model, adapters, "
                 "prompt, seed) in PNG text chunks. Keep generated images labelled as synthetic wherever they go.")
    return "## Provenance\n\n" + "\n".join(lines)
