"""Fixed-width tables and a bar chart of ``report.evaluate_sets`` results (eval.json dicts)."""

from __future__ import annotations

import os

from ..core.errors import ConfigError
from ..core.fsutil import atomic_save
from ..data.reviewed import summary_line
from . import leakage
from .fid import FID_MIN_IMAGES

COLUMNS = (("cell", 24), ("n real", 7), ("n gen", 7), ("FID", 11), ("KID x1e3", 16),
           ("MS-SSIM gen", 12), ("MS-SSIM real", 13), ("memorised", 10), ("in group", 9),
           ("ITA gen", 8), ("ITA W1", 7))
COMPARE_COLUMNS = (("cell", 24), ("FID {a}", 11), ("FID {b}", 11), ("FID B-A", 10), ("KID x1e3 {a}", 13),
                   ("KID x1e3 {b}", 13), ("MS-SSIM {a}", 11), ("MS-SSIM {b}", 11))


def describe(result: dict) -> str:
    """One line: extractor (and whether its weights are random), image size, counts, seeds."""
    ex, counts = result["extractor"], result["counts"]
    weights = ", RANDOM WEIGHTS" if ex.get("random_weights") else ""
    train = f" / train {counts['train']}" if counts.get("train") is not None else ""
    seeds = ", ".join(f"{k}={v}" for k, v in result["seeds"].items())
    return (f"extractor {ex['name']} ({ex['model_id']}{weights}), {result['image_size']} px | "
            f"real {counts['real']} / generated {counts['generated']}{train} | seeds {seeds}")


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    """``value * scale`` formatted, or "n/a" for None."""
    return "n/a" if value is None else format(value * scale, fmt)


def _line(cells: list[str], widths: list[int]) -> str:
    """First cell left-aligned, the others right-aligned, each in its width."""
    return cells[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))


def _row(name: str, fig: dict) -> list[str]:
    """The table cells of one figures dict (``*`` after an unstable FID)."""
    fid = _num(fig.get("fid"), ".2f") + ("*" if fig.get("fid_unstable") and fig.get("fid") is not None else "")
    kid = "n/a" if fig.get("kid_mean") is None else f"{fig['kid_mean'] * 1e3:.2f}±{fig['kid_std'] * 1e3:.2f}"
    memo = fig.get("memorisation")
    memo_text = "" if memo is None else (
        "n/a" if memo["above_threshold"] is None else f"{memo['above_threshold']}/{memo['n_generated']}")
    tone = fig.get("tone", {})
    in_group = tone.get("generated", {}).get("in_group")
    mean_ita, w1 = tone.get("generated", {}).get("mean_ita"), tone.get("wasserstein")
    return [name, str(fig["n_real"]), str(fig["n_generated"]), fid, kid,
            _num(fig.get("ms_ssim_generated"), ".3f"), _num(fig.get("ms_ssim_real"), ".3f"), memo_text,
            "" if in_group is None else f"{in_group:.0%}", "" if mean_ita is None else f"{mean_ita:.1f}",
            "" if w1 is None else f"{w1:.1f}"]


def format_table(result: dict) -> str:
    """The result as a fixed-width table: a header line (extractor, image size, counts, seeds), one row per
    cell and an overall row, then notes on unstable FIDs, MS-SSIM scales and the memorisation threshold."""
    widths = [w for _, w in COLUMNS]
    head = _line([name for name, _ in COLUMNS], widths)
    review = result.get("inputs", {}).get("review")
    lines = [describe(result)] + ([f"generated: {summary_line(review)}"] if review else []) + [head, "-" * len(head)]
    lines += [_line(_row(name, fig), widths) for name, fig in result["cells"].items()]
    lines += ["-" * len(head), _line(_row("overall", result["overall"]), widths)]
    dim = result["extractor"]["dim"]
    if any("tone" in fig for fig in result["cells"].values()):
        lines.append("in group: share of generated images whose ITA lands in the prompted tone group; ITA gen: "
                     "their mean ITA (degrees); ITA W1: Wasserstein distance to the real cell's ITAs")
    lines.append(f"* FID unstable: fewer than max({FID_MIN_IMAGES}, 2 x {dim}) images on a side (FID is "
                 "biased at small N; KID is not)")
    ms = result.get("ms_ssim")
    if ms:
        paper = "" if ms["comparable_with_paper"] else ", NOT comparable with 5-scale figures"
        lines.append(f"MS-SSIM (lower = more diverse) at {ms['size']} px, {ms['scales']} scale(s){paper}")
    memo = result.get("memorisation")
    if memo:
        thr = _num(memo["threshold"], ".4f")
        lines.append(f"memorised: generated images whose nearest training image (or its mirror) has cosine > "
                     f"{thr}, the {memo['percentile']:g}th percentile over {memo['n_heldout_used']} held-out images")
        leaked = leakage.warning(memo.get("leakage") or {})
        if leaked:
            lines.append(f"WARNING: {leaked}")
    return "\n".join(lines)


