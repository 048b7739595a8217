"""Gradient signal-to-noise ratio per pass-rate bin: the diagnostic behind Paced (Figure 3).

    paced teacher-logits --problems problems.parquet --sequences runs/rollouts \
        --teacher Qwen/Qwen3-8B --out runs/snr_teacher_logits
    paced snr --student Qwen/Qwen3-1.7B --teacher-logits runs/snr_teacher_logits \
        --weights runs/weights.parquet --out runs/snr.parquet --bins 10 --plot runs/snr.png

The teacher logits are taken on the student's own K rollouts per problem (the rollouts its
pass rates come from), so every problem has K sequences. For each rollout k of problem i, g_k
is the gradient of its mean token distillation loss (as `paced distill` computes it,
unweighted) with respect to one parameter: the output embedding by default (the paper
measures at `lm_head`). Per problem, over its K rollouts,

    SNR_i = ||mean_k g_k||^2 / tr Cov_k g_k,    tr Cov = sum_k ||g_k - mean g||^2 / (K - 1)

and, since ||mean g||^2 carries tr Cov / K of noise, SNR_i - 1/K removes that floor. Problems
are binned by pass rate into `--bins` equal-width bins over [0, 1]; a bin's SNR is the mean of
its problems' SNR_i, with a seeded percentile-bootstrap 95% interval over those problems, and
the bin means are normalised by the largest one: the paper's Figure 3 (per-problem SNR
averaged within each bin; bell-shaped over p, collapsing for p < 0.2 and p > 0.8, the shape
the Beta kernel w(p) = p^alpha (1-p)^beta is built to follow). The per-problem values are
written beside `--out` (`<out>.problems.parquet`). Problems with fewer than 2 rollouts give no
SNR: they are skipped and counted.

`--estimator pooled` is the older, secondary statistic: one gradient per problem (all its
sequences together), one SNR per bin over its problems. It measures how alike the problems of a
bin are, not how noisy each problem's gradient is, and reads at least about 1/n for a bin of n
problems with no signal at all, so it is normalised after subtracting 1/n.

Problems of weight 0 are measured too (the pass rate is all that matters here), so build the
teacher logits WITHOUT `--weights`, or the bins near p = 0 and p = 1 stay empty. A real output
embedding gradient is as large as the weight (about 1 GB for Qwen3-1.7B in float32), so
gradients are never stored: the per-problem estimator keeps one running mean and a running sum
of squared deviations (Welford) per problem, the pooled one per bin, taken in bin order, so
memory holds two parameter-sized buffers (the running mean and the gradient being folded in)
whatever K. The model runs in float32, in eval mode, with every other parameter frozen.
`--max-problems` measures a seeded subset, drawn from each bin in proportion to its size.

The machinery is in `stages/training/`: the gradients (and the parameter they are taken at) in
`gradients.py`, the statistics (bins, the streaming moments, the bootstrap, the per-bin tables,
the kernel fit) in `snr_stats.py`; the fit's key and reader, which `paced weight --from-snr`
uses, in `schemas/snr.py`. What stays here: the options, the stage, its row cache, the summary
and the plot.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

import schemas
from schemas import InputError
from schemas.outputs import check_file, check_paths, save_figure
from schemas.snr import ESTIMATORS, FIT_KEY
from stages import models
from stages.training import data as train_data, losses
from stages.training.gradients import check_param, parameter_names, problem_gradients, rollout_gradients
from stages.training.snr_stats import (  # noqa: F401 - the statistics `paced snr` reports (tests import them from here)
    RESAMPLES, Moments, bin_edges, bin_of, bootstrap_interval, choose_problems, fit_kernel, normalise,
    identical_by_bin, per_problem_bin_stats, pooled_bin_stats, problem_snr,
)
from stages.common import advance, console, notice, progress, summary_table
from stages.options import key_options, mu_option, option, seed_problems, trust_remote_code_option, INPUT, RUNTIME

# Figure 3's collapse zones: SNR vanishes for p < 0.2 and p > 0.8 (docs/method.md).
LOW, HIGH = 0.2, 0.8
MAX_BINS = 1_000  # K samples give K + 1 pass rates, so more bins than that stay empty; a bound on the work
PLOT_KIND = "snr-plot"


@dataclass
class SnrConfig:
    student: str = option("Student model whose gradients are measured: a local directory or a hub id.", role=INPUT)
    teacher_logits: Path = option("teacher_logits artifact on the student's K rollouts per problem (paced teacher-logits --sequences <student rollouts>); build it WITHOUT --weights so problems with p = 0 and p = 1 are present.", role=INPUT)
    weights: Path = option("Weights artifact (`paced weight` output): only pass_rate is used; problems of weight 0 are measured too.", role=INPUT)
    out: Path = option("Output snr Parquet file: one row per pass-rate bin (the same command again leaves its own file as it is; one made with other options needs --overwrite). The per-problem estimator also writes each problem's SNR beside it, to <out stem>.problems.parquet.", role=RUNTIME)
    bins: int = option("Equal-width pass-rate bins over [0, 1] (p = 1 falls in the last), 1 to 1,000.", 10)
    estimator: str = option("per-problem: each problem's SNR over its K rollouts, averaged per bin with a bootstrap 95% interval (the paper's Figure 3). pooled: one SNR per bin over one gradient per problem, minus 1/n (how alike the bin's problems are).", "per-problem")
    param: str | None = option("Parameter to take the gradient at, by its model.named_parameters() name (default: the output embedding weight, lm_head.weight; tied to the input embedding in some models).", None)
    loss: str = option("The distillation loss whose gradient is measured, as in distill: " + losses.HELP, "fkl")
    mu: float = mu_option()
    plot: Path | None = option("Also draw normalised SNR per bin to this PNG (the paper's Figure 3).", None, role=RUNTIME)
    fit: bool = option("Print the Beta kernel p^alpha (1-p)^beta fitted to the bin means (weighted least squares on log(SNR - 1/K), with 95% intervals) and draw it on --plot. The fit is stored in --out either way; `paced weight --from-snr` takes its alpha and beta.", False, role=RUNTIME)
    max_problems: int | None = option("Measure a seeded random subset of this many problems, drawn from each bin in proportion (for big data sets).", None)
    seed: int = option("Seeds the --max-problems subset and the bootstrap intervals.", 0)
    micro_batch_size: int | None = option("--estimator pooled: sequences per forward pass (default 4); a problem's gradient accumulates over its micro-batches. The per-problem estimator needs each rollout's gradient alone and runs one sequence per pass.", None)
    device: str = option("auto, cpu, cuda or cuda:N. The model runs in float32.", "auto", role=RUNTIME)
    trust_remote_code: bool = trust_remote_code_option()
    overwrite: bool = option("Replace snr files (and plot) that paced wrote with other options or inputs; never a file paced did not write.", False, role=RUNTIME)

    def __post_init__(self) -> None:
        p = []
        if not 1 <= self.bins <= MAX_BINS:
            p.append(f"--bins {self.bins}: must be from 1 to {MAX_BINS:,} (the paper uses 10)")
        p += models.device_problems(self.device)
        p += seed_problems(self.seed)
        if self.estimator not in ESTIMATORS:
            p.append(f"--estimator {self.estimator}: use one of {', '.join(ESTIMATORS)}")
        p += losses.option_problems(self.loss, self.mu)
        if self.max_problems is not None and self.max_problems < 2:
            p.append(f"--max-problems {self.max_problems}: must be at least 2 (a bin's interval, and a pooled SNR, need 2 problems)")
        if self.micro_batch_size is not None:
            if self.micro_batch_size < 1:
                p.append(f"--micro-batch-size {self.micro_batch_size}: must be at least 1")
            elif self.estimator == "per-problem" and self.micro_batch_size != 1:
                p.append(f"--micro-batch-size {self.micro_batch_size}: the per-problem estimator needs each rollout's "
                         f"gradient alone and runs one sequence per pass; leave the option out, or use --estimator pooled")
        if self.plot is not None:
            plot = Path(self.plot)
            if plot.suffix.lower() != ".png":
                p.append(f"--plot {plot}: give a .png file name")
            elif not plot.parent.is_dir():
                p.append(f"--plot {plot}: directory {plot.parent} does not exist; create it first")
        if p:
            raise InputError("\n".join(p))


_HOST = re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname())  # in a copy's name: whose process wrote it


def _row_copy(out: Path) -> Path:
    """This run's copy of the rows it measures, beside `out`: `.OUT.data-HOST-PID.arrow` (the
    name `_remove_dead_caches` reads back)."""
    return out.with_name(f".{out.name}.data-{_HOST}-{os.getpid()}.arrow")


def _remove_dead_caches(out: Path) -> None:
    """Delete the copies of the rows (`.OUT.data-HOST-PID.arrow`, and its `.tmp-PID`) that runs
    for `out` on this machine left beside it when killed (kill -9): their process is gone. Another
    machine's (a shared file system), a live run's, and any other name are kept; a copy named
    without its host (an earlier paced's, `.OUT.data-PID.arrow`) is taken for this machine's."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.data-(?:(.+)-)?(\d+)\.arrow(\.tmp-\d+)?")
    for p in out.parent.glob(f".{glob.escape(out.name)}.data-*.arrow*"):
        m = pattern.fullmatch(p.name)
        if (m and m.group(1) in (None, _HOST) and p.is_file() and not p.is_symlink()
                and not schemas.jobs.process_alive(int(m.group(2)))):
            p.unlink(missing_ok=True)


