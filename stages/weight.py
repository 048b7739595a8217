"""Per-problem pass rates and Paced weights from scores.

    paced weight --scores scores/ --out weights.parquet --alpha 1 --beta 1

w(p) = p^alpha (1 - p)^beta (the paper's Beta kernel; alpha = beta = 1 is v3's default),
`uniform` (w = 1, the unweighted baseline) or `hard-filter` (w = 1 iff 0 < p < 1).
`--normalize mean` rescales so the mean weight over all problems is 1 (the paper does not say
how it normalises). That does not match uniform training step for step: distill never batches
weight-0 problems, so the mean weight per step is N / N_nonzero, and under AdamW a constant
loss scale hardly changes the update; what differs is which problems are visited, how often.
Cheap by design: rerun it alone with a new alpha/beta.

`--estimator posterior` treats p as unknown: with c correct of K and a Beta(A, B) prior
(`--prior A,B`, Jeffreys 0.5,0.5 by default), p | c ~ Beta(c + A, K - c + B), and the weight is
the kernel's posterior expectation

    E[p^alpha (1-p)^beta | c of K] = B(c + A + alpha, K - c + B + beta) / B(c + A, K - c + B),

so 0 of 8 weighs a little (p is small, not surely 0) and 8 of 8 too. Computed in log space
(math.lgamma) once per distinct (c, K), then joined: as fast as the plug-in on 10 M problems.
The default, `plugin`, is the paper's p = c / K.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

import schemas
from schemas import InputError
from schemas.outputs import check_file, check_paths, save_figure
from stages.common import console, notice
from stages.options import changed, key_options, option, INPUT, RUNTIME

# Each scheme with what it weighs: `kernel` computes it, and --scheme's help is built from here.
SCHEMES = {"beta": "w(p) = p^alpha (1-p)^beta, Paced", "uniform": "w = 1, plain distillation",
           "hard-filter": "w = 1 iff 0 < p < 1"}
NORMALIZATIONS = ("mean", "none")
ESTIMATORS = ("plugin", "posterior")
PLOT_KIND = "weights-plot"


@dataclass
class WeightConfig:
    scores: Path = option("Scores artifact: `paced score` output, or any Parquet with problem_id, sample_index, correct.", role=INPUT)
    out: Path = option("Output weights Parquet file (the same command again leaves its own file as it is; one made with other options needs --overwrite).", role=RUNTIME)
    alpha: float = option("alpha in w(p) = p^alpha (1-p)^beta; must be >= 0.", 1.0)
    beta: float = option("beta in w(p) = p^alpha (1-p)^beta; must be >= 0.", 1.0)
    scheme: str = option("; ".join(f"{k} ({v})" for k, v in SCHEMES.items()) + ".", "beta")
    normalize: str = option("mean: rescale so the mean weight over all problems is 1; none: raw kernel values.", "mean")
    estimator: str = option("plugin: w(c/K), the paper's; posterior: the kernel's expectation under the Beta posterior of p "
                            "given c correct of K (0 of 8 is not p = 0). --scheme beta only.", "plugin")
    prior: str = option("--estimator posterior: the Beta prior A,B of p (0.5,0.5 is Jeffreys'; 1,1 uniform).", "0.5,0.5")
    from_snr: Path | None = option("Take alpha and beta from the kernel fitted to the gradient SNR (the --out of `paced snr`, which stores its fit); replaces --alpha and --beta, which must be left at their defaults.", None, role=INPUT)
    plot: Path | None = option("Also draw the pass-rate histogram and the weight curve to this PNG.", None, role=RUNTIME)
    overwrite: bool = option("Replace weights (and plot) that paced wrote with other options or scores; never a file paced did not write.", False, role=RUNTIME)

    def __post_init__(self) -> None:
        problems = []
        for flag, v in (("--alpha", self.alpha), ("--beta", self.beta)):
            if not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v) or v < 0:
                problems.append(f"{flag} {v}: must be a finite number >= 0 (1.0 is the paper's default)")
        if self.scheme not in SCHEMES:
            problems.append(f"--scheme {self.scheme}: use one of {', '.join(SCHEMES)}")
        if self.normalize not in NORMALIZATIONS:
            problems.append(f"--normalize {self.normalize}: use one of {', '.join(NORMALIZATIONS)}")
        if self.estimator not in ESTIMATORS:
            problems.append(f"--estimator {self.estimator}: use one of {', '.join(ESTIMATORS)}")
        elif self.estimator == "posterior" and self.scheme != "beta":
            problems.append(f"--estimator posterior: weighs the beta kernel; --scheme {self.scheme} takes --estimator plugin")
        try:
            a, b = self.prior_ab()
            if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
                raise ValueError
        except ValueError:
            problems.append(f"--prior {self.prior}: give two numbers > 0 as A,B (e.g. 0.5,0.5)")
        else:
            if max(a, b) > MAX_PSEUDO:
                problems.append(f"--prior {self.prior}: A and B are pseudo-counts of samples; at most {MAX_PSEUDO:g}")
            if self.estimator == "posterior" and max(self.alpha, self.beta) > MAX_PSEUDO:
                problems.append(f"--estimator posterior: --alpha and --beta at most {MAX_PSEUDO:g} (the kernel's "
                                f"expectation is computed with log-gamma functions, which overflow past about 1e305)")
            if self.estimator == "plugin" and self.prior != "0.5,0.5":
                problems.append(f"--prior {self.prior}: applies to --estimator posterior only")
        if self.from_snr is not None:
            if self.scheme != "beta":
                problems.append(f"--from-snr: fits the beta kernel; --scheme {self.scheme} takes no alpha and beta")
        elif self.scheme in SCHEMES and self.scheme != "beta" and changed(self, "alpha", "beta"):
            # (they would change the job's key, not its weights)
            problems.append(f"{' and '.join(changed(self, 'alpha', 'beta'))}: the beta kernel's; --scheme "
                            f"{self.scheme} takes no alpha and beta")
        if self.plot is not None and Path(self.plot).suffix.lower() != ".png":
            problems.append(f"--plot {self.plot}: give a .png file name")
        if problems:
            raise InputError("\n".join(problems))

    def prior_ab(self) -> tuple[float, float]:
        a, b = (float(x) for x in str(self.prior).split(","))
        return a, b


MAX_PSEUDO = 1e6  # --prior's A and B (and alpha, beta with --estimator posterior): lgamma stays finite


def posterior_kernel(c: int, k: int, alpha: float, beta: float, a: float, b: float) -> float:
    """E[p^alpha (1-p)^beta] for p ~ Beta(c + a, k - c + b): a ratio of Beta functions, in log space."""
    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    return math.exp(log_beta(c + a + alpha, k - c + b + beta) - log_beta(c + a, k - c + b))


def posterior_by_count(frame: pl.DataFrame, config: WeightConfig) -> pl.DataFrame:
    """The distinct (num_correct, num_samples) of `frame` with `posterior`, the unnormalised
    posterior weight of each: computed once per pair, however many problems share it."""
    a, b = config.prior_ab()
    pairs = frame.select("num_correct", "num_samples").unique()
    return pairs.with_columns(posterior=pl.Series(
        [posterior_kernel(c, k, config.alpha, config.beta, a, b) for c, k in pairs.iter_rows()], dtype=pl.Float64))


def kernel(p: pl.Expr, scheme: str, alpha: float, beta: float) -> pl.Expr:
    """The unnormalised weight of pass rate p (0^0 = 1, so alpha = 0 keeps unsolved problems)."""
    if scheme == "uniform":
        return pl.lit(1.0, dtype=pl.Float64)
    if scheme == "hard-filter":
        return ((p > 0) & (p < 1)).cast(pl.Float64)
    return p.pow(alpha) * (1.0 - p).pow(beta)


def counts(scores: pl.DataFrame | pl.LazyFrame, runs: pl.DataFrame | None = None) -> pl.DataFrame:
    """``problem_id``, ``num_samples``, ``num_correct`` (Int32): one row per problem, in order of
    first appearance.

    With ``runs`` (`schemas.base.key_runs` of ``scores``: each problem's rows are contiguous and
    start at ``runs["start"]``), the counts are run lengths and segment sums, with no hashing of
    the ids: on 80 M score rows several times faster than the general ``group_by``, and equal
    to it row for row. Without, the general ``group_by(maintain_order=True)``.
    """
    if runs is None or not isinstance(scores, pl.DataFrame):
        return (
            scores.lazy()
            .group_by("problem_id", maintain_order=True)
            .agg(
                num_samples=pl.len().cast(pl.Int32),
                num_correct=pl.col("correct").sum().cast(pl.Int32),
            )
            .collect()
        )
    starts = runs.get_column("start").cast(pl.Int64).to_numpy()
    ends = np.append(starts[1:], scores.height)
    correct = scores.get_column("correct").to_numpy().view(np.uint8)  # 0 / 1 per row
    # One segment sum per run, into int32 (a run longer than 2^31 rows fails the Int32 cast of
    # num_samples below, as in the general path); allocates only the [problems] result, where a
    # cumulative sum would allocate [rows].
    correct_per_run = np.add.reduceat(correct, starts, dtype=np.int32)
    return pl.DataFrame(
        {
            "problem_id": runs.get_column("problem_id"),
            "num_samples": pl.Series(ends - starts, dtype=pl.Int64).cast(pl.Int32),
            "num_correct": pl.Series(correct_per_run, dtype=pl.Int32),
        }
    )


def compute(
    scores: pl.DataFrame | pl.LazyFrame, config: WeightConfig, runs: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, float]:
    """Aggregate scores to one row per problem; return the weights and the mean-normalisation factor.

    ``runs``: see `counts` (the scores artifact's ``key_runs``, when reading proved them).
    """
    per_count = counts(scores, runs)
    per_problem = per_count.lazy().with_columns(pass_rate=pl.col("num_correct") / pl.col("num_samples"))
    if config.estimator == "posterior":  # one value per distinct (c, K), joined back in order
        per_problem = per_problem.join(posterior_by_count(per_count, config).lazy(), on=["num_correct", "num_samples"],
                                       how="left", maintain_order="left").rename({"posterior": "weight"})
    else:
        per_problem = per_problem.with_columns(weight=kernel(pl.col("pass_rate"), config.scheme, config.alpha, config.beta))
    per_problem = per_problem.collect()
    factor = 1.0
    if config.normalize == "mean":
        total = float(per_problem.get_column("weight").sum())
        if total > 0:
            factor = per_problem.height / total
            per_problem = per_problem.with_columns(pl.col("weight") * factor)
    return per_problem, factor


def run(config: WeightConfig, command: str | None = None) -> Path:
    """`command`: the command line, for provenance (the CLI passes it)."""
    started = time.perf_counter()
    check_paths({"--out": config.out, "--plot": config.plot}, {"--scores": config.scores, "--from-snr": config.from_snr})
    art = schemas.read(config.scores, schemas.SCORES, option="--scores", columns=["correct"])
    inputs = {"scores": art.fingerprint}
    fit = None
    if config.from_snr is not None:
        given = changed(config, "alpha", "beta")
        if given:
            raise InputError(f"--from-snr with {' '.join(f'{g} {getattr(config, g[2:]):g}' for g in given)}: the fit gives "
                             f"alpha and beta; leave --alpha and --beta out, or drop --from-snr")
        fit = schemas.snr.read_fit(config.from_snr, "--from-snr")
        if fit["alpha"] < 0 or fit["beta"] < 0:
            raise InputError(
                f"--from-snr {config.from_snr}: the fitted kernel has alpha {fit['alpha']:.3g}, beta {fit['beta']:.3g}; a "
                f"negative exponent means the SNR rises towards p = 0 or p = 1 and gives an unbounded weight there, "
                f"not a Beta kernel: give --alpha and --beta instead")
        config = replace(config, alpha=fit["alpha"], beta=fit["beta"])
        inputs["from_snr"] = schemas.io.fingerprint(Path(config.from_snr))
    # What the weights depend on: a rerun with the same key rewrites the same file.
    key = schemas.io.hash_options(key_options(config) | inputs)
    schemas.io.check_file_out(config.out, schemas.WEIGHTS, key=key, overwrite=config.overwrite)
    if config.plot is not None:
        check_file(config.plot, PLOT_KIND, "--plot", key=key, overwrite=config.overwrite, suffix=".png")
    weights, factor = compute(art.frame, config, art.key_runs)

    options = asdict(config) | {"normalization_factor": factor} | ({"kernel_fit": fit} if fit else {})
    prov = schemas.provenance("weight", options, {"scores": art}, problems=schemas.io.lineage(art), command=command)
    table = weights.select([c.name for c in schemas.WEIGHTS.columns]).to_arrow().cast(schemas.WEIGHTS.arrow)
    out = schemas.write_file(config.out, table, schemas.WEIGHTS, prov, key=key, overwrite=config.overwrite)
    if config.plot is not None:
        plot(weights, config, Path(config.plot), key)
    report(weights, config, factor, time.perf_counter() - started)
    return out


def bins(weights: pl.DataFrame) -> pl.DataFrame:
    """Problems and weight mass per pass-rate bin: one bin per distinct p when K is small."""
    per_p = weights.group_by("pass_rate").agg(problems=pl.len(), mass=pl.col("weight").sum())
    if per_p.height <= 17:
        key = pl.col("pass_rate")
        label = key.round(3).cast(pl.String)
    else:
        # Exactly 0 and exactly 1 are their own bins: they are the ones Paced zeroes.
        inner = (pl.col("pass_rate") * 10).ceil().clip(1, 10).cast(pl.Int32)
        key = pl.when(pl.col("pass_rate") == 0).then(0).when(pl.col("pass_rate") == 1).then(11).otherwise(inner)
        label = (
            pl.when(key == 0)
            .then(pl.lit("p = 0"))
            .when(key == 11)
            .then(pl.lit("p = 1"))
            .otherwise(pl.format("({}, {}]", ((key - 1) / 10).round(1), (key / 10).round(1)))  # 0.3, not 0.30000000000000004
        )
    total = per_p.get_column("mass").sum() or 1.0
    return (
        per_p.with_columns(_key=key, bin=label)
        .group_by("_key", "bin")
        .agg(pl.col("problems").sum(), weight_mass=pl.col("mass").sum() / total)
        .sort("_key")
        .drop("_key")
    )


def report(weights: pl.DataFrame, config: WeightConfig, factor: float, seconds: float) -> None:
    from rich.table import Table

    n = weights.height
    by_bin = bins(weights)
    table = Table(title=f"weights: {n:,} problems ({config.scheme}"
                  + (f", alpha={config.alpha:g}, beta={config.beta:g}" if config.scheme == "beta" else "")
                  + (f", posterior with prior {config.prior}" if config.estimator == "posterior" else "")
                  + f", normalize={config.normalize})", title_justify="left")
    table.add_column("pass rate")
    table.add_column("problems", justify="right")
    table.add_column("share", justify="right")
    table.add_column("weight mass", justify="right")
    for row in by_bin.iter_rows(named=True):
        table.add_row(row["bin"], f"{row['problems']:,}", f"{row['problems'] / n:.1%}", f"{row['weight_mass']:.1%}")
    console.print(table)

    zero_w = pl.col("weight") == 0
    counts = weights.select(
        zero=zero_w.sum(),
        mastered=(zero_w & (pl.col("pass_rate") == 1)).sum(),
        unsolved=(zero_w & (pl.col("pass_rate") == 0)).sum(),
    ).row(0, named=True)
    zero, mastered, unsolved = counts["zero"], counts["mastered"], counts["unsolved"]
    other = zero - mastered - unsolved
    summary = Table(show_header=False, title="summary", title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("problems", f"{n:,}")
    summary.add_row("weight 0: mastered (p = 1)", f"{mastered:,}")
    summary.add_row("weight 0: unsolved (p = 0)", f"{unsolved:,}")
    if other:
        summary.add_row("weight 0: other", f"{other:,}")
    summary.add_row("problems that train", f"{n - zero:,} ({(n - zero) / max(n, 1):.1%})")
    summary.add_row("mean weight", f"{weights.get_column('weight').mean():.4f}")
    summary.add_row("normalisation factor", f"{factor:.4f}")
    summary.add_row("seconds", f"{seconds:.2f}")
    console.print(summary)
    if n and zero == n:
        notice("warning", "every problem has weight 0 (all mastered or all unsolved): "
                          "distill would have nothing to train on; try --scheme uniform or more --samples")


def plot(weights: pl.DataFrame, config: WeightConfig, path: Path, key: str) -> None:
    """Pass-rate histogram with the weight curve w(p) drawn over it (marked with the weights' key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = weights.group_by("pass_rate").agg(n=pl.len()).sort("pass_rate")
    p = counts.get_column("pass_rate").to_numpy()
    n = counts.get_column("n").to_numpy()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 * (np.min(np.diff(p)) if len(p) > 1 else 0.1)
    ax.bar(p, n, width=width, color="#9ab", label="problems")
    ax.set_xlabel("student pass rate p")
    ax.set_ylabel("problems")
    ax2 = ax.twinx()
    grid = np.linspace(0, 1, 201)
    w = pl.DataFrame({"p": grid}).select(kernel(pl.col("p"), config.scheme, config.alpha, config.beta)).to_series().to_numpy()
    w = np.broadcast_to(w, grid.shape)  # uniform: one literal for the whole grid
    name = {"beta": f"w(p) = p^{config.alpha:g} (1-p)^{config.beta:g}", "hard-filter": "hard filter"}.get(config.scheme, config.scheme)
    ax2.plot(grid, w, color="#c33", lw=2, label=name)
    if config.estimator == "posterior":  # what each observed c of K actually gets (before normalisation)
        seen = posterior_by_count(weights, config)
        ax2.scatter((seen["num_correct"] / seen["num_samples"]).to_numpy(), seen["posterior"].to_numpy(), color="#333", s=18, zorder=3,
                    label=f"posterior expectation (prior {config.prior})")
    ax2.set_ylabel("weight (unnormalised)")
    ax2.set_ylim(bottom=0)
    ax.set_title(f"pass rates of {weights.height:,} problems and the weight {name}")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.9))
    fig.tight_layout()
    save_figure(fig, path, PLOT_KIND, key, overwrite=config.overwrite)
    plt.close(fig)
