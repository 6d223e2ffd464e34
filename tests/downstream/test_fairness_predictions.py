"""Fairness reports from predictions CSVs, and one clear DataError per kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.downstream.predictions import fairness_from_csv, multiclass_from_csv

GOOD = """label,score,group
1,0.9,light
benign,0.2,light
Malignant,0.7,dark
FALSE,0.4,dark
0,0.6,dark
true,0.3,light
"""


def _csv(tmp_path, text, name="preds.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_label_spellings_and_report(tmp_path):
    rep = fairness_from_csv(_csv(tmp_path, GOOD), n_boot=20)
    assert rep["groups"] == ["dark", "light"]
    assert rep["per_group"]["light"]["n_positive"] == 2 and rep["per_group"]["dark"]["n_positive"] == 1
    # light: scores 0.9 (mal), 0.2 (ben), 0.3 (mal) at 0.5 -> sensitivity 1/2, specificity 1
    light = rep["per_group"]["light"]["metrics"]
    assert light["sensitivity"]["value"] == 0.5 and light["specificity"]["value"] == 1.0
    assert rep["source"]["path"].endswith("preds.csv")


def test_custom_columns_and_youden_on_validation(tmp_path):
    text = GOOD.replace("label,score,group", "y,p_mal,fitzpatrick")
    test = _csv(tmp_path, text)
    val = _csv(tmp_path, text, "val.csv")
    rep = fairness_from_csv(test, label_col="y", score_col="p_mal", group_col="fitzpatrick",
                            threshold="youden", val_path=val, n_boot=0)
    assert rep["threshold"]["method"] == "youden" and rep["threshold"]["chosen_on"] == str(val)
    with pytest.raises(ConfigError, match="val_path"):
        fairness_from_csv(test, label_col="y", score_col="p_mal", group_col="fitzpatrick", threshold="youden")


@pytest.mark.parametrize("text, pattern", [
    ("", "is empty"),
    ("label,score,group\n", "header but no rows"),
    ("label,prob,group\n1,0.5,a\n", "no column 'score'; columns present: label, prob, group"),
    ("label,score,group\n1,0.5,a\n0,1.3,a\n", r"row 2 \(line 3\), column 'score': value '1.3' is outside"),
    ("label,score,group\n1,0.5,a\n0,high,a\n1,x,a\n",
     r"row 2 \(line 3\), column 'score': value 'high' is not a number \(and 1 more bad row\)"),
    ("label,score,group\n1,0.5,a\nmaybe,0.1,a\n",
     r"row 2 \(line 3\), column 'label': value 'maybe' is not a"),
    ("label,score,group\n1,0.5,a\n0,0.1,\n", r"row 2 \(line 3\), column 'group': value '' is empty"),
])
def test_bad_csv_gives_one_data_error_naming_file_and_place(tmp_path, text, pattern):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as err:
        fairness_from_csv(path, n_boot=0)
    assert str(path) in str(err.value)


def test_missing_file_and_group_without_rows(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        fairness_from_csv(tmp_path / "nope.csv")
    present = "'V-VI' have no rows .*groups present in column 'group': dark, light"
    with pytest.raises(DataError, match=present):
        fairness_from_csv(_csv(tmp_path, GOOD), expected_groups=["light", "dark", "V-VI"], n_boot=0)


def test_multiclass_csv(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["label,group,score_mel,score_nv,score_bcc"]
    for i in range(60):
        p = rng.dirichlet([1, 1, 1])
        lines.append(f"{['mel', 'NV', '2'][i % 3]},{'ab'[i % 2]},{p[0]:.4f},{p[1]:.4f},{p[2]:.4f}")
    path = _csv(tmp_path, "\n".join(lines) + "\n")
    rep = multiclass_from_csv(path, n_boot=10)
    assert rep["classes"] == ["mel", "nv", "bcc"]
    assert rep["per_group"]["a"]["class_counts"] == {"mel": 10, "nv": 10, "bcc": 10}
    assert rep["source"]["score_cols"] == ["score_mel", "score_nv", "score_bcc"]
    bad = _csv(tmp_path, "label,group,score_mel,score_nv\nscc,a,0.5,0.5\n", "bad.csv")
    bad_label = r"row 1 \(line 2\), column 'label': value 'scc' is not a known class"
    with pytest.raises(DataError, match=bad_label):
        multiclass_from_csv(bad)
    with pytest.raises(DataError, match="found 0 score column"):
        multiclass_from_csv(_csv(tmp_path, "label,group,p\nmel,a,0.5\n", "none.csv"))


def test_spreadsheet_byte_order_mark_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert fairness_from_csv(path, n_boot=0)["overall"]["n"] == 6