def problems_path(out: Path) -> Path:
    """Where the per-problem values go: `snr.parquet` -> `snr.problems.parquet`, beside --out."""
    out = Path(out)
    stem = out.stem if out.suffix == ".parquet" else out.name
    return out.parent / f"{stem}.problems.parquet"  # (`.` and `/` have no name to change)


# ---------------------------------------------------------------------------------------


def run(config: SnrConfig, command: str | None = None) -> Path:
    """`command`: the command line, for provenance (the CLI passes it)."""
    import torch

    started = time.perf_counter()
    per_problem = config.estimator == "per-problem"
    # 1. Inputs and options, before any model is loaded.
    table_path = problems_path(config.out)
    table_option = "--out (its per-problem table)"
    beside = per_problem and not Path(config.out).is_dir()  # (a directory --out is refused by name below)
    check_paths({"--out": config.out, table_option: table_path if beside else None, "--plot": config.plot},
                {"--student": config.student, "--teacher-logits": config.teacher_logits, "--weights": config.weights})
    weights = schemas.read(config.weights, schemas.WEIGHTS, option="--weights")
    tl = schemas.read_header(config.teacher_logits, schemas.TEACHER_LOGITS, option="--teacher-logits")
    models.check_model(config.student, "--student")
    # What the outputs depend on: the same key rewrites the same files; another needs --overwrite.
    key = schemas.io.hash_options(key_options(config) | {
        "inputs": [models.model_fingerprint(config.student), tl.fingerprint, weights.fingerprint]})
    schemas.io.check_file_out(config.out, schemas.SNR, key=key, overwrite=config.overwrite)
    if per_problem:
        schemas.io.check_file_out(table_path, schemas.snr.PROBLEMS, option=table_option, key=key, overwrite=config.overwrite)
    if config.plot is not None:
        check_file(config.plot, PLOT_KIND, "--plot", key=key, overwrite=config.overwrite, suffix=".png")
    tokenizer = models.load_tokenizer(config.student, trust_remote_code=config.trust_remote_code)
    tl_options = (tl.provenance or {}).get("options") or {}
    if tl_options.get("tokenizer"):
        models.check_same_tokenizer(tl_options["tokenizer"], models.tokenizer_signature(tokenizer),
                                    "the teacher of --teacher-logits", f"--student {config.student}")
    names, head = parameter_names(config.student, config.trust_remote_code)
    param_name = head if config.param is None else config.param  # (an empty name is not the default: check_param names it)
    check_param(param_name, names)
    if tl_options.get("weights"):
        notice("warning",
               f"--teacher-logits {tl.path} was built with --weights, which skips problems "
               f"of weight 0 (p = 0 and p = 1 under the Beta kernel): those bins will be empty or thin. "
               f"Rebuild the teacher logits without --weights to measure them")

    files, _ = schemas.io.artifact_files(Path(config.teacher_logits), "--teacher-logits")
    sequences: Counter[str] = Counter()
    for f in files:
        sequences.update(pq.read_table(f, columns=["problem_id"])["problem_id"].to_pylist())
    rates = dict(zip(weights.frame["problem_id"].to_list(), weights.frame["pass_rate"].to_list()))
    present = {k: v for k, v in rates.items() if k in sequences}
    # A problem's SNR needs at least 2 rollouts; the pooled estimator takes any problem.
    eligible = {k: v for k, v in present.items() if sequences[k] >= 2} if per_problem else present
    one_rollout = len(present) - len(eligible)
    if per_problem and present and not eligible:
        raise InputError(
            f"--teacher-logits {tl.path}: every problem has one sequence, and a per-problem SNR needs K >= 2 "
            f"rollouts of each: run paced teacher-logits with --sequences on the student's rollouts "
            f"(paced rollout --samples K), or use --estimator pooled"
        )
    chosen = choose_problems(eligible, config.bins, config.max_problems, config.seed)
    # distill's loader copies only rows of weight > 0 and refuses teacher-logits problems the
    # weights file lacks: weight 1 marks the measured problems (whatever their real weight).
    mask = dataclasses.replace(weights, frame=weights.frame.with_columns(
        weight=pl.col("problem_id").is_in(chosen).cast(pl.Float64)))
    # In bin order, so the pooled estimator holds one bin's running mean at a time.
    order = sorted(chosen, key=lambda k: (bin_of(rates[k], config.bins), k))
    cache = _row_copy(Path(config.out))
    _remove_dead_caches(Path(config.out))
    try:
        data, loaded = train_data.load_data(Path(config.teacher_logits), mask, cache)
        train_data.check_loss(loaded["representation"], config.loss)
        train_data.check_lengths(data, config.student)

        # 2. The model: float32, eval mode (no dropout), one parameter trainable.
        device = models.resolve_device(config.device)
        model = models.load_model(config.student, device=device, dtype="float32", trust_remote_code=config.trust_remote_code)
        train_data.check_vocab(data, model)
        params = dict(model.named_parameters(remove_duplicate=False))
        param = params[param_name]
        for p in model.parameters():
            p.requires_grad_(False)
        param.requires_grad_(True)
        model.eval()

        # 3. The gradients, folded into running statistics as they come.
        measured: list[dict[str, Any]] = []
        if per_problem:
            with progress("snr", total=sum(len(data.rows[k]) for k in order), unit="rollouts") as bar:
                for name in order:
                    def grads(name=name):
                        for g in rollout_gradients(model, param, data, name, loss=config.loss, mu=config.mu, device=device):
                            yield g
                            del g  # the next backward must not find this one still held
                            advance(bar, 1, "rollouts")

                    measured.append({"problem_id": name, "pass_rate": rates[name], "bin": bin_of(rates[name], config.bins)}
                                    | problem_snr(grads()))
            rows = per_problem_bin_stats(measured, config.bins, config.seed)
        else:
            with progress("snr", total=len(order), unit="problems") as bar:
                def stream():
                    for name, g in problem_gradients(model, param, data, order, loss=config.loss, mu=config.mu,
                                                     micro_batch_size=config.micro_batch_size or 4, device=device):
                        yield rates[name], g
                        del g
                        advance(bar, 1, "problems")

                rows = pooled_bin_stats(stream(), config.bins)
        shape = list(param.shape)
        del model, param, params
    finally:
        cache.unlink(missing_ok=True)

    # 4. The artifacts (per-problem table first: --out, written last, marks a finished run),
    # the plot, the report.
    ks = [r["num_rollouts"] for r in measured]
    counts = {
        "problems_measured": len(order),
        "skipped_fewer_than_2_rollouts": one_rollout,
        "skipped_identical_gradients": sum(r["status"] != "ok" for r in measured),
        "rollouts_min": min(ks, default=None), "rollouts_max": max(ks, default=None),
    }
    options = asdict(config) | {"param": param_name, "param_shape": shape, "bootstrap_resamples": RESAMPLES} | counts
    prov = schemas.provenance("snr", options, {"teacher_logits": tl, "weights": weights}, command=command)
    prov[FIT_KEY] = fit = fit_kernel(rows)
    counts["identical_by_bin"] = identical_by_bin(measured, config.bins)  # for the summary (not the provenance)
    if per_problem:
        cols = {c.name: [r[c.name] for r in measured] for c in schemas.snr.PROBLEMS.columns}
        schemas.write_file(table_path, schemas.table_from_columns(cols, schemas.snr.PROBLEMS), schemas.snr.PROBLEMS, prov,
                           key=key, overwrite=config.overwrite)
    table = schemas.table_from_columns({c.name: [r[c.name] for r in rows] for c in schemas.SNR.columns}, schemas.SNR)
    out = schemas.write_file(config.out, table, schemas.SNR, prov, key=key, overwrite=config.overwrite)
    if config.plot is not None:
        plot(rows, param_name, config, Path(config.plot), key, fit if config.fit else None)
    report(rows, config, param_name, shape, counts, table_path if per_problem else None,
           len(rates) - len(present), time.perf_counter() - started, fit if config.fit else None)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def report(rows: list[dict[str, Any]], config: SnrConfig, param_name: str, shape: list[int], counts: dict[str, Any],
           table_path: Path | None, no_logits: int, seconds: float, fit: dict[str, Any] | None = None) -> None:
    from rich.table import Table

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    per_problem = config.estimator == "per-problem"
    table = Table(title=f"gradient SNR by pass-rate bin, {config.estimator} estimator ({config.loss}, at {param_name})",
                  title_justify="left")
    heads = (["pass rate", "problems", "mean p", "mean SNR", "95% CI", "normalised", "SNR - 1/K", "status"] if per_problem
             else ["pass rate", "problems", "mean p", "SNR", "SNR - 1/n", "normalised", "status"])
    for col in heads:
        table.add_column(col, justify="left" if col in ("pass rate", "status") else "right")
    for r in rows:
        close = "]" if r["bin"] == config.bins - 1 else ")"
        cells = [f"[{r['lo']:.2f}, {r['hi']:.2f}{close}", f"{r['problems']:,}", num(r["mean_pass_rate"], ".3f")]
        if per_problem:
            ci = "-" if r["snr_ci_low"] is None else f"[{r['snr_ci_low']:.4g}, {r['snr_ci_high']:.4g}]"
            cells += [num(r["snr"], ".4g"), ci, num(r["snr_normalized"], ".3f"), num(r["snr_debiased"], ".4g")]
        else:
            cells += [num(r["snr"], ".4g"), num(r["snr_debiased"], ".4g"), num(r["snr_normalized"], ".3f")]
        table.add_row(*cells, r["status"])
    console.print(table)
    measured = counts["problems_measured"]
    summary = [("estimator", "per-problem (each problem's SNR over its rollouts, mean per bin)" if per_problem
                else "pooled (one SNR per bin over per-problem gradients, minus 1/n)")]
    summary.append(("problems measured", f"{measured:,}" + (f" (subset, seed {config.seed})" if config.max_problems else "")))
    if per_problem:
        lo, hi = counts["rollouts_min"], counts["rollouts_max"]
        summary += [
            ("rollouts per problem (K)", "-" if lo is None else f"{lo}" if lo == hi else f"{lo} to {hi}"),
            ("skipped: fewer than 2 rollouts", f"{counts['skipped_fewer_than_2_rollouts']:,}"),
            ("skipped: identical gradients (tr Cov = 0)", counts["identical_by_bin"]),
            ("bootstrap", f"{RESAMPLES:,} resamples, seed {config.seed}, 95% percentile interval"),
        ]
    summary += [
        ("parameter", f"{param_name} {tuple(shape)}"),
        ("bins with an SNR", f"{sum(r['snr'] is not None for r in rows)} of {len(rows)}"),
    ]
    if no_logits:
        summary.append(("problems in --weights without teacher logits", f"{no_logits:,}"))
    if table_path is not None:
        summary.append(("per-problem values", str(table_path)))
    if fit is not None:
        summary.append(("fitted kernel p^alpha (1-p)^beta", describe_fit(fit)))
    summary.append(("seconds", f"{seconds:.1f}"))
    summary_table(f"snr summary ({config.estimator} estimator)", summary)


