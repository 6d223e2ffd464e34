"""``evaluate_sets``: every metric of this subpackage for real, generated (and training) image sets, per
cell and overall, as one JSON-serialisable dict (the content of an ``eval.json``).

Tables and the chart for such dicts are in ``tables`` (``format_table``, ``compare_table``,
``save_chart``) and re-exported here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..core.errors import ConfigError, DataError
from ..data.duplicates import NEAR_CUTOFF, NEAR_PIXELS
from . import leakage
from .diversity import MAX_PAIRS, common_size, mean_ms_ssim, ms_ssim_scales
from .features import TINY_SEED, ExtractorInfo, FeatureExtractor, extract, load_extractor
from .fid import KID_SUBSETS, cell_figures, cell_name
from .memorization import (
    PERCENTILE,
    SSIM_SIZE,
    TOP_K,
    add_ssim,
    exclusion_mask,
    features_with_flip,
    heldout_threshold,
    nearest,
    summarise,
)
from .tables import compare_table, format_table, save_chart  # noqa: F401  (re-exported)
from .tone_stats import tone_stats


@dataclass
class EvalItem:
    """One image of a set: the image or its path, its cell (e.g. ("malignant", "darker")), its patient
    group (patient id, else lesion id; for memorisation), a known ITA, an optional id (for ``duplicates``
    and the closest-pair listing) and ``key``, the metadata's file value (the ids of ``duplicates.csv``)."""

    image: Image.Image | str | os.PathLike
    cell: tuple[str, ...]
    group: str | None = None
    ita: float | None = None
    image_id: str | None = None
    key: str | None = None


def load_images(items: Sequence[EvalItem]) -> list[Image.Image]:
    """RGB PIL images of ``items``; an unreadable file raises DataError naming it."""
    images = []
    for item in items:
        if isinstance(item.image, Image.Image):
            images.append(item.image.convert("RGB"))
            continue
        try:
            with Image.open(item.image) as image:
                images.append(image.convert("RGB"))
        except OSError as e:
            raise DataError(f"cannot read image {os.fspath(item.image)!r}: {e}") from e
    return images


def _check_sets(real: Sequence[EvalItem], generated: Sequence[EvalItem],
                train: Sequence[EvalItem] | None) -> None:
    """ConfigError for non-EvalItem entries, fewer than 2 real or generated images, or an empty train."""
    for name, items in (("real", real), ("generated", generated), ("train", train or [])):
        for i, item in enumerate(items):
            if not isinstance(item, EvalItem):
                raise ConfigError(f"{name}[{i}] is a {type(item).__name__}, not an EvalItem")
    if len(real) < 2 or len(generated) < 2:
        raise ConfigError(f"need at least 2 real and 2 generated images, got {len(real)} and {len(generated)}")
    if train is not None and not train:
        raise ConfigError("train is empty; pass None to skip the memorisation check")


