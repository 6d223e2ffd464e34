"""``downstream`` end to end on small made-up datasets: outputs and what they name, known answers, the
threshold record, the leak check and clear errors."""

from __future__ import annotations

import csv
import json

import pytest
from downstream_data import colour_dataset, fake_rebalance, read_rows, saved_adapter, subset, write_rows

from dermdiff_lora.cli import app
from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.data.splits import read_split_file
from dermdiff_lora.downstream.classifier import ClassifierSpec
from dermdiff_lora.downstream.command import DownstreamOptions, downstream
from dermdiff_lora.downstream.fairness import choose_threshold
from dermdiff_lora.downstream.samples import split_dataset

TINY = ClassifierSpec(extractor="tiny-dinov2")


def _setup(root, labels, label_column="benign_malignant"):
    """Dataset, split file, train-only copy, an adapter trained on it, a rebalance folder of the copy."""
    ds = colour_dataset(root / "ds", labels, label_column=label_column)
    split = root / "split.csv"
    split_dataset(ds, split, diagnosis_column=label_column, fractions=(0.6, 0.2, 0.2))
    assignment = read_split_file(split).assignment
    train = subset(ds, root / "train", lambda r: assignment[r["image_name"]] == "train")
    return {"ds": ds, "split": split, "train": train, "adapter": saved_adapter(root / "adapter", train),
            "synthetic": fake_rebalance(train, root / "rebalanced", n=6), "assignment": assignment}


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    setup = _setup(root, ("benign", "malignant"))
    out = root / "out"
    code = app.main(["downstream", str(setup["ds"]), "--split", str(setup["split"]), "--synthetic",
                     str(setup["synthetic"]), "--adapter", str(setup["adapter"]), "--out", str(out),
                     "--extractor", "tiny-dinov2", "--n-boot", "50"])
    assert code == 0
    return setup, out, json.loads((out / "downstream.json").read_text())


def test_outputs_name_classifier_model_size_seeds_split_and_counts(binary):
    setup, out, result = binary
    for name in ("downstream.json", "downstream.txt", "downstream.png"):
        assert (out / name).is_file(), name
    assert result["classifier"]["classifier"] == "probe"
    assert result["classifier"]["model_id"] == "random-init:tiny-dinov2-seed0"
    assert result["classifier"]["image_size"] == 32 and result["classifier"]["random_weights"]
    assert result["seeds"] == [0, 1, 2]
    sidecar = json.loads(setup["split"].with_suffix(".json").read_text())
    assert result["split_file"] == {**result["split_file"], "path": str(setup["split"]),
                                    "sha256": sidecar["csv_sha256"]}
    n_train = sum(v == "train" for v in setup["assignment"].values())
    assert result["counts"]["train"] == {"real_only": n_train, "real_resample": n_train + 6,
                                         "real_lab": result["counts"]["train"]["real_lab"],
                                         "real_plus_synthetic": n_train + 6}
    assert result["counts"]["test"] == sum(v == "test" for v in setup["assignment"].values())
    text = (out / "downstream.txt").read_text()
    assert sidecar["csv_sha256"] in text and "tiny-dinov2" in text and "seeds 0, 1, 2" in text
    assert "real + synthetic" in text and "worst-group AUC" in text
    for arm in ("real_only", "real_resample", "real_lab", "real_plus_synthetic"):
        assert len(result["arms"][arm]["per_seed"]) == 3
        assert [r["n_train"] for r in result["arms"][arm]["per_seed"]] == [result["counts"]["train"][arm]] * 3
        assert len(list((out / "predictions").glob(f"{arm}_seed*_*.csv"))) == 9  # val, test, counterfactual


def test_known_answer_separable_images_reach_auc_one_in_every_group(binary):
    _, _, result = binary
    for arm in ("real_only", "real_plus_synthetic"):
        report = result["arms"][arm]["report"]
        assert report["overall"]["metrics"]["auc"]["value"] == 1.0
        assert report["groups"] == ["lighter", "brown", "darker"]  # the value map's order
        for group in report["groups"]:
            assert report["per_group"][group]["metrics"]["auc"]["value"] == 1.0


