"""evaluate_sets end to end on small synthetic sets, and its tables and chart."""

from __future__ import annotations

import copy
import json
import os

import pytest
from eval_synth import lesion_set, noise_set
from PIL import Image, ImageOps

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.eval.memorization import save_pairs_png
from dermdiff_lora.eval.report import (
    EvalItem,
    closest_pairs,
    compare_table,
    evaluate_sets,
    format_table,
    save_chart,
)

CELLS = [("benign", "lighter"), ("malignant", "darker")]
FIELDS = {"fid", "kid_mean", "kid_std", "n_real", "n_generated", "fid_unstable", "kid_subset_size", "extractor",
          "image_size", "ms_ssim_generated", "ms_ssim_real", "ms_ssim_scales", "tone", "memorisation"}


def items(images, prefix, ita=None):
    return [EvalItem(im, CELLS[i % 2], group=f"{prefix}{i}", image_id=f"{prefix}{i}",
                     ita=None if ita is None else ita[i % 2]) for i, im in enumerate(images)]


def categorize(ita: float) -> str:
    return "darker" if ita < -30 else "lighter"


@pytest.fixture(scope="module")
def sets():
    train = items(lesion_set(0, 24), "t")
    real = items(lesion_set(1, 20), "r", ita=(40.0, -45.0))
    fakes = noise_set(2, 10) + [train[4].image.copy(), ImageOps.mirror(train[7].image)]
    generated = items(fakes, "g", ita=(35.0, 20.0))
    return real, generated, train


@pytest.fixture(scope="module")
def result(sets):
    real, generated, train = sets
    return evaluate_sets(real, generated, train, extractor="tiny-dinov2", kid_subsets=10,
                         categorize=categorize)


def test_result_is_strict_json_with_every_figure_per_cell(result):
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert list(result["cells"]) == ["benign|lighter", "malignant|darker"]
    for fig in result["cells"].values():
        assert FIELDS <= set(fig)
        assert fig["extractor"] == result["extractor"]["name"]
        assert fig["n_real"] == 10 and fig["n_generated"] == 6 and fig["fid_unstable"] is True
    assert result["counts"] == {"real": 20, "generated": 12, "train": 24}
    assert {"kid_subsets", "ms_ssim_pairs", "extractor_weights"} <= set(result["seeds"])
    assert result["ms_ssim"]["scales"] == 3 and result["ms_ssim"]["comparable_with_paper"] is False


def test_every_output_of_the_tiny_extractor_says_random_weights(result):
    assert "random" in result["extractor"]["name"] and result["extractor"]["random_weights"] is True
    assert all("random weights" in fig["extractor"] for fig in [*result["cells"].values(), result["overall"]])
    assert "RANDOM WEIGHTS" in format_table(result).splitlines()[0]


def test_memorised_copies_and_tone_land_in_their_cells(result):
    # generated #10 (copy of train 4) is in cell 0, #11 (mirror of train 7) in cell 1
    for name, (gen_id, train_id, flipped) in zip(result["cells"], [("g10", "t4", False), ("g11", "t7", True)]):
        memo = result["cells"][name]["memorisation"]
        assert memo["above_threshold"] == 1
        top = memo["top"][0]
        assert (top["generated_id"], top["train_id"], top["flipped"]) == (gen_id, train_id, flipped)
    assert result["memorisation"]["n_heldout_used"] == 20 and result["memorisation"]["flip_checked"]
    dark = result["cells"]["malignant|darker"]["tone"]
    assert dark["generated"]["in_group"] == 0.0 and dark["real"]["in_group"] == 1.0
    assert dark["wasserstein"] == pytest.approx(65.0)


def test_format_table_header_and_rows(result):
    lines = format_table(result).splitlines()
    head = lines[0]
    for text in (result["extractor"]["name"], "32 px", "real 20", "generated 12", "train 24", "seeds"):
        assert text in head
    rows = [line for line in lines if line.startswith(("benign|", "malignant|", "overall"))]
    assert len(rows) == 3 and "1/6" in rows[0]


def test_compare_table_refuses_different_setups_unless_forced(result):
    assert "FID A" in compare_table(result, result)
    other = copy.deepcopy(result)
    other["image_size"] = 224
    with pytest.raises(ConfigError, match="measured differently"):
        compare_table(result, other)
    assert "WARNING" in compare_table(result, other, force=True)
    other = copy.deepcopy(result)
    other["extractor"]["name"] = "dinov2"
    with pytest.raises(ConfigError):
        compare_table(other, result)


def test_chart_and_pairs_png_are_written_atomically(result, sets, tmp_path):
    save_chart(result, tmp_path / "fid.png")
    real, generated, train = sets
    pairs = closest_pairs(result, generated, train)
    save_pairs_png(pairs, tmp_path / "pairs.png")
    for name in ("fid.png", "pairs.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
    assert sorted(os.listdir(tmp_path)) == ["fid.png", "pairs.png"]


def test_paths_are_read_and_bad_input_is_refused(tmp_path):
    images = lesion_set(3, 4)
    paths = []
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    kw = {"extractor": "tiny-dinov2", "kid_subsets": 2}
    by_path = evaluate_sets(items(paths[:2], "r"), items(paths[2:], "g"), **kw)
    by_image = evaluate_sets(items(images[:2], "r"), items(images[2:], "g"), **kw)
    assert by_path["overall"]["fid"] == pytest.approx(by_image["overall"]["fid"])
    assert "tone" not in by_path["overall"] and "memorisation" not in by_path
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png"):
        evaluate_sets(items([tmp_path / "bad.png", paths[0]], "r"), items(paths[2:], "g"), **kw)
    with pytest.raises(ConfigError, match="at least 2"):
        evaluate_sets(items(paths[:1], "r"), items(paths[2:], "g"), **kw)