def evaluate_sets(real: Sequence[EvalItem], generated: Sequence[EvalItem],
                  train: Sequence[EvalItem] | None = None, *, extractor: str = "dinov2",
                  model_id: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 32,
                  seed: int = 0, kid_subset_size: int | None = None, kid_subsets: int = KID_SUBSETS,
                  ms_ssim_size: int | None = None, ms_ssim_max_pairs: int = MAX_PAIRS,
                  duplicates: Iterable[tuple[str, str] | str] = (), find_copies: bool = True,
                  near_cutoff: int = NEAR_CUTOFF, top_k: int = TOP_K, percentile: float = PERCENTILE, estimate: Callable[[Image.Image], object] | None = None,
                  categorize: Callable[[float], str] | None = None,
                  prompted_group: Callable[[Hashable], str | None] | None = None,
                  matches_out: list | None = None) -> dict:
    """FID/KID (``fid.cell_figures``), MS-SSIM of each side, tone statistics (where ITAs are known or
    ``estimate`` is given) and, with ``train``, memorisation, per cell and overall.

    ``real`` are held-out real images (never trained on): FID/KID reference and memorisation threshold.
    ``estimate(image)`` gives an ITA (a float, None, or an object with ``.ita``) for items without one;
    ``categorize(ita)`` a tone group; ``prompted_group(cell)`` the cell's prompted group (default: last
    element). Held-out real images that are copies of training images are left out of the memorisation
    threshold and reported under ``memorisation.leakage``: those a pair of ``duplicates`` (ids or keys, in
    either order, through groups of copies) joins to a training image, and (``find_copies``) those the
    duplicate finder pairs with one (exact, mirrored, or pHash within ``near_cutoff`` bits). A single id in
    ``duplicates`` is never matched.
    ``matches_out`` (a list) receives every generated image's ``Match`` (for ``memorisation.csv``).
    """
    _check_sets(real, generated, train)
    module, info = load_extractor(extractor, model_id, device)
    real_images, gen_images = load_images(real), load_images(generated)
    real_f, gen_f = extract(module, real_images, batch_size), extract(module, gen_images, batch_size)
    figures = cell_figures(real_f, [i.cell for i in real], gen_f, [i.cell for i in generated], info,
                           kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, seed=seed)
    result = _header(info, real, generated, train, seed)
    result.update(cells=figures["cells"], overall=figures["overall"])
    result["ms_ssim"] = _add_diversity(result, (real, real_images), (generated, gen_images),
                                       size=ms_ssim_size, max_pairs=ms_ssim_max_pairs, seed=seed)
    _add_tone(result, (real, real_images), (generated, gen_images), estimate, categorize, prompted_group)
    if train is not None:
        result["memorisation"] = _add_memorisation(
            result, module, (real, real_images), (generated, gen_images), train, batch_size=batch_size,
            duplicates=list(duplicates), copies=(find_copies, near_cutoff), top_k=top_k, percentile=percentile,
            matches_out=matches_out)
    return jsonable(result)


def _header(info: ExtractorInfo, real: Sequence[EvalItem], generated: Sequence[EvalItem],
            train: Sequence[EvalItem] | None, seed: int) -> dict:
    """Extractor info, image size, seeds and counts: what every result states up front."""
    seeds = {"kid_subsets": seed, "ms_ssim_pairs": seed}
    if info.random_weights:
        seeds["extractor_weights"] = TINY_SEED
    return {"extractor": info.as_dict(), "image_size": info.image_size, "seeds": seeds,
            "counts": {"real": len(real), "generated": len(generated),
                       "train": None if train is None else len(train)}}


def _split(items: Sequence[EvalItem], images: Sequence[Image.Image], name: str | None) -> list[Image.Image]:
    """The images of cell ``name`` (all of them for None)."""
    return [im for it, im in zip(items, images) if name is None or cell_name(it.cell) == name]


def _add_diversity(result: dict, real: tuple, generated: tuple, *, size: int | None, max_pairs: int,
                   seed: int) -> dict:
    """MS-SSIM of each side in each cell and overall, all at one size (default: smallest side seen)."""
    size = common_size([*real[1], *generated[1]]) if size is None else size
    scales = ms_ssim_scales(size)
    targets = [*((name, result["cells"][name]) for name in result["cells"]), (None, result["overall"])]
    for name, out in targets:
        for side, key in ((generated, "ms_ssim_generated"), (real, "ms_ssim_real")):
            images = _split(*side, name)
            out[key] = mean_ms_ssim(images, size=size, max_pairs=max_pairs, seed=seed)["ms_ssim"]
        out["ms_ssim_scales"] = scales
    return {"size": size, "scales": scales, "comparable_with_paper": scales == 5, "max_pairs": max_pairs,
            "seed": seed}


def _ita(item: EvalItem, image: Image.Image, estimate: Callable | None) -> float | None:
    """The item's ITA, else ``estimate(image)`` (a float, None, or an object with ``.ita``), else None."""
    if item.ita is not None or estimate is None:
        return item.ita
    value = estimate(image)
    value = getattr(value, "ita", value)
    return None if value is None else float(value)


