"""The duplicate finder on images drawn here: exact, mirrored and near copies found under other ids, distinct
images never paired; the pHash against its definition; duplicates.csv and a dataset's own list read back."""

from __future__ import annotations

import io

import numpy as np
import pytest
from drawn_images import lesion_photo
from PIL import Image
from scipy.fft import idct

from dermdiff_lora.core.errors import DataError
from dermdiff_lora.data import duplicates as dup


def photo(rng: np.random.Generator, size: int = 96) -> Image.Image:
    return lesion_photo(rng, size)


def reencoded(image: Image.Image, quality: int = 85) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def noisy(image: Image.Image, rng: np.random.Generator, sigma: float = 3.0) -> Image.Image:
    arr = np.asarray(image).astype(np.float64) + rng.normal(0, sigma, np.asarray(image).shape)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def planted():
    """40 distinct photos, then copies of some of them under other ids (the answer key beside them)."""
    rng = np.random.default_rng(11)
    images = [photo(rng) for _ in range(40)]
    images[10] = images[10].crop((0, 0, 96, 72))  # not square: a quarter turn changes its shape
    ids = [f"IMG_{i:02d}" for i in range(40)]
    copies = {"COPY_exact": (0, "exact", images[0].copy()),
              "COPY_lr": (1, "mirror", images[1].transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
              "COPY_tb": (2, "mirror", images[2].transpose(Image.Transpose.FLIP_TOP_BOTTOM)),
              "COPY_180": (3, "mirror", images[3].transpose(Image.Transpose.ROTATE_180)),
              "COPY_jpeg": (4, "near", reencoded(images[4])),
              "COPY_noise": (5, "near", noisy(images[5], rng)),
              "COPY_mirror_jpeg": (6, "near", reencoded(images[6].transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90)),
              "COPY_small": (7, "near", images[7].resize((80, 80), Image.Resampling.BICUBIC)),
              # quarter turns: found by the near search (their pixels are not hashed)
              "COPY_rot90": (8, "near", images[8].transpose(Image.Transpose.ROTATE_90)),
              "COPY_transposed_jpeg": (9, "near", reencoded(images[9].transpose(Image.Transpose.TRANSPOSE))),
              "COPY_rot270_oblong": (10, "near", images[10].transpose(Image.Transpose.ROTATE_270)),
              "COPY_antitransposed": (11, "near", images[11].transpose(Image.Transpose.TRANSVERSE))}
    return ids, images, copies


def test_exact_mirrored_and_near_copies_are_found_under_other_ids(planted):
    ids, images, copies = planted
    all_ids = ids + list(copies)
    prints = [dup.fingerprint(im) for im in images + [c[2] for c in copies.values()]]
    found = {frozenset((p.id_a, p.id_b)): p for p in dup.find_duplicates(all_ids, prints)}
    expected = {frozenset((ids[i], name)): kind for name, (i, kind, _) in copies.items()}
    assert {k: p.kind for k, p in found.items()} == expected
    assert all(p.distance == 0 for p in found.values() if p.kind == "exact")
    assert all(0 <= p.distance <= dup.NEAR_CUTOFF for p in found.values())
    # across two sets: each copy (query) against the originals (reference), nothing else
    across = dup.find_between(list(copies), prints[40:], ids, prints[:40])
    assert {(p.id_a, p.id_b, p.kind) for p in across} == {(n, ids[i], k) for n, (i, k, _) in copies.items()}


def test_distinct_images_are_never_paired():
    rng = np.random.default_rng(5)
    images = [photo(rng) for _ in range(150)] + [photo(rng, 48) for _ in range(50)]
    noise = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(30)]
    prints = [dup.fingerprint(im) for im in images + noise]
    assert dup.find_duplicates([str(i) for i in range(len(prints))], prints) == []


def test_lesions_of_one_shape_on_one_skin_are_not_near_copies(tmp_path):
    """The package's synthetic lesions share their layout (pHash alone pairs many): the pixel check keeps
    them apart."""
    from dermdiff_lora.tone.synthetic import make_dataset

    folder = make_dataset(tmp_path / "ds", n=80, size=64, seed=3)
    files = sorted(folder.glob("*.png"))
    prints = [dup.fingerprint(Image.open(f)) for f in files]
    by_hash = sum(dup.hamming(a.phash, b.phash) <= dup.NEAR_CUTOFF for i, a in enumerate(prints) for b in prints[i + 1:])
    assert by_hash > 0  # the hash alone would pair distinct lesions here
    assert dup.find_duplicates([f.name for f in files], prints) == []


