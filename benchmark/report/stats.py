"""Paired significance tests for the report: two models scored on the same users and splits.

The unit is the user: ``per_unit_means`` averages each user's per-seed (and per-fold) values
first, so a comparison has one pair per user (seeds re-split the same users: their rows are not
independent). ``paired_test`` runs the Wilcoxon signed-rank test and the paired t-test (scipy) on the
per-user differences ``a - b`` and gives effect sizes (mean difference, Cohen's d_z and the
matched-pairs rank-biserial correlation). ``holm`` adjusts a family of p-values (Holm 1979,
step-down); statsmodels is not a dependency, and the procedure is a few lines.
``bootstrap_ci`` is the paired bootstrap CI of the mean difference over users (scipy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000   # enough for a 95% percentile-type interval; keeps the report fast


@dataclass(frozen=True)
class PairedResult:
    n: int                  # pairs present for both models (users, once averaged over seeds and folds)
    mean_a: float
    mean_b: float
    mean_diff: float        # mean of a - b
    cohen_dz: float         # mean(a - b) / sd(a - b); 0 when every difference is 0
    rank_biserial: float    # (R+ - R-) / (R+ + R-) over non-zero differences, in [-1, 1]
    wilcoxon_stat: float
    wilcoxon_p: float
    t_stat: float
    t_p: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values, in the input order: p_(i) * (m - i + 1), made monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    adjusted = np.empty_like(p)
    # an adjusted p-value may never be below one of a smaller raw p-value (step-down)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014): the Wilcoxon test's effect size."""
    nonzero = diff[diff != 0]
    if nonzero.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def paired_test(a, b) -> PairedResult:
    """Wilcoxon signed-rank and paired t-test of a vs b (two-sided); identical samples give p = 1."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {a.shape} and {b.shape}")
    diff = a - b
    n = int(diff.size)
    mean_diff = float(diff.mean()) if n else float("nan")
    sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
    if n == 0:
        nan = float("nan")
        return PairedResult(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    if not np.any(diff):
        # no difference at all: both tests are undefined (0/0); no evidence of a difference
        return PairedResult(n, float(a.mean()), float(b.mean()), 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0)
    wilcoxon = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    if sd > 0:
        ttest = stats.ttest_rel(a, b)
        t_stat, t_p, dz = float(ttest.statistic), float(ttest.pvalue), mean_diff / sd
    else:
        # a constant non-zero shift: t is infinite, the difference is certain
        t_stat, t_p, dz = float(np.sign(mean_diff) * np.inf), 0.0, float(np.sign(mean_diff) * np.inf)
    return PairedResult(n, float(a.mean()), float(b.mean()), mean_diff, float(dz), rank_biserial(diff),
                        float(wilcoxon.statistic), float(wilcoxon.pvalue), t_stat, t_p)


def verdict(mean_diff: float, p_adjusted: float, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
    """'better' / 'worse' (for a, the first sample) or 'no significant difference' at ``alpha``."""
    if not np.isfinite(p_adjusted) or p_adjusted >= alpha or mean_diff == 0:
        return "no significant difference"
    a_higher = mean_diff > 0
    return "better" if a_higher == higher_is_better else "worse"


def per_unit_means(table: pd.DataFrame, metrics, unit: str = "user") -> pd.DataFrame:
    """One row per unit: the mean of each metric over the unit's rows (seeds, folds), NaNs skipped."""
    present = [m for m in metrics if m in table]
    return table.groupby(unit, sort=True)[present].mean()


def bootstrap_ci(diff, seed: int = 0, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap CI (BCa, scipy.stats.bootstrap, seeded) of the mean of per-unit differences.

    Resampling the differences resamples users with both models' values together (a paired
    bootstrap). A constant difference has the degenerate interval (d, d).
    """
    diff = np.asarray(diff, dtype=float)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan"), float("nan")
    if diff.size == 1 or np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0])
    result = stats.bootstrap((diff,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="BCa", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