def _add_tone(result: dict, real: tuple, generated: tuple, estimate: Callable | None,
              categorize: Callable | None, prompted_group: Callable | None) -> None:
    """Per-cell ``tone`` entries, when any item has an ITA or ``estimate`` is given."""
    if estimate is None and all(it.ita is None for it in [*real[0], *generated[0]]):
        return
    itas = {side: [_ita(it, im, estimate) for it, im in zip(*items)]
            for side, items in (("real", real), ("generated", generated))}
    kwargs = {"categorize": categorize}
    if prompted_group is not None:
        kwargs["prompted_group"] = prompted_group
    stats = tone_stats(itas["generated"], [it.cell for it in generated[0]],
                       itas["real"], [it.cell for it in real[0]], **kwargs)
    for name, cell_stats in stats["cells"].items():
        result["cells"][name]["tone"] = cell_stats


def _add_memorisation(result: dict, module: FeatureExtractor, real: tuple, generated: tuple,
                      train: Sequence[EvalItem], *, batch_size: int, duplicates: list, copies: tuple[bool, int],
                      top_k: int, percentile: float, matches_out: list | None = None) -> dict:
    """Threshold from the held-out real images (copies of training images left out), then per-cell summaries
    of the generated images."""
    train_images = load_images(train)
    train_f = extract(module, train_images, batch_size)
    real_f, real_ff = features_with_flip(module, real[1], batch_size)
    exclude = exclusion_mask([it.group for it in real[0]], [it.group for it in train],
                             [it.image_id for it in real[0]], [it.image_id for it in train], duplicates)
    found = leakage.found_leaks(real[1], train_images, copies[1]) if copies[0] else []
    leaks = leakage.best_per_image([*leakage.listed_leaks(real[0], train, [d for d in duplicates
                                                                          if isinstance(d, tuple)]), *found])
    exclude[sorted(leaks), :] = True
    info = heldout_threshold(real_f, real_ff, train_f, exclude, percentile)
    leaked = leakage.report(leaks, real[0], train, (real_f, real_ff), train_f, info["threshold"])
    leaked["finder"] = {"near_cutoff_bits": copies[1], "near_pixels": NEAR_PIXELS} if copies[0] else None
    matches = nearest(*features_with_flip(module, generated[1], batch_size), train_f)
    add_ssim(matches, generated[1], train_images, SSIM_SIZE)
    if matches_out is not None:
        matches_out.extend(matches)
    summary = summarise(matches, [it.cell for it in generated[0]], info["threshold"], top_k)
    for part in [*summary["cells"].values(), summary["overall"]]:
        for pair in part["top"]:
            pair["generated_id"] = generated[0][pair["query"]].image_id
            pair["train_id"] = train[pair["train"]].image_id
    for name, cell_summary in summary["cells"].items():
        result["cells"][name]["memorisation"] = cell_summary
    result["overall"]["memorisation"] = summary["overall"]
    return {**info, "n_train": len(train), "ssim_size": SSIM_SIZE, "flip_checked": True, "leakage": leaked}


def closest_pairs(result: dict, generated: Sequence[EvalItem], train: Sequence[EvalItem],
                  cell: str | None = None) -> list[tuple[Image.Image, Image.Image, str]]:
    """(generated image, training image, label) for the top pairs of ``cell`` (overall for None), ready
    for ``memorization.save_pairs_png``; a flipped match shows the generated image mirrored."""
    from PIL import ImageOps

    part = result["overall"] if cell is None else result["cells"][cell]
    if "memorisation" not in part:
        raise ConfigError("this result has no memorisation figures (evaluate_sets was run without train)")
    gen_images, train_images = load_images(generated), load_images(train)
    pairs = []
    for p in part["memorisation"]["top"]:
        image = gen_images[p["query"]]
        label = f"cos {p['cosine']:.4f}  SSIM {p['ssim']:.3f}" + ("  (flipped)" if p["flipped"] else "")
        pairs.append((ImageOps.mirror(image) if p["flipped"] else image, train_images[p["train"]], label))
    return pairs


def jsonable(value: object) -> object:
    """``value`` with numpy scalars as Python numbers, tuples as lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