def describe_fit(fit: dict[str, Any]) -> str:
    """One line: alpha and beta with their intervals, and what the fit rests on."""
    if fit["status"] != "ok":
        return f"no fit ({fit['status']})"

    def ci(name):
        return "" if fit[f"{name}_ci"] is None else f" [{fit[f'{name}_ci'][0]:.2f}, {fit[f'{name}_ci'][1]:.2f}]"

    return (f"alpha {fit['alpha']:.2f}{ci('alpha')}, beta {fit['beta']:.2f}{ci('beta')} (95%; {fit['bins_used']} bins, "
            + ("no interval: 3 bins fit exactly" if fit["dof"] == 0 else f"{fit['dof']} dof") + f", {fit['weighting']} weights)")


def plot(rows: list[dict[str, Any]], param_name: str, config: SnrConfig, path: Path, key: str,
         fit: dict[str, Any] | None = None) -> None:
    """Bars of normalised SNR at the bin centres, with the bootstrap 95% interval as whiskers
    (per-problem estimator) and n on each bar: red where a bin lies wholly in the paper's
    collapse zones (p < 0.2 or p > 0.8), green between; bins without an SNR hatched grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_problem = config.estimator == "per-problem"
    width = 0.9 / config.bins
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max((r["snr"] for r in rows if r["snr"] is not None), default=None)
    high, low = 1.0, 0.0
    for r in rows:
        centre = (r["lo"] + r["hi"]) / 2
        y = r["snr_normalized"]
        if y is None:
            ax.bar(centre, 0.04, width=width, color="#ddd", hatch="//", edgecolor="#888")
            label = {"empty": "empty", "too few problems (n=1)": "n=1"}.get(r["status"], "no SNR" if r["snr"] is None else "n/a")
            ax.text(centre, 0.06, label, ha="center", va="bottom", fontsize=8, color="#555", rotation=90)
            continue
        outside = r["hi"] <= LOW + 1e-12 or r["lo"] >= HIGH - 1e-12
        ax.bar(centre, y, width=width, color="#c33" if outside else "#3a3", edgecolor="#333")
        tip = y
        if per_problem and r["snr_ci_low"] is not None and top:
            lo, hi = r["snr_ci_low"] / top, r["snr_ci_high"] / top
            ax.errorbar(centre, y, yerr=[[y - lo], [hi - y]], fmt="none", ecolor="#222", capsize=3, lw=1)
            tip = max(y, hi)
        high, low = max(high, tip), min(low, y)
        ax.text(centre, max(tip, 0) + 0.02, f"n={r['problems']:,}", ha="center", va="bottom", fontsize=7, color="#333")
    for edge in (LOW, HIGH):
        ax.axvline(edge, color="#888", ls="--", lw=1)
    # The bars' scale: the largest bin mean (per-problem), the largest SNR - 1/n (pooled).
    scale = top if per_problem else max((r["snr_debiased"] for r in rows if r["snr_debiased"] is not None), default=None)
    if fit is not None and fit["status"] == "ok" and scale and scale > 0:
        grid = np.linspace(0.005, 0.995, 199)
        curve = np.exp(fit["log_scale"] + fit["alpha"] * np.log(grid) + fit["beta"] * np.log1p(-grid)) / scale
        ax.plot(grid, curve, color="#236", lw=1.5,
                label=f"fit: p^{fit['alpha']:.2f} (1-p)^{fit['beta']:.2f} (of SNR - 1/{'K' if per_problem else 'n'})")
        ax.legend(fontsize=7, loc="upper right")
        high = max(high, min(float(curve.max()), 2 * high))
    ax.set_xlim(0, 1)
    ax.set_ylim(low * 1.1, high * 1.1 + 0.05)
    ax.set_xlabel("student pass rate p")
    measured = sum(r["problems"] for r in rows)
    if per_problem:
        ax.set_ylabel("mean per-problem SNR, normalised")
        title = "Gradient SNR = ||mean_k g_k||² / tr Cov_k g_k per problem, mean per bin (95% bootstrap CI)"
    else:
        ax.set_ylabel("pooled SNR - 1/n, normalised")
        title = "Pooled gradient SNR over a bin's problems, minus 1/n"
    ax.set_title(f"{title}\n({config.loss} at {param_name}, {measured:,} problems, {config.bins} bins)", fontsize=9)
    fig.tight_layout()
    try:
        save_figure(fig, path, PLOT_KIND, key, overwrite=config.overwrite)
    finally:
        plt.close(fig)
