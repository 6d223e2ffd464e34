"""Held-out images that copy training images (other ids, other patients): left out of the memorisation
threshold, which then equals the threshold of the held-out set without them, and reported as leakage."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from eval_synth import lesion_set, noise_set
from PIL import Image, ImageOps

from dermdiff_lora.eval.features import extract, load_extractor
from dermdiff_lora.eval.report import EvalItem, evaluate_sets

CELLS = [("benign", "lighter"), ("malignant", "darker")]


def _items(images, prefix):
    return [EvalItem(im, CELLS[i % 2], group=f"{prefix}-patient{i}", image_id=f"{prefix}{i}")
            for i, im in enumerate(images)]


def _memorisation(real, generated, train, **kwargs) -> dict:
    """evaluate_sets' memorisation entry (diversity kept cheap: it is not under test here)."""
    return evaluate_sets(real, generated, train, extractor="tiny-dinov2", ms_ssim_size=32, ms_ssim_max_pairs=1,
                         **kwargs)["memorisation"]


def _jpeg(image, quality=90):
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _cropped(image):
    """The middle three quarters of the image, resized back: a copy the duplicate finder does not find."""
    w, h = image.size
    return image.crop((w // 8, h // 8, w - w // 8, h - h // 8)).resize(image.size, Image.Resampling.BICUBIC)


def _noisy(image, rng, sigma=2.0):
    arr = np.asarray(image, dtype=np.float64) + rng.normal(0, sigma, np.asarray(image).shape)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def planted():
    """30 training photos; 24 distinct held-out photos; 11 copies of training photos filed as held-out
    images of other patients: 4 exact, 3 mirrored, 4 near (faint noise, JPEG, mirrored JPEG). (Top-bottom
    flips are found too (test_duplicates), but memorisation's similarity checks left-right mirrors only.)"""
    rng = np.random.default_rng(9)
    train = lesion_set(0, 30, size=96)
    distinct = lesion_set(1, 24, size=96)
    copies = {"copy_exact0": (0, "exact", train[0].copy()), "copy_exact1": (1, "exact", train[1].copy()),
              "copy_exact2": (2, "exact", train[2].copy()), "copy_exact3": (3, "exact", train[3].copy()),
              "copy_lr4": (4, "mirror", ImageOps.mirror(train[4])), "copy_lr5": (5, "mirror", ImageOps.mirror(train[5])),
              "copy_lr6": (6, "mirror", ImageOps.mirror(train[6])),
              "copy_noise7": (7, "near", _noisy(train[7], rng)), "copy_noise8": (8, "near", _noisy(train[8], rng)),
              "copy_jpeg9": (9, "near", _jpeg(train[9])),
              "copy_mirror_jpeg10": (10, "near", _jpeg(ImageOps.mirror(train[10])))}
    heldout = _items(distinct, "h")
    heldout += [EvalItem(im, CELLS[0], group=f"other-{name}", image_id=name) for name, (_, _, im) in copies.items()]
    return _items(train, "t"), heldout, copies, _items(noise_set(2, 6, size=96), "g")


def test_copies_leave_the_threshold_as_it_is_without_them_and_each_copy_is_above_it(planted):
    train, heldout, copies, generated = planted
    with_copies = _memorisation(heldout, generated, train)
    without = _memorisation(heldout[:24], generated, train)
    assert abs(with_copies["threshold"] - without["threshold"]) <= 1e-9
    assert with_copies["threshold"] < 1.0 and with_copies["n_heldout_used"] == 24
    leak = with_copies["leakage"]
    assert leak["count"] == 11 and leak["left_out_of_threshold"] == 11
    assert {x["heldout"]: (x["train"], x["kind"]) for x in leak["images"]} == {
        name: (f"t{i}", kind) for name, (i, kind, _) in copies.items()}
    assert leak["by_kind"] == {"exact": 4, "mirror": 3, "near": 4} and without["leakage"]["count"] == 0
    # every planted copy is above the threshold: its nearest training image by hand (image and mirror)
    module = load_extractor("tiny-dinov2")[0]
    t = extract(module, [it.image for it in train])
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    for name, (_, _, image) in copies.items():
        q = extract(module, [image, ImageOps.mirror(image)])
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        nearest = float((q @ t.T).max())
        assert nearest > with_copies["threshold"], name
        assert next(x for x in leak["images"] if x["heldout"] == name)["above_threshold"]
    # without the finder the copies set the threshold: the failure this guards against
    blind = _memorisation(heldout, generated, train, find_copies=False)
    assert blind["threshold"] > 0.9999 and blind["leakage"]["count"] == 0


def test_a_listed_pair_leaves_out_a_copy_the_pixels_do_not_show(planted):
    """A cropped copy is no pixel or pHash match; a duplicates list naming it (by its metadata
    key, through a chain of copies) still takes it out of the threshold."""
    train, heldout, _, generated = planted
    train = [EvalItem(it.image, it.cell, it.group, image_id=it.image_id, key=f"KEY_{it.image_id}") for it in train]
    cropped = EvalItem(_cropped(train[12].image), CELLS[0], group="someone", image_id="/x/cropped.png", key="CROPPED")
    real = heldout[:24] + [cropped]
    plain = _memorisation(real, generated, train)
    assert plain["leakage"]["count"] == 0 and plain["n_heldout_used"] == 25
    listed = _memorisation(real, generated, train, duplicates=[("CROPPED", "ELSEWHERE_1"), ("ELSEWHERE_1", "KEY_t12")])
    assert listed["n_heldout_used"] == 24
    assert [(x["heldout"], x["train"], x["kind"]) for x in listed["leakage"]["images"]] == [("CROPPED", "KEY_t12", "listed")]
    base = _memorisation(heldout[:24], generated, train)
    assert abs(listed["threshold"] - base["threshold"]) <= 1e-9


def _imagefolder(folder, images: dict, columns=("image_name", "patient_id", "benign_malignant", "skin_tone"),
                 metadata="metadata.csv", images_in=".", extra=None) -> None:
    """Write ``{name: image}`` as PNGs (JPEGs for an ISIC layout) with one metadata row each."""
    import csv

    (folder / images_in).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, image) in enumerate(images.items()):
        image.save(folder / images_in / (f"{name}.jpg" if images_in != "." else f"{name}.png"), quality=95)
        row = {"image_name": name, "patient_id": f"P_{name}", "benign_malignant": ("benign", "malignant")[i % 2],
               "skin_tone": str(i % 3), **(extra or {})}
        rows.append({c: row.get(c, "") for c in columns})
    with open(folder / metadata, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture()
def run(tmp_path):
    """A training folder, a saved adapter config naming it, and generated (rebalance-style) images."""
    from dermdiff_lora.core import config

    train = lesion_set(3, 16, size=48)
    _imagefolder(tmp_path / "train", {f"T{i:03d}": im for i, im in enumerate(train)})
    gen = {f"G{i}": im for i, im in enumerate(noise_set(4, 4, size=48))}
    _imagefolder(tmp_path / "gen", gen, columns=("image_name", "benign_malignant", "skin_tone", "synthetic"),
                 extra={"synthetic": "true"})
    (tmp_path / "adapter").mkdir()
    config.save(config.load(None, [f"data.dir={tmp_path / 'train'}", "data.file_column=image_name"]), tmp_path / "adapter")
    return tmp_path, train


def test_evaluate_reads_the_audits_list_finds_copies_and_warns_in_one_line(run, caplog):
    from dermdiff_lora.eval.command import EvaluateOptions, evaluate

    root, train = run
    held = {f"H{i:03d}": im for i, im in enumerate(lesion_set(5, 10, size=48))}
    held.update(H_COPY0=train[0].copy(), H_COPY1=ImageOps.mirror(train[1]), H_CROPPED=_cropped(train[2]))
    _imagefolder(root / "held", held)
    (root / "train_audit").mkdir()
    (root / "train_audit" / "duplicates.csv").write_text("id_a,id_b,kind,distance\nT002,H_CROPPED,listed,\n")
    opts = EvaluateOptions(real=str(root / "held"), generated=str(root / "gen"), adapter=str(root / "adapter"),
                           out=str(root / "ev"), extractor="tiny-dinov2")
    with caplog.at_level("WARNING"):
        memo = evaluate(opts)["memorisation"]
    leak = memo["leakage"]
    assert {(x["heldout"], x["train"], x["kind"]) for x in leak["images"]} == {
        ("H_COPY0", "T000", "exact"), ("H_COPY1", "T001", "mirror"), ("H_CROPPED", "T002", "listed")}
    assert leak["lists"]["file"] == str(root / "train_audit" / "duplicates.csv") and memo["n_heldout_used"] == 10
    warned = [r.getMessage() for r in caplog.records if "copies of training images" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0] and warned[0].startswith("3 held-out image(s)")
    assert "WARNING: 3 held-out image(s) are copies" in (root / "ev" / "eval.txt").read_text()
    saved = json.loads((root / "ev" / "eval.json").read_text())
    assert saved["memorisation"]["leakage"]["count"] == 3
    opts.duplicates, opts.overwrite = "none", True
    assert evaluate(opts)["memorisation"]["leakage"]["by_kind"] == {"exact": 1, "mirror": 1}


def test_a_presets_own_duplicate_list_reaches_evaluate(tmp_path):
    """ISIC 2020 as downloaded lists (ISIC_0000002, ISIC_9000002) as duplicates; a held-out download holding
    ISIC_9000002 (cropped: no pixel match) has it left out of the threshold."""
    from dermdiff_lora.core import config
    from dermdiff_lora.eval.command import EvaluateOptions, evaluate

    isic = ("image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
            "diagnosis", "benign_malignant", "target")
    layout = {"columns": isic, "metadata": "ISIC_2020_Training_GroundTruth_v2.csv", "images_in": "train"}
    train = {f"ISIC_{i:07d}": im for i, im in enumerate(lesion_set(3, 12, size=48))}
    _imagefolder(tmp_path / "isic", train, **layout)
    (tmp_path / "isic" / "ISIC_2020_Training_Duplicates.csv").write_text(
        "image_name_1,image_name_2\nISIC_0000002,ISIC_9000002\n")
    held = {f"ISIC_8{i:06d}": im for i, im in enumerate(lesion_set(5, 8, size=48))}
    held["ISIC_9000002"] = _cropped(train["ISIC_0000002"])
    _imagefolder(tmp_path / "isic_test", held, **layout)
    tones = tmp_path / "tones.csv"
    tones.write_text("file,category\n" + "".join(f"{k},lighter\n" for k in [*train, *held]))
    (tmp_path / "adapter").mkdir()
    config.save(config.load(None, ["data.preset=isic2020", f"data.dir={tmp_path / 'isic'}", f"data.tones={tones}"]),
                tmp_path / "adapter")
    gen = {f"G{i}": im for i, im in enumerate(noise_set(4, 4, size=48))}
    _imagefolder(tmp_path / "gen", gen, columns=("image_name", "benign_malignant", "skin_tone", "synthetic"),
                 extra={"synthetic": "true"})
    result = evaluate(EvaluateOptions(real=str(tmp_path / "isic_test"), generated=str(tmp_path / "gen"),
                                      adapter=str(tmp_path / "adapter"), out=str(tmp_path / "ev"),
                                      extractor="tiny-dinov2"))
    leak = result["memorisation"]["leakage"]
    assert [(x["heldout"], x["train"], x["kind"]) for x in leak["images"]] == [("ISIC_9000002", "ISIC_0000002", "listed")]
    assert leak["lists"]["preset_list"].endswith("ISIC_2020_Training_Duplicates.csv")
    assert result["memorisation"]["n_heldout_used"] == 8