def test_phash_is_the_sign_of_the_low_dct_coefficients_against_their_median():
    """Build a 32x32 image from chosen DCT coefficients: its hash bits are those coefficients > median."""
    rng = np.random.default_rng(2)
    coeffs = np.zeros((32, 32))
    coeffs[:8, :8] = rng.permutation(np.arange(64)).reshape(8, 8) - 31.5  # distinct values, median 0
    gray = idct(idct(coeffs, axis=1), axis=0)
    bits = "".join("1" if c > 0 else "0" for c in coeffs[:8, :8].ravel())
    assert dup.phash_bits(gray) == int(bits, 2)
    flipped = dup.phash_bits(gray[:, ::-1])  # a mirror flips the sign of odd horizontal frequencies
    low = coeffs[:8, :8] * np.where(np.arange(8) % 2, -1, 1)[None, :]
    assert flipped == int("".join("1" if c > np.median(low) else "0" for c in low.ravel()), 2)


def test_union_find_joins_chains_into_groups():
    sets = dup.group_sets([("a", "b"), ("c", "d"), ("b", "c"), ("x", "y")])
    groups = sorted(sorted(g) for g in sets.groups())
    assert groups == [["a", "b", "c", "d"], ["x", "y"]]
    assert not sets.union("a", "d") and sets.union("a", "x")


def test_csv_round_trip_merge_with_a_known_list_and_bad_rows(tmp_path):
    pairs = [dup.Pair("a.png", "b.png", "exact", 0), dup.Pair("c.png", "d.png", "near", 3)]
    known = tmp_path / "ISIC_2020_Training_Duplicates.csv"
    known.write_text("image_name_1,image_name_2\nd.png,c.png\ne.png,f.png\n")
    merged = dup.merge(pairs, dup.read_known_list(known))
    assert merged == [*pairs, dup.Pair("e.png", "f.png", "listed", None)]
    path = dup.write_csv(tmp_path / "duplicates.csv", merged)
    assert path.read_text().splitlines() == ["id_a,id_b,kind,distance", "a.png,b.png,exact,0",
                                             "c.png,d.png,near,3", "e.png,f.png,listed,"]
    assert dup.read_csv(path) == merged
    path.write_text("id_a,id_b,kind,distance\na,b,exact,0\na,c,similar,2\n")
    with pytest.raises(DataError, match="line 3"):
        dup.read_csv(path)
    known.write_text("first,second\na,b\n")
    with pytest.raises(DataError, match="image_name_1"):
        dup.read_known_list(known)


def test_the_file_is_found_beside_the_tones_else_beside_the_dataset(tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    assert dup.locate(None, dirs=[str(data)]) is None
    audit = dup.audit_folder(data)
    audit.mkdir()
    (audit / "duplicates.csv").write_text("id_a,id_b,kind,distance\n")
    assert dup.locate(None, dirs=[str(data)]) == audit / "duplicates.csv"
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "duplicates.csv").write_text("id_a,id_b,kind,distance\n")
    assert dup.locate(None, tones=str(other / "tones.csv"), dirs=[str(data)]) == other / "duplicates.csv"
    assert dup.locate("none", dirs=[str(data)]) is None
    with pytest.raises(DataError, match="no such file"):
        dup.locate(str(tmp_path / "missing.csv"))


def test_the_cut_offs_stated_in_the_readme_and_the_help_are_the_codes():
    from pathlib import Path

    root = Path(__file__).parents[2]
    readme = " ".join((root / "README.md").read_text().split())
    assert f"within **{dup.NEAR_CUTOFF} of 64 bits** (Hamming)" in readme
    assert f"at most **{dup.NEAR_PIXELS:g} levels of 255**" in readme
    assert f"pHash <= {dup.NEAR_CUTOFF} of 64 bits" in (root / "dermdiff_lora" / "cli" / "evaluate.py").read_text()
