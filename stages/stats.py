"""Small statistics the stages, the reproduce report and the bench share: Student's t quantiles,
paired differences with their interval, weighted least squares with coefficient intervals, and the
pass@k estimator (numpy only; scipy is not a dependency)."""

from __future__ import annotations

import math
import statistics

import numpy as np


def t_cdf(x: float, df: int) -> float:
    """Student's t distribution function, by Simpson's rule on the density from 0 to |x|."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    n, a = 2000, abs(x)
    h = a / n
    f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
    area = h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
    return 0.5 + math.copysign(area, x)


def t_quantile(q: float, df: int) -> float:
    """The q quantile of Student's t with df degrees of freedom (bisection on t_cdf)."""
    lo, hi = -60.0, 60.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def paired(diffs: list[float]) -> dict:
    """Mean, sd, 95 % t-interval and the minimum detectable effect (80 % power) of paired differences."""
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
