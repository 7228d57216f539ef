"""Statistics of the attention study: is a variant's final top-1 different from the baseline's, across seeds?

The test is scipy's exact two-sample permutation test of the difference of means (``scipy.stats.permutation_test``):
it needs no distribution, only that the runs of the two variants would be exchangeable if the variant made no
difference, and with a handful of seeds every split of the runs can be enumerated. The confidence interval is
Welch's t-interval of the difference of means (``scipy.stats.ttest_ind(equal_var=False)``: normal runs, variances
not assumed equal). scipy is imported on first use, so that training needs only what the report does not
(``pip install 'eca-timm[plot]'``).
"""
import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

__all__ = ['Difference', 'permutation_test', 'min_p_value', 'mean_ci', 'welch_ci', 'compare', 'require_scipy']

MAX_SPLITS = 200_000  # enumerate every split up to this many (10 + 10 seeds: 184,756); sample beyond
MC_SPLITS = 100_000  # random splits when enumerating is not feasible
ALPHA = 0.05


def require_scipy() -> Any:
    """``scipy.stats``, or an ImportError saying which extra provides it."""
    try:
        from scipy import stats
    except ImportError as e:
        raise ImportError("the study report's statistics need scipy: pip install 'eca-timm[plot]'") from e
    return stats


@dataclass
class Difference:
    """One variant against the baseline: mean final top-1 difference, its CI and the permutation test."""
    variant: str
    baseline: str
    n: int  # runs (seeds) of the variant
    n_baseline: int  # runs of the baseline
    diff: float  # mean(variant) - mean(baseline), in top-1 points
    ci: Optional[Tuple[float, float]] = None  # 95% Welch t-interval of diff; None when not possible
    p_value: Optional[float] = None  # two-sided permutation p; None when no test is possible
    n_splits: int = 0  # splits the p-value counts over
    exact: bool = True  # every split enumerated (else MC_SPLITS random ones)
    min_p: Optional[float] = None  # smallest p any data could give with these seed counts
    no_test: str = ''  # why there is no test, when there is none

    @property
    def significant(self) -> Optional[bool]:
        """p < 0.05, or None without a test."""
        return None if self.p_value is None else self.p_value < ALPHA


def min_p_value(n_a: int, n_b: int) -> float:
    """Smallest two-sided permutation p-value with ``n_a`` and ``n_b`` runs: the observed split alone is the most
    extreme (1 of C(n, n_a) splits), with its mirror image when the groups have the same size."""
    return (2 if n_a == n_b else 1) / math.comb(n_a + n_b, n_a)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def permutation_test(a: Sequence[float], b: Sequence[float], max_splits: int = MAX_SPLITS,
                     n_resamples: int = MC_SPLITS, seed: int = 0) -> Tuple[float, int, bool]:
    """Two-sided permutation test of mean(a) - mean(b): (p-value, splits counted, exact).

    scipy enumerates the splits of the pooled runs into groups of len(a) and len(b) (with more than ``max_splits``
    of them, it draws ``n_resamples`` random ones); p is the share of splits whose |difference of means| is at least
    the observed one, or (hits + 1) / (draws + 1) for random splits. Differences within 1e-9 of the observed one
    count as ties: scipy's own p allows only 100 float eps relative to the difference, less than the rounding error
    of means of top-1 values near 95, so it would count an exact tie as less extreme and give too small a p.
    """
    stats = require_scipy()
    total = math.comb(len(a) + len(b), len(a))
    res = stats.permutation_test(
        (np.asarray(a, dtype=float), np.asarray(b, dtype=float)), _mean_difference, permutation_type='independent',
        vectorized=True, n_resamples=math.inf if total <= max_splits else n_resamples,
        random_state=np.random.default_rng(seed))
    observed = abs(float(res.statistic))
    splits = np.abs(res.null_distribution)
    hits = int(np.count_nonzero(splits >= observed - 1e-9 * max(1.0, observed)))
    exact = len(splits) == total
    return (hits / total if exact else (hits + 1) / (len(splits) + 1)), len(splits), exact


def _t_interval(result: Any, level: float) -> Tuple[float, float]:
    ci = result.confidence_interval(confidence_level=level)
    return float(ci.low), float(ci.high)


def _quiet_t_test(test: Any, *samples: np.ndarray, **kwargs: Any) -> Any:
    """``test(*samples)`` without scipy's precision-loss warning for runs that ended alike (a zero spread is exact
    here: top-1 is a count of images)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Precision loss occurred', category=RuntimeWarning)
        return test(*samples, **kwargs)


def mean_ci(values: Sequence[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """t-interval of the mean of ``values`` (None for fewer than 2)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    return _t_interval(_quiet_t_test(require_scipy().ttest_1samp, x, popmean=0.0), level)


def welch_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """Welch's t-interval of mean(a) - mean(b), Welch-Satterthwaite degrees of freedom (None below 2 runs each)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    return _t_interval(_quiet_t_test(require_scipy().ttest_ind, a, b, equal_var=False), level)


def compare(variant: str, values: Sequence[float], baseline: str, base_values: Sequence[float]) -> Difference:
    """``variant``'s final top-1 runs against the baseline's: difference of means, 95% CI and permutation p."""
    a, b = np.asarray(values, dtype=float), np.asarray(base_values, dtype=float)
    out = Difference(variant, baseline, len(a), len(b), float(a.mean() - b.mean()))
    if len(a) < 2 or len(b) < 2:
        few = ', '.join(f'{name} has {len(x)} run' for name, x in ((variant, a), (baseline, b)) if len(x) < 2)
        out.no_test = f'no test possible: {few}; a test and a CI need at least 2 seeds of each'
        return out
    out.ci = welch_ci(a, b)
    out.p_value, out.n_splits, out.exact = permutation_test(a, b)
    out.min_p = min_p_value(len(a), len(b))
    return out
