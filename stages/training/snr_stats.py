"""The statistics of `paced snr`, pure functions with no model: pass-rate bins, each problem's
gradient SNR from its rollouts' gradients streamed through `Moments` (the paper's Figure 3,
per problem over its K rollouts), bootstrap intervals, the per-bin tables of both estimators
and the Beta kernel fitted to them."""

from __future__ import annotations

import math
import random
from typing import Any, Iterable

import numpy as np

# Percentile bootstrap of a bin's mean SNR: 2,000 resamples put the 2.5 % and 97.5 % points on
# 50 resample means each, enough for a stable 95% interval.
RESAMPLES = 2000
# Bootstrap indices drawn per block, so a bin of many problems never holds RESAMPLES x n at once.
BOOTSTRAP_BLOCK = 1 << 22
# Elements per float64 block of a squared norm.
NORM_BLOCK = 1 << 20



def bin_of(p: float, bins: int) -> int:
    """The bin of pass rate p: lo <= p < hi, and p = 1 in the last bin.

    p * bins is rounded to 9 decimals first so a pass rate on an edge (k/K, e.g. 3/10 with 10
    bins) lands in the bin it opens whatever the float rounding of k/K.
    """
    return min(int(math.floor(round(p * bins, 9))), bins - 1)


def bin_edges(i: int, bins: int) -> tuple[float, float]:
    return i / bins, (i + 1) / bins


def _sq(x) -> float:
    """||x||^2 accumulated in float64, NORM_BLOCK elements at a time: a float32 sum over 10^8
    elements loses the digits the SNR needs, and a whole float64 copy would double the memory."""
    import torch

    x = x.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for block in x.split(NORM_BLOCK):
        block = block.double()
        total += torch.dot(block, block)
    return float(total)