def check_comparable(a: dict, b: dict, force: bool = False) -> None:
    """ConfigError unless ``a`` and ``b`` used the same extractor, model and image size (or ``force``)."""
    key_a, key_b = (_setup(r) for r in (a, b))
    if key_a != key_b and not force:
        raise ConfigError(
            f"cannot compare runs measured differently: {key_a} vs {key_b}. FID and KID depend on the feature "
            "extractor, its weights and the input size; re-run both with the same extractor, or force the "
            "comparison (force=True) knowing the numbers are not comparable")


def _setup(result: dict) -> tuple:
    """What must match for two results to be comparable: extractor name, model id, image size."""
    ex = result["extractor"]
    return ex["name"], ex["model_id"], result["image_size"]


def compare_table(a: dict, b: dict, *, labels: tuple[str, str] = ("A", "B"), force: bool = False) -> str:
    """Two results side by side per cell: FID, its change (b - a), KID and MS-SSIM of generated images.

    Refuses (ConfigError) results of different extractors, models or image sizes unless ``force``.
    """
    check_comparable(a, b, force)
    la, lb = labels
    cols = [(name.format(a="A", b="B"), w) for name, w in COMPARE_COLUMNS]  # labels stay short in headers
    widths = [w for _, w in cols]
    head = _line([name for name, _ in cols], widths)
    lines = [f"A = {la}: {describe(a)}", f"B = {lb}: {describe(b)}", head, "-" * len(head)]
    names = list(dict.fromkeys([*a["cells"], *b["cells"]])) + ["overall"]
    for name in names:
        fa, fb = (r["overall"] if name == "overall" else r["cells"].get(name, {}) for r in (a, b))
        delta = None if fa.get("fid") is None or fb.get("fid") is None else fb["fid"] - fa["fid"]
        lines.append(_line([name, _num(fa.get("fid"), ".2f"), _num(fb.get("fid"), ".2f"), _num(delta, "+.2f"),
                            _num(fa.get("kid_mean"), ".2f", 1e3), _num(fb.get("kid_mean"), ".2f", 1e3),
                            _num(fa.get("ms_ssim_generated"), ".3f"), _num(fb.get("ms_ssim_generated"), ".3f")],
                           widths))
    if _setup(a) != _setup(b):
        lines.append("WARNING: forced comparison of runs with different extractors or image sizes")
    return "\n".join(lines)


def save_chart(result: dict, path: str | os.PathLike) -> None:
    """Bar chart of FID per cell (hatched: unstable; missing: n/a) as a PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result["cells"])
    values = [result["cells"][n].get("fid") for n in names]
    fig = Figure(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), [0.0 if v is None else v for v in values], color="#4c72b0")
    for bar, name, value in zip(bars, names, values):
        if result["cells"][name].get("fid_unstable"):
            bar.set_hatch("//")
        if value is None:
            ax.text(bar.get_x() + bar.get_width() / 2, 0, "n/a", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("FID (lower = closer to real)")
    ex = result["extractor"]
    ax.set_title(f"FID per cell: {ex['name']}, {result['image_size']} px (hatched: unstable)", fontsize=9)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
