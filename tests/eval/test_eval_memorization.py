"""Memorisation: planted copies (plain and mirrored) are flagged, unrelated images are not, and the
held-out threshold ignores same-patient images and known duplicates."""

from __future__ import annotations

import os

import numpy as np
import pytest
from eval_synth import lesion_set, noise_set
from PIL import Image, ImageOps

from dermdiff_lora.core.errors import ConfigError
from dermdiff_lora.eval.features import load_extractor
from dermdiff_lora.eval.memorization import (
    Match,
    add_ssim,
    exclusion_mask,
    features_with_flip,
    heldout_threshold,
    nearest,
    pixel_ssim,
    save_pairs_png,
    summarise,
)


@pytest.fixture(scope="module")
def tiny():
    return load_extractor("tiny-dinov2")[0]


@pytest.fixture(scope="module")
def train_set(tiny):
    images = lesion_set(0, 30)
    return images, features_with_flip(tiny, images)[0]


def test_exact_and_mirrored_copies_are_flagged_and_unrelated_images_are_not(tiny, train_set):
    train, train_f = train_set
    heldout = lesion_set(1, 30)
    threshold = heldout_threshold(*features_with_flip(tiny, heldout), train_f)["threshold"]
    generated = noise_set(2, 12) + [train[3].copy(), ImageOps.mirror(train[7])]
    matches = nearest(*features_with_flip(tiny, generated), train_f)
    add_ssim(matches, generated, train)
    flagged = [m for m in matches if m.cosine > threshold]
    assert [(m.query, m.train, m.flipped) for m in flagged] == [(12, 3, False), (13, 7, True)]
    for m in flagged:
        assert m.cosine == pytest.approx(1.0, abs=1e-6) and m.ssim == pytest.approx(1.0, abs=1e-9)
    assert max(m.cosine for m in matches[:12]) < threshold
    assert max(m.ssim for m in matches[:12]) < 0.5
    cells = [("noise",)] * 12 + [("copies",)] * 2
    out = summarise(matches, cells, threshold, top_k=3)
    assert out["cells"]["copies"]["above_threshold"] == 2 and out["cells"]["copies"]["share_above_threshold"] == 1
    assert out["cells"]["noise"]["above_threshold"] == 0
    assert out["overall"]["threshold"] == threshold and out["overall"]["share_above_threshold"] == 2 / 14
    assert [p["query"] for p in out["overall"]["top"][:2]] in ([12, 13], [13, 12])


def test_the_flip_check_finds_a_mirrored_match():
    train = np.eye(4)
    query, query_flipped = np.array([[1.0, 1.0, 0, 0]]), np.array([[0, 0, 0, 2.0]])
    [m] = nearest(query, query_flipped, train)
    assert (m.train, m.flipped, m.cosine) == (3, True, pytest.approx(1.0))
    [m] = nearest(query, query, train)
    assert (m.flipped, m.cosine) == (False, pytest.approx(np.sqrt(0.5)))


def test_exclusion_mask_is_same_patient_plus_known_duplicates():
    mask = exclusion_mask(["p1", None, "p2"], ["p1", "p2", None, "p1"], ["h0", "h1", "h2"],
                          ["t0", "t1", "t2", "t3"], duplicates=[("t2", "h1"), "t3"])
    expected = np.array([[1, 0, 0, 1],
                         [0, 0, 1, 1],
                         [0, 1, 0, 1]], dtype=bool)
    assert np.array_equal(mask, expected)
    with pytest.raises(ConfigError, match="image id"):
        exclusion_mask(["a"], ["b"], duplicates=[("a", "b")])


def test_same_patient_images_are_left_out_of_the_heldout_threshold(tiny, train_set):
    train, train_f = train_set
    # five held-out photos are of patients in the training set (here: the very same picture)
    heldout = [train[i].copy() for i in range(5)] + lesion_set(3, 15)
    h, hf = features_with_flip(tiny, heldout)
    groups_h = [f"patient{i}" for i in range(5)] + [f"new{i}" for i in range(15)]
    groups_t = [f"patient{i}" for i in range(30)]
    naive = heldout_threshold(h, hf, train_f)["threshold"]
    fair = heldout_threshold(h, hf, train_f, exclusion_mask(groups_h, groups_t))
    assert naive == pytest.approx(1.0, abs=1e-6)
    assert fair["threshold"] < 0.999 and fair["n_heldout_used"] == 20
    ids_h, ids_t = [f"h{i}" for i in range(20)], [f"t{i}" for i in range(30)]
    by_pair = exclusion_mask([None] * 20, [None] * 30, ids_h, ids_t, [(f"h{i}", f"t{i}") for i in range(5)])
    assert heldout_threshold(h, hf, train_f, by_pair)["threshold"] == pytest.approx(fair["threshold"])
    by_id = exclusion_mask([None] * 20, [None] * 30, ids_h, ids_t, [f"h{i}" for i in range(5)])
    dropped = heldout_threshold(h, hf, train_f, by_id)
    assert dropped["n_heldout_used"] == 15 and dropped["threshold"] < 0.999


def test_pixel_ssim_is_one_for_the_same_image_only():
    a, b = lesion_set(4, 2)
    assert pixel_ssim(a, a.copy()) == pytest.approx(1.0)
    assert pixel_ssim(a, b) < 0.9


def test_save_pairs_png_writes_atomically(tmp_path):
    a, b = lesion_set(5, 2)
    path = tmp_path / "pairs.png"
    path.write_bytes(b"old")
    save_pairs_png([(a, b, 0.98765), (b, a, "cos 0.5 (flipped)")], path, tile=64)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (2 * 64 + 18, 2 * (64 + 16 + 6) + 6)
    assert os.listdir(tmp_path) == ["pairs.png"]
    with pytest.raises(ConfigError):
        save_pairs_png([], tmp_path / "none.png")


def test_match_as_dict_is_json_ready():
    assert Match(0, -1, float("nan"), False).as_dict()["cosine"] is None