def test_threshold_chosen_on_val_is_recorded_and_matches_the_saved_predictions(binary, capsys):
    _, out, result = binary
    assert result["threshold"]["setting"] == "youden" and result["threshold"]["chosen_on"] == "validation split"
    first = result["arms"]["real_only"]["per_seed"][0]
    th = first["threshold"]
    assert th["method"] == "youden" and th["chosen_on"].startswith("validation split")
    assert th["n"] == result["counts"]["val"]  # chosen on the validation images, never on test
    val = list(csv.DictReader(open(out / "predictions" / "real_only_seed0_val.csv")))
    again = choose_threshold([int(r["label"]) for r in val], [float(r["score"]) for r in val], "youden")
    assert again["value"] == th["value"] and again["youden_j"] == th["youden_j"]
    assert result["threshold"]["by_seed"]["real_only"][0] == th["value"]
    # `fairness` on the saved predictions, at the recorded threshold, reproduces the per-seed report
    capsys.readouterr()
    assert app.main(["fairness", str(out / "predictions" / "real_only_seed0_test.csv"), "--threshold",
                     repr(th["value"]), "--n-boot", "50", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    for group in first["groups"]:
        for metric in ("sensitivity", "specificity", "balanced_accuracy", "auc"):
            assert again["per_group"][group]["metrics"][metric] == first["per_group"][group]["metrics"][metric]


def test_fixed_threshold_is_recorded_and_training_only_limits_do_not_shrink_the_dataset(binary, tmp_path):
    setup, _, full = binary
    quick = saved_adapter(tmp_path / "quick", setup["train"], "data.max_samples=5")  # a quick adapter run
    opts = DownstreamOptions(dataset=str(setup["ds"]), split=str(setup["split"]), synthetic=str(setup["synthetic"]),
                             out=str(tmp_path / "fixed"), adapter=str(quick), classifier=TINY,
                             seeds=[4], threshold="0.5", n_boot=0)
    result = downstream(opts)
    assert result["counts"] == full["counts"] and result["leak_check"]["n_checked"] == 5
    report = result["arms"]["real_plus_synthetic"]["report"]
    assert report["threshold"]["method"] == "fixed" and report["threshold"]["value"] == 0.5
    assert result["threshold"]["chosen_on"] == "fixed on the command line"
    assert result["seeds"] == [4] and any("only 1 seed" in w for w in result["warnings"])


def test_multiclass_label_is_reported_per_class(tmp_path):
    setup = _setup(tmp_path, ("benign", "malignant", "nevus"), label_column="dx")
    result = downstream(DownstreamOptions(
        dataset=str(setup["ds"]), split=str(setup["split"]), synthetic=str(setup["synthetic"]),
        out=str(tmp_path / "out"), adapter=str(setup["adapter"]), classifier=TINY, label_column="dx",
        n_boot=20))
    assert result["task"] == "multiclass" and result["classes"] == ["benign", "malignant", "nevus"]
    report = result["arms"]["real_only"]["report"]
    assert set(report["overall"]["metrics"]["auc_ovr"]) == {"benign", "malignant", "nevus"}
    assert report["overall"]["metrics"]["balanced_accuracy"]["value"] == 1.0
    assert all(e["value"] == 1.0 for e in report["overall"]["metrics"]["auc_ovr"].values())
    assert "AUC nevus vs rest" in (tmp_path / "out" / "downstream.txt").read_text()
    header = (tmp_path / "out" / "predictions" / "real_only_seed0_test.csv").read_text().splitlines()[0]
    assert header == "file,label,group,score_benign,score_malignant,score_nevus"


def test_adapter_trained_on_test_patients_is_refused_naming_them(binary, tmp_path, capsys):
    setup, _, _ = binary
    leaky = saved_adapter(tmp_path / "leaky", setup["ds"])  # trained on the whole dataset
    test_patients = {r["patient_id"] for r in read_rows(setup["ds"])
                     if setup["assignment"][r["image_name"]] == "test"}
    code = app.main(["downstream", str(setup["ds"]), "--split", str(setup["split"]), "--synthetic",
                     str(setup["synthetic"]), "--adapter", str(leaky), "--out", str(tmp_path / "o"),
                     "--extractor", "tiny-dinov2"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error:") and "Traceback" not in err
    assert "Refusing" in err and any(p in err for p in test_patients)
    assert not (tmp_path / "o" / "downstream.json").exists()


def test_missing_adapter_unknown_synthetic_label_and_unsplit_image_are_clear_errors(binary, tmp_path):
    setup = binary[0]
    base = dict(dataset=str(setup["ds"]), split=str(setup["split"]), out=str(tmp_path / "o"), classifier=TINY)
    with pytest.raises(ConfigError, match="--adapter"):
        downstream(DownstreamOptions(synthetic=str(setup["synthetic"]), **base))
    odd = fake_rebalance(setup["train"], tmp_path / "odd", n=2)
    rows = read_rows(odd)
    rows[-1]["benign_malignant"] = "nevus"
    write_rows(odd, rows)
    with pytest.raises(DataError, match="nevus"):
        downstream(DownstreamOptions(synthetic=str(odd), adapter=str(setup["adapter"]), **base))
    extra = subset(setup["ds"], tmp_path / "extra", lambda r: True)
    (extra / "IMG_9999.png").write_bytes((extra / "IMG_0000.png").read_bytes())
    write_rows(extra, read_rows(extra) + [{**read_rows(extra)[0], "image_name": "IMG_9999"}])
    with pytest.raises(DataError, match="not in split file.*IMG_9999"):
        downstream(DownstreamOptions(**{**base, "dataset": str(extra)}, synthetic=str(setup["synthetic"]),
                                     adapter=str(setup["adapter"])))


def test_card_shows_the_downstream_table(binary, trained_lora, tmp_path):
    from dermdiff_lora.hub.card import build_card

    _, out, _ = binary
    card = build_card(trained_lora, downstream=out / "downstream.json")
    assert "## Downstream fairness" in card and "real + synthetic" in card and "Split file:" in card
    assert "## Downstream fairness" not in build_card(trained_lora)


def _opts(setup, out, adapter, **kwargs):
    return DownstreamOptions(dataset=str(setup["ds"]), split=str(setup["split"]), synthetic=str(setup["synthetic"]),
                             out=str(out), adapter=str(adapter), classifier=TINY, seeds=[0], threshold="0.5",
                             n_boot=0, **kwargs)


def _in(setup, part):
    return sorted(f for f, s in setup["assignment"].items() if s == part)


def test_adapter_trained_on_the_test_part_of_a_split_file_is_refused_and_the_train_part_checked(binary, tmp_path):
    setup = binary[0]
    rows = {r["image_name"]: r for r in read_rows(setup["ds"])}
    on_test = saved_adapter(tmp_path / "on_test", setup["ds"], f"data.split_file={setup['split']}",
                            "data.split_part=test")
    with pytest.raises(DataError, match="Refusing") as err:
        downstream(_opts(setup, tmp_path / "o", on_test))
    assert all(rows[f]["patient_id"] in str(err.value) for f in _in(setup, "test")[:3])
    on_train = saved_adapter(tmp_path / "on_train", setup["ds"], f"data.split_file={setup['split']}",
                             "data.split_part=train")
    copies = tmp_path / "copies.csv"  # a val image and a test image are copies: the split lets them cross
    copies.write_text(f"id_a,id_b,kind,distance\n{_in(setup, 'val')[0]},{_in(setup, 'test')[0]},exact,0\n")
    result = downstream(_opts(setup, tmp_path / "o", on_train, duplicates=str(copies)))
    leak = result["leak_check"]
    assert leak["n_checked"] == leak["n_matched"] == len(_in(setup, "train"))
    assert leak["n_duplicate_pairs"] == 1 and leak["duplicates"]["copies_crossing_split"] == 1
    assert any("1 group(s) of copies" in w for w in result["warnings"])
    assert "1 pairs of copies checked" in (tmp_path / "o" / "downstream.txt").read_text()


def test_a_check_that_matches_no_training_image_is_an_error_naming_why(binary, tmp_path):
    setup = binary[0]
    other = subset(setup["train"], tmp_path / "other", lambda r: True)
    rows = read_rows(other)
    for r in rows:
        (other / f"{r['image_name']}.png").rename(other / f"OTHER_{r['image_name']}.png")
        r["image_name"], r["patient_id"] = f"OTHER_{r['image_name']}", f"X{r['patient_id']}"
    write_rows(other, rows)
    with pytest.raises(DataError, match=f"none of the adapter's {len(rows)} training images .*OTHER_IMG") as err:
        downstream(_opts(setup, tmp_path / "o", saved_adapter(tmp_path / "a", other)))
    assert str(setup["split"]) in str(err.value) and not (tmp_path / "o" / "downstream.json").exists()


def test_an_adapter_trained_on_a_copy_of_a_test_image_is_refused_when_the_copy_is_listed(binary, tmp_path):
    setup = binary[0]
    victim = _in(setup, "test")[0]
    victim_patient = next(r["patient_id"] for r in read_rows(setup["ds"]) if r["image_name"] == victim)
    train = subset(setup["train"], tmp_path / "train", lambda r: True)
    (train / "RENAMED.png").write_bytes((setup["ds"] / f"{victim}.png").read_bytes())
    write_rows(train, read_rows(train) + [{**read_rows(train)[0], "image_name": "RENAMED", "patient_id": "NEW"}])
    adapter = saved_adapter(tmp_path / "a", train)
    copies = tmp_path / "copies.csv"
    copies.write_text(f"id_a,id_b,kind,distance\n{victim},RENAMED,exact,0\n")
    with pytest.raises(DataError, match=f"{victim_patient} \\(test; RENAMED \\(a copy of {victim}\\)\\)"):
        downstream(_opts(setup, tmp_path / "o", adapter, duplicates=str(copies)))
    unlisted = downstream(_opts(setup, tmp_path / "o", adapter, duplicates="none"))  # what the list guards
    assert unlisted["leak_check"]["duplicates"]["file"] is None
