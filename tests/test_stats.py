"""Paired tests and Holm's correction on inputs whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.report.stats import holm, paired_test, rank_biserial, verdict


def test_holm_known_example():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_holm_matches_r_p_adjust():
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") -> 0.05 0.08 0.09 0.09 0.09
    np.testing.assert_allclose(holm([0.05, 0.01, 0.04, 0.02, 0.03]), [0.09, 0.05, 0.09, 0.08, 0.09])
    np.testing.assert_allclose(holm([0.6, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).size == 0


def test_identical_samples_give_p_one():
    a = np.random.default_rng(0).random(50)
    result = paired_test(a, a.copy())
    assert result.wilcoxon_p == 1.0 and result.t_p == 1.0
    assert result.mean_diff == 0.0 and result.cohen_dz == 0.0 and result.rank_biserial == 0.0
    assert verdict(result.mean_diff, result.wilcoxon_p) == "no significant difference"


def test_clear_shift_gives_small_p_and_direction():
    rng = np.random.default_rng(1)
    b = rng.random(80)
    a = b + 0.3 + rng.normal(0, 0.05, 80)
    result = paired_test(a, b)
    assert result.n == 80
    assert result.wilcoxon_p < 1e-10 and result.t_p < 1e-10
    assert result.mean_diff == pytest.approx(float(np.mean(a - b)))
    diff = a - b
    assert result.cohen_dz == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert result.rank_biserial == 1.0  # every difference positive
    assert verdict(result.mean_diff, result.wilcoxon_p, higher_is_better=True) == "better"
    # for an error metric (lower is better) the same shift is worse
    assert verdict(result.mean_diff, result.wilcoxon_p, higher_is_better=False) == "worse"


def test_rank_biserial_by_hand():
    # |d| = 1, 2, 3 -> ranks 1, 2, 3; positive ranks 1 + 3, negative 2 -> (4 - 2) / 6
    assert rank_biserial(np.array([1.0, -2.0, 3.0, 0.0])) == pytest.approx(2 / 6)


def test_constant_shift_is_certain_and_mismatched_lengths_refused():
    b = np.arange(10, dtype=float)
    result = paired_test(b + 1, b)
    assert result.t_p == 0.0 and result.wilcoxon_p < 0.01
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])


def test_not_significant_shift_is_no_difference():
    rng = np.random.default_rng(2)
    b = rng.random(30)
    a = b + rng.normal(0, 0.2, 30)  # noise only
    result = paired_test(a, b)
    assert result.wilcoxon_p > 0.05
    assert verdict(result.mean_diff, result.wilcoxon_p) == "no significant difference"


def test_per_unit_means_give_one_row_per_user():
    import pandas as pd

    from benchmark.report.stats import per_unit_means

    table = pd.DataFrame({"user": [1, 1, 2, 2, 2], "seed": [0, 1, 0, 1, 2], "ndcg": [0.2, 0.4, 1.0, 0.5, 0.0]})
    means = per_unit_means(table, ["ndcg", "absent"])
    assert means.index.tolist() == [1, 2] and list(means.columns) == ["ndcg"]
    assert means["ndcg"].tolist() == pytest.approx([0.3, 0.5])


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    from benchmark.report.stats import bootstrap_ci

    diff = np.random.default_rng(0).normal(0.05, 0.2, 400)
    low, high = bootstrap_ci(diff, seed=3)
    assert (low, high) == bootstrap_ci(diff, seed=3)
    assert low < diff.mean() < high
    # the normal-theory interval of a mean is close to the bootstrap's for 400 draws
    half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert low == pytest.approx(diff.mean() - half, abs=0.006) and high == pytest.approx(diff.mean() + half, abs=0.006)
    assert bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25)