class Moments:
    """Running mean and M2 = sum_k ||g_k - mean||^2 of a stream of same-shaped tensors.

    Welford's update, stable where sum ||g||^2 - K ||mean||^2 would cancel (a problem whose
    rollouts agree). `add` takes the tensor over: the first becomes the running mean, later
    ones are overwritten in place by their deviation, so no gradient is ever copied and memory
    is the mean plus the gradient being folded in, whatever the count.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Any = None
        self.m2 = 0.0

    def add(self, g) -> None:
        g = g.detach().reshape(-1)
        self.n += 1
        if self.mean is None:
            bad = not math.isfinite(_sq(g))
            self.mean = g
        else:
            delta = g.sub_(self.mean)
            d2 = _sq(delta)
            bad = not math.isfinite(d2)
            self.mean.add_(delta, alpha=1.0 / self.n)
            # delta . (g - new mean) = (1 - 1/n) ||delta||^2
            self.m2 += (1.0 - 1.0 / self.n) * d2
            del delta
        if bad:
            raise RuntimeError("a gradient is not finite (NaN or inf); check the model and inputs")

    def close(self) -> tuple[int, float | None, float | None]:
        """(count, signal ||mean||^2, noise tr Cov = M2 / (n - 1), unbiased); frees the mean.
        Noise is None below 2 tensors."""
        signal = None if self.mean is None else _sq(self.mean)
        noise = self.m2 / (self.n - 1) if self.n >= 2 else None
        self.mean = None
        return self.n, signal, noise


def problem_snr(grads: Iterable[Any]) -> dict[str, Any]:
    """SNR of one problem over its per-rollout gradients, consumed one at a time.

    Returns num_rollouts K, signal ||mean g||^2, noise tr Cov g (unbiased), snr = signal /
    noise, snr_debiased = snr - 1/K (E||mean g||^2 = ||E g||^2 + tr Cov / K), and a status:
    'ok', 'fewer than 2 rollouts' or 'identical gradients (tr Cov = 0)'.
    """
    m = Moments()
    for g in grads:
        m.add(g)
        del g  # not held while the next gradient is computed
    k, signal, noise = m.close()
    snr = debiased = None
    if k < 2:
        status = "fewer than 2 rollouts"
    elif noise <= 0.0:
        status = "identical gradients (tr Cov = 0)"
    else:
        status = "ok"
        snr = signal / noise
        debiased = snr - 1.0 / k
    return {"num_rollouts": k, "signal": signal, "noise": noise, "snr": snr, "snr_debiased": debiased, "status": status}


def bootstrap_interval(values: np.ndarray, seed: Any, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of `values` [n]: `resamples` means of n
    values drawn with replacement, their 2.5 % and 97.5 % points. Deterministic in `seed`
    (anything numpy's SeedSequence takes)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, BOOTSTRAP_BLOCK // n)
    for s in range(0, resamples, step):
        m = min(step, resamples - s)
        means[s : s + m] = values[rng.integers(0, n, size=(m, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def identical_by_bin(measured: list[dict[str, Any]], bins: int) -> str:
    """How many problems gave K identical gradients (an SNR without bound, left out of their
    bin's mean), and in which bins: "12 (in [0.9, 1.0]: 12)"."""
    by_bin: dict[int, int] = {}
    for r in measured:
        if r["status"] != "ok":
            by_bin[r["bin"]] = by_bin.get(r["bin"], 0) + 1
    if not by_bin:
        return "0"
    where = ", ".join(f"in [{lo:g}, {hi:g}{']' if b == bins - 1 else ')'}: {n:,}"
                      for b, n in sorted(by_bin.items()) for lo, hi in [bin_edges(b, bins)])
    return f"{sum(by_bin.values()):,} ({where}; left out of those bins' means)"


def _bin_row(b: int, bins: int, estimator: str) -> dict[str, Any]:
    lo, hi = bin_edges(b, bins)
    return {"bin": b, "lo": lo, "hi": hi, "problems": 0, "mean_pass_rate": None, "snr": None, "snr_ci_low": None,
            "snr_ci_high": None, "snr_normalized": None, "snr_debiased": None, "status": "empty", "estimator": estimator}


def per_problem_bin_stats(measured: Iterable[dict[str, Any]], bins: int, seed: int) -> list[dict[str, Any]]:
    """One snr-artifact row per bin from per-problem rows (pass_rate, snr, snr_debiased,
    status): the mean SNR_i of the bin's problems with an SNR, its bootstrap interval (seeded
    by (seed, bin); null below 2 problems), the mean of SNR_i - 1/K_i, and the means
    normalised by the largest bin mean (the paper's Figure 3)."""
    by_bin: dict[int, list[dict[str, Any]]] = {}
    for r in measured:
        by_bin.setdefault(bin_of(r["pass_rate"], bins), []).append(r)
    rows = []
    for b in range(bins):
        row = _bin_row(b, bins, "per-problem")
        group = by_bin.get(b, [])
        ok = [r for r in group if r["snr"] is not None]
        if group and not ok:
            row["status"] = "no problem with an SNR"
        if ok:
            snr = np.array([r["snr"] for r in ok])
            row |= {
                "problems": len(ok), "status": "ok",
                "mean_pass_rate": float(np.mean([r["pass_rate"] for r in ok])),
                "snr": float(snr.mean()),
                "snr_debiased": float(np.mean([r["snr_debiased"] for r in ok])),
            }
            if len(ok) >= 2:
                row["snr_ci_low"], row["snr_ci_high"] = bootstrap_interval(snr, [seed, b])
        rows.append(row)
    return normalise(rows, "snr")


def pooled_bin_stats(items: Iterable[tuple[float, Any]], bins: int) -> list[dict[str, Any]]:
    """The pooled estimator: per bin, SNR = ||mean g||^2 / tr Cov g over one gradient g per
    problem, from a stream of (pass rate, gradient) pairs grouped by bin (each bin's pairs
    together: one running mean at a time), consumed as they come.

    snr_debiased = snr - 1/n (||mean g||^2 carries tr Cov / n of noise), and that is what is
    normalised: the raw value of a bin of n problems reads about 1/n with no signal at all.
    """
    rows = [_bin_row(b, bins, "pooled") for b in range(bins)]
    seen: set[int] = set()
    current, m, p_sum = None, Moments(), 0.0

    def close(b: int) -> None:
        n, signal, noise = m.close()
        row = rows[b]
        row |= {"problems": n, "mean_pass_rate": p_sum / n}
        if n == 1:
            row["status"] = "too few problems (n=1)"
        elif noise <= 0.0:
            row["status"] = "identical gradients (tr Cov = 0)"
        else:
            row |= {"status": "ok", "snr": signal / noise, "snr_debiased": signal / noise - 1.0 / n}

    for p, g in items:
        b = bin_of(p, bins)
        if b != current:
            if current is not None:
                close(current)
            if b in seen:
                raise ValueError(f"pooled_bin_stats: bin {b} came back after another bin; pass the pairs grouped by bin")
            seen.add(b)
            current, m, p_sum = b, Moments(), 0.0
        m.add(g)
        p_sum += p
        del g  # not held while the next gradient is computed
    if current is not None:
        close(current)
    return normalise(rows, "snr_debiased")


def normalise(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """snr_normalized = row[column] / the largest row[column]; left null when that largest
    value is not > 0 (no bin with signal above noise: nothing to scale by)."""
    top = max((r[column] for r in rows if r[column] is not None), default=None)
    if top is not None and top > 0:
        for r in rows:
            if r[column] is not None:
                r["snr_normalized"] = r[column] / top
    return rows


def fit_kernel(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The Beta kernel w(p) = p^alpha (1-p)^beta that best follows the bin means: weighted least
    squares of

        log s_b = log c + alpha log p_b + beta log(1 - p_b)

    over the bins with an SNR whose mean pass rate p_b lies strictly inside (0, 1), where s_b is
    the bin's SNR above the noise floor (`snr_debiased`, the mean of SNR_i - 1/K: the raw means
    carry 1/K of pure noise, which flattens the curve towards alpha = beta = 0) and must be > 0.
    Per-problem estimator: each bin weighted by the inverse variance of log s_b, (s_b / se_b)^2
    with se_b = (bootstrap interval width) / (2 x 1.96) (bins without an interval, or a zero-width
    one, are left out); pooled estimator: equal weights. Intervals: t with (bins - 3) degrees of
    freedom on s^2 (X'WX)^-1, so they need at least 4 bins. A dict that is JSON-ready: `status`
    ('ok' or why there is no fit), alpha, beta, log_scale, alpha_ci, beta_ci, bins_used, dof."""
    from stages import stats

    per_problem = bool(rows) and rows[0]["estimator"] == "per-problem"
    use, weights = [], []
    for r in rows:
        p, s = r["mean_pass_rate"], r["snr_debiased"]
        if r["status"] != "ok" or p is None or not 0 < p < 1 or s is None or not s > 0:
            continue
        if per_problem:
            if r["snr_ci_low"] is None or not r["snr_ci_high"] > r["snr_ci_low"]:
                continue
            weights.append((s / ((r["snr_ci_high"] - r["snr_ci_low"]) / (2 * 1.959964))) ** 2)
        else:
            weights.append(1.0)
        use.append((p, s))
    fit: dict[str, Any] = {"response": "snr_debiased", "bins_used": len(use), "alpha": None, "beta": None,
                           "log_scale": None, "alpha_ci": None, "beta_ci": None, "dof": None,
                           "weighting": "inverse variance of log SNR (bootstrap)" if per_problem else "equal"}
    if len(use) < 3:
        return fit | {"status": f"too few bins: {len(use)} with 0 < mean p < 1 and SNR - 1/K > 0"
                                + ("" if not per_problem else " and a bootstrap interval") + "; a fit needs 3"}
    p = np.array([u[0] for u in use])
    x = np.stack([np.ones_like(p), np.log(p), np.log1p(-p)], axis=1)
    res = stats.wls(x, np.log([u[1] for u in use]), np.array(weights))
    c, a, b = (float(v) for v in res["coef"])
    fit |= {"status": "ok", "alpha": a, "beta": b, "log_scale": c, "dof": res["dof"]}
    if res["ci"] is not None:
        fit |= {"alpha_ci": [float(v) for v in res["ci"][1]], "beta_ci": [float(v) for v in res["ci"][2]]}
    return fit


def choose_problems(pass_rate: dict[str, float], bins: int, max_problems: int | None, seed: int) -> list[str]:
    """All problems, or a seeded subset of `max_problems` drawn from each bin in proportion
    to its size (largest remainders get the leftover places), so the subset keeps the
    pass-rate distribution."""
    names = sorted(pass_rate)
    if max_problems is None or max_problems >= len(names):
        return names
    by_bin: dict[int, list[str]] = {}
    for name in names:
        by_bin.setdefault(bin_of(pass_rate[name], bins), []).append(name)
    exact = {b: max_problems * len(g) / len(names) for b, g in by_bin.items()}
    quota = {b: math.floor(x) for b, x in exact.items()}
    left = max_problems - sum(quota.values())
    for b in sorted(exact, key=lambda b: (quota[b] - exact[b], b))[:left]:
        quota[b] += 1
    rng = random.Random(seed)
    chosen = []
    for b in sorted(by_bin):
        group = list(by_bin[b])
        rng.shuffle(group)
        chosen += group[: quota[b]]
    return sorted(chosen)
