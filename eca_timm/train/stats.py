"""Statistics of the attention study: is a variant's final top-1 different from the baseline's, across seeds?

The test is an exact two-sample permutation test of the difference of means: it needs no distribution, only
that the runs of the two variants would be exchangeable if the variant made no difference, and with a handful of
seeds every split of the runs can be enumerated. The confidence interval is Welch's t-interval of the difference
of means (normal runs, variances not assumed equal). Both are written here with numpy and ``math`` alone: the
t quantile comes from the regularized incomplete beta function, so scipy is not needed.
"""
import itertools
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ['Difference', 'permutation_test', 'min_p_value', 't_cdf', 't_ppf', 'mean_ci', 'welch_ci', 'compare']

MAX_SPLITS = 200_000  # enumerate every split up to this many (10 + 10 seeds: 184,756); sample beyond
MC_SPLITS = 100_000  # random splits when enumerating is not feasible
ALPHA = 0.05


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


def permutation_test(a: Sequence[float], b: Sequence[float], max_splits: int = MAX_SPLITS,
                     seed: int = 0) -> Tuple[float, int, bool]:
    """Two-sided permutation test of mean(a) - mean(b): (p-value, splits counted, exact).

    The p-value is the fraction of the splits of the pooled runs into groups of len(a) and len(b) whose
    |difference of means| is at least the observed one (ties within 1e-9 relative count as extreme). When there
    are more than ``max_splits`` splits, ``MC_SPLITS`` random ones are drawn and p = (hits + 1) / (draws + 1).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled, k = np.concatenate([a, b]), len(a)
    n = len(pooled)
    observed = abs(a.mean() - b.mean())
    total = math.comb(n, k)
    if total <= max_splits:
        masks = np.zeros((total, n), dtype=bool)
        masks[np.repeat(np.arange(total), k), np.fromiter(itertools.chain.from_iterable(
            itertools.combinations(range(n), k)), dtype=int, count=total * k)] = True
    else:
        rng = np.random.default_rng(seed)
        masks = np.argsort(rng.random((MC_SPLITS, n)), axis=1) < k
    sum_a = masks @ pooled
    stats = np.abs(sum_a / k - (pooled.sum() - sum_a) / (n - k))
    hits = int(np.sum(stats >= observed - 1e-9 * max(1.0, observed)))
    if total <= max_splits:
        return hits / total, total, True
    return (hits + 1) / (MC_SPLITS + 1), MC_SPLITS, False


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (Numerical Recipes' betacf, Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below the mean; use the symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return front * h / a


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile (0 < q < 1) of Student's t with ``df`` degrees of freedom, by bisection on ``t_cdf``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f'quantile must be in (0, 1), got {q}')
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """t-interval of the mean of ``values`` (None for fewer than 2)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    half = t_ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def welch_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """Welch's t-interval of mean(a) - mean(b), Welch-Satterthwaite degrees of freedom (None below 2 runs each)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0.0:  # every run of both groups ended alike: no spread to widen the interval
        return diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    return diff - half, diff + half


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
