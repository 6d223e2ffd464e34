"""Reader-study statistics against references: scipy's exact binomial test, scikit-learn's Cohen's kappa,
statsmodels' Fleiss' kappa, and the literature's worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from dermdiff_lora.review.stats import binomial, category_table, cohen_kappa, fleiss_kappa, mann_whitney

# Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories.
FLEISS_1971 = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def test_fleiss_kappa_matches_the_literature_and_statsmodels():
    from statsmodels.stats.inter_rater import fleiss_kappa as reference

    assert fleiss_kappa(FLEISS_1971) == pytest.approx(0.2099, abs=1e-4)
    rng = np.random.default_rng(0)
    for raters, cats in ((3, 2), (5, 3), (4, 5)):
        labels = rng.integers(0, cats, size=(40, raters))
        labels[:15] = labels[:15, :1]  # some agreement
        table = category_table(labels.tolist(), list(range(cats)))
        assert fleiss_kappa(table) == pytest.approx(reference(table, method="fleiss"), abs=1e-12)


def test_cohen_kappa_matches_the_textbook_example_and_scikit_learn():
    # Wikipedia's "Cohen's kappa" example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["real"] * 5, ["real"] * 5) is None  # undefined: nobody varies


def test_binomial_is_scipys_exact_test():
    from scipy.stats import binomtest

    assert binomial(10, 10)["p_value"] == pytest.approx(2 * 0.5 ** 10)
    out = binomial(13, 20)
    assert out["p_value"] == pytest.approx(binomtest(13, 20).pvalue) and out["accuracy"] == 0.65
    assert out["ci95"][0] < 0.65 < out["ci95"][1]
    assert binomial(0, 0)["accuracy"] is None


def test_mann_whitney_is_scipys():
    from scipy.stats import mannwhitneyu

    a, b = [1, 2, 2, 3, 4], [3, 4, 5, 5, 5, 4]
    out = mann_whitney(a, b)
    assert out["p_value"] == pytest.approx(mannwhitneyu(a, b).pvalue) and out["median_b"] == 4.5
