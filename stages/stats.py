"""Small statistics the stages, the reproduce report and the bench share: Student's t quantiles,
paired differences with their interval, weighted least squares with coefficient intervals, and the
pass@k estimator (numpy only; scipy is not a dependency)."""

from __future__ import annotations

import math
import statistics

import numpy as np


def t_cdf(x: float, df: int) -> float:
    """Student's t distribution function: 1 - I_z(df/2, 1/2) / 2 for x >= 0, z = df / (df + x^2)
    (the regularized incomplete beta function, by its continued fraction), exact to ~1e-14."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def _betainc(a: float, b: float, z: float) -> float:
    """The regularized incomplete beta function I_z(a, b) (Numerical Recipes' betai: the
    continued fraction on the side of z where it converges fast)."""
    if z <= 0.0:
        return 0.0
    if z >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(z) + b * math.log1p(-z))
    if z < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, z) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - z) / b


def _beta_fraction(a: float, b: float, z: float) -> float:
    """The continued fraction of I_z(a, b), by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * z / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (m * (b - m) * z / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * z / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def t_quantile(q: float, df: int) -> float:
    """The q quantile of Student's t with df degrees of freedom (bisection on t_cdf, in a bracket
    widened until it holds the quantile: t(0.995, 1) is 63.66)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_quantile: q must be in (0, 1), got {q}")
    hi = 64.0
    while t_cdf(hi, df) < max(q, 1.0 - q):
        if hi > 1e6:
            raise ValueError(f"t_quantile: the {q} quantile of t with {df} degrees of freedom is beyond 1e6")
        hi *= 4
    lo = -hi
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def paired(diffs: list[float]) -> dict:
    """Mean, sd, 95 % t-interval and the minimum detectable effect of paired differences: the
    usual (t(0.975, n-1) + t(0.80, n-1)) sd / sqrt(n), whose power is about 80 % (79.5 % at n = 6,
    78.4 % at n = 4, by the noncentral t)."""
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "lo": None, "hi": None, "mde": None}
    sd = statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    t975, t80 = t_quantile(0.975, n - 1), t_quantile(0.80, n - 1)
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - t975 * se, "hi": mean + t975 * se, "mde": (t975 + t80) * se}


def wls(x: np.ndarray, y: np.ndarray, w: np.ndarray, level: float = 0.95) -> dict:
    """Weighted least squares y ~ x @ coef with weights w (relative: known up to one scale).

    Returns `coef`, `se` (from s^2 (X'WX)^-1, s^2 = sum w r^2 / (n - p)), `ci` (t intervals at
    `level` with n - p degrees of freedom) and `dof`; `se` and `ci` are None when n = p (an
    exact fit leaves no residual to estimate the scale from)."""
    x, y, w = np.asarray(x, float), np.asarray(y, float), np.asarray(w, float)
    n, p = x.shape
    if n < p:
        raise ValueError(f"wls: {n} points for {p} coefficients")
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
    dof = n - p
    if dof == 0:
        return {"coef": coef, "se": None, "ci": None, "dof": 0}
    r = y - x @ coef
    s2 = float(np.sum(w * r * r)) / dof
    cov = s2 * np.linalg.inv(x.T @ (x * w[:, None]))
    se = np.sqrt(np.diag(cov))
    t = t_quantile(0.5 + level / 2, dof)
    return {"coef": coef, "se": se, "ci": np.stack([coef - t * se, coef + t * se], axis=1), "dof": dof}


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from c correct of n samples (Chen et al. 2021, "Evaluating
    Large Language Models Trained on Code"): 1 - C(n - c, k) / C(n, k), the chance that k of the n
    samples drawn without replacement hold a correct one, as their numerically stable product
    1 - prod_{i = n - c + 1}^{n} (1 - k / i). Needs 1 <= k <= n."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
