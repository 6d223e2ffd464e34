"""Patient-level splits: no shared patient, reproducible, stratified; split files; the leak check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.data.splits import (
    SPLITS,
    check_no_leak,
    make_splits,
    read_split_file,
    sidecar_path,
    write_split_file,
)


def _rows(n_patients, seed, no_id_every=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        dx = rng.choice(["mel", "nev", "bcc"], p=[0.25, 0.6, 0.15])
        tone = rng.choice(["I-II", "III-IV", "V-VI"], p=[0.5, 0.3, 0.2])
        pid = None if no_id_every and p % no_id_every == 0 else f"P{p}"
        for k in range(int(rng.integers(1, 5))):
            rows.append({"file": f"img{p}_{k}.jpg", "patient": pid, "dx": str(dx), "tone": str(tone)})
    return rows


def _split_of_patient(rows, assignment):
    seen = {}
    for r in rows:
        if r["patient"] is not None:
            seen.setdefault(r["patient"], set()).add(assignment[r["file"]])
    return seen


patients = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["mel", "nev", "bcc"]), st.sampled_from(["I", "V", ""])),
    min_size=1, max_size=80)


@settings(max_examples=60, deadline=None)
@given(patients, st.integers(0, 2**16),
       st.sampled_from([(0.7, 0.15, 0.15), (0.5, 0.5, 0.0), (0.2, 0.3, 0.5)]))
def test_no_patient_in_two_splits(table, seed, fractions):
    rows = [{"file": f"f{i}.png", "patient": None if pid == 0 else f"p{pid}", "dx": dx, "tone": tone or None}
            for i, (pid, dx, tone) in enumerate(table)]
    splits = make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], fractions=fractions, seed=seed)
    assert set(splits.assignment) == {r["file"] for r in rows}
    assert all(len(s) == 1 for s in _split_of_patient(rows, splits.assignment).values())
    no_id = [r["file"] for r in rows if r["patient"] is None]
    assert splits.files_without_id == sorted(no_id) and splits.meta["n_without_id"] == len(no_id)
    if fractions[2] == 0.0:
        assert "test" not in splits.assignment.values()


def test_same_seed_same_split_other_seed_other_split():
    rows = _rows(300, seed=0)
    a = make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=5)
    assert a == make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=5)
    assert a.assignment != make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=6).assignment


def test_per_stratum_proportions_roughly_kept():
    rows = _rows(1500, seed=1)
    counts = make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=0).meta["counts"]
    strata = {k for c in counts.values() for k in c}
    assert len(strata) == 9
    for k in strata:
        total = sum(counts[s].get(k, 0) for s in SPLITS)
        for s, target in zip(SPLITS, (0.7, 0.15, 0.15)):
            assert abs(counts[s].get(k, 0) / total - target) < 0.03, (k, s)


def test_rows_without_id_are_own_group_and_said_so():
    rows = _rows(100, seed=2, no_id_every=10)
    splits = make_splits(rows, id_col="patient", strata_cols=["dx"], seed=0)
    no_id = [r["file"] for r in rows if r["patient"] is None]
    assert splits.meta["n_without_id"] == len(no_id) and "no 'patient'" in splits.meta["note"]
    assert all(splits.group_ids[f] == f"file:{f}" for f in no_id)


def test_bad_rows_and_fractions():
    with pytest.raises(DataError, match="no row has the column 'patient_id'"):
        make_splits([{"file": "a", "patient": "1"}], id_col="patient_id")
    with pytest.raises(DataError, match="rows 0 and 1 both have file 'a'"):
        make_splits([{"file": "a", "patient": "1"}, {"file": "a", "patient": "2"}], id_col="patient")
    with pytest.raises(DataError, match="row 1 has no 'file'"):
        make_splits([{"file": "a", "patient": "1"}, {"patient": "2"}], id_col="patient")
    with pytest.raises(ConfigError, match="summing to 1"):
        make_splits([{"file": "a", "patient": "1"}], id_col="patient", fractions=(0.7, 0.2, 0.2))


def test_split_file_round_trip_and_sidecar(tmp_path):
    rows = _rows(80, seed=3, no_id_every=7)
    splits = make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=9)
    path = write_split_file(tmp_path / "splits.csv", splits)
    assert path.read_text().splitlines()[0] == "file,split,group_id"
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["seed"] == 9 and meta["fractions"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert meta["id_col"] == "patient" and meta["strata_cols"] == ["dx", "tone"]
    assert sum(sum(c.values()) for c in meta["counts"].values()) == len(rows)
    back = read_split_file(path)
    assert back.assignment == splits.assignment and back.group_ids == splits.group_ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["splits.csv", "splits.json"]


def _write_raw(tmp_path, text):
    """A split CSV with a sidecar whose checksum matches, to reach the row checks."""
    import hashlib

    path = tmp_path / "s.csv"
    path.write_text(text)
    sidecar_path(path).write_text(json.dumps({"schema": "dermdiff-lora/splits/v1",
                                              "csv_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    return path


@pytest.mark.parametrize("text, pattern", [
    ("file,split\na,train\n", "line 1: header"),
    ("file,split,group_id\na,train,p1\nb,holdout,p2\n", "line 3: .* split one of train, val, test"),
    ("file,split,group_id\na,train,p1\na,test,p1\n", "line 3: file 'a' is listed twice"),
    ("file,split,group_id\na,train,p1\nb,test,p1\n",
     "line 3: patient 'p1' is in test here but in train on line 2"),
])
def test_read_split_file_names_bad_line(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern):
        read_split_file(_write_raw(tmp_path, text))


def test_read_refuses_edited_or_unpaired_file(tmp_path):
    splits = make_splits(_rows(20, seed=4), id_col="patient", strata_cols=["dx"], seed=0)
    path = write_split_file(tmp_path / "splits.csv", splits)
    path.write_text(path.read_text().replace(",test,", ",train,"))
    with pytest.raises(DataError, match="does not match the checksum"):
        read_split_file(path)
    sidecar_path(path).unlink()
    with pytest.raises(DataError, match="has no sidecar splits.json"):
        read_split_file(path)


@pytest.fixture
def split_file(tmp_path):
    rows = _rows(200, seed=5)
    return rows, write_split_file(tmp_path / "splits.csv",
                                  make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=0))


def test_leak_check_accepts_train_split(split_file):
    rows, path = split_file
    train = [f for f, s in read_split_file(path).assignment.items() if s == "train"]
    assert check_no_leak(train, path) == {"n_checked": len(train), "n_matched": len(train)}


def test_leak_check_refuses_test_patients_and_names_them(split_file):
    rows, path = split_file
    splits = read_split_file(path)
    test_files = sorted(f for f, s in splits.assignment.items() if s == "test")
    leaked = sorted({splits.group_ids[f] for f in test_files[:3]})
    train = [f for f, s in splits.assignment.items() if s == "train"]
    train += [f"/data/isic/{f}" for f in test_files[:3]]  # full paths match by base name
    with pytest.raises(DataError, match="Refusing") as err:
        check_no_leak(train, path)
    for pid in leaked:
        assert f"{pid} (test;" in str(err.value)
    # by patient id, and as rows whose file is unknown to the split but whose patient is held out
    with pytest.raises(DataError, match=leaked[0]):
        check_no_leak([leaked[0]], path, kind="id")
    with pytest.raises(DataError, match=leaked[0]):
        check_no_leak([{"file": "new.jpg", "patient": leaked[0]}], path, id_col="patient")


def test_leak_message_names_up_to_n_then_counts(split_file):
    rows, path = split_file
    splits = read_split_file(path)
    held_out = sorted({g for f, g in splits.group_ids.items() if splits.assignment[f] != "train"})
    with pytest.raises(DataError, match=f"and {len(held_out) - 5} more") as err:
        check_no_leak(held_out, path, kind="id", max_names=5)
    assert str(err.value).count(" (val;") + str(err.value).count(" (test;") == 5


def test_copies_of_one_image_under_other_patients_land_on_one_side():
    """Chains of copies across patients (a1~b1, b1~c2, and copies of rows without id): every group of copies
    on one side, and the merge counted. Without the pairs, the same seeds put some copies apart."""
    rows = _rows(90, seed=4, no_id_every=9)
    files = [r["file"] for r in rows]
    rng = np.random.default_rng(0)
    pairs = [(files[i], files[j]) for i, j in rng.integers(0, len(files), (25, 2)) if i != j]
    pairs += [("img0_0.jpg", "not_in_the_data.jpg")]
    apart = 0
    for seed in range(6):
        splits = make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=seed, duplicates=pairs)
        assert all(splits.assignment[a] == splits.assignment[b] for a, b in pairs[:-1])
        assert all(len(s) == 1 for s in _split_of_patient(rows, splits.assignment).values())
        plain = make_splits(rows, id_col="patient", strata_cols=["dx", "tone"], seed=seed)
        apart += sum(plain.assignment[a] != plain.assignment[b] for a, b in pairs[:-1])
    assert apart > 0
    group_of = {r["file"]: r["patient"] or f"file:{r['file']}" for r in rows}
    joined = {}  # the answer key: patient groups joined through the pairs, by hand
    for a, b in pairs[:-1]:
        ga, gb = joined.get(group_of[a], {group_of[a]}), joined.get(group_of[b], {group_of[b]})
        for g in ga | gb:
            joined[g] = ga | gb
    merged = {frozenset(s) for s in joined.values() if len(s) > 1}
    assert splits.meta["duplicates"] == {"pairs": len(pairs), "pairs_in_data": len(pairs) - 1,
                                         "patient_groups_merged": sum(len(s) for s in merged),
                                         "merged_into": len(merged),
                                         "units": splits.meta["n_groups"] - sum(len(s) - 1 for s in merged)}
    assert make_splits(rows, id_col="patient", seed=3, duplicates=[]).assignment == \
        make_splits(rows, id_col="patient", seed=3).assignment  # no pairs: the split as before
