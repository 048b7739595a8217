"""Gradient signal-to-noise ratio per pass-rate bin: the diagnostic behind Paced (Figure 3).

    paced snr --student Qwen/Qwen3-1.7B --teacher-logits teacher_logits/ \
        --weights weights.parquet --out snr.parquet --bins 10 --plot snr.png

For every problem i, g_i is the gradient of its distillation loss L_i (the mean token loss over
its sequences, exactly as `paced distill` computes it, unweighted) with respect to one
parameter: the output embedding by default (the paper measures at `lm_head`). Problems are
binned by pass rate into `--bins` equal-width bins over [0, 1], and per bin

    SNR = ||mean g||^2 / tr Cov g,    tr Cov g = sum_i ||g_i - mean g||^2 / (n - 1)

The paper's Figure 3 finds it bell-shaped over p, collapsing for p < 0.2 and p > 0.8: the
shape the Beta kernel w(p) = p^alpha (1-p)^beta is built to follow. The output `snr` column is
normalised by the largest bin, as in the figure. ||mean g||^2 carries tr Cov / n of noise, so
a bin of n problems reads at least about 1/n with no signal at all; `snr_debiased` = snr - 1/n
removes that floor, for comparing bins of very different sizes.

Problems of weight 0 are measured too (the pass rate is all that matters here), so build the
teacher logits WITHOUT `--weights`, or the bins near p = 0 and p = 1 stay empty. A real output
embedding gradient is as large as the weight (about 1 GB for Qwen3-1.7B in float32), so
gradients are never stored: each bin keeps a running mean and a running sum of squared
deviations (Welford), one parameter-sized buffer per bin. The model runs in float32, in eval
mode, with every other parameter frozen. `--max-problems` measures a seeded subset, drawn
from each bin in proportion to its size.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl
import pyarrow.parquet as pq

import schemas
from schemas import InputError
from stages import distill, losses, models
from stages.common import advance, console, progress, summary_table

# Token positions per float32 [positions, vocabulary] loss chunk: distill's default.
CHUNK_SIZE = 1024
# Figure 3's collapse zones: SNR vanishes for p < 0.2 and p > 0.8 (PAPER.md).
LOW, HIGH = 0.2, 0.8


@dataclass
class SnrConfig:
    student: str
    """Student model: a local directory or a hub id (the model whose gradients are measured)."""
    teacher_logits: Path
    """teacher_logits artifact, built without --weights so every problem is present."""
    weights: Path
    """Weights artifact: only its pass_rate column is used."""
    out: Path
    """Output Parquet file of the snr artifact."""
    bins: int = 10
    """Equal-width pass-rate bins over [0, 1]."""
    param: str | None = None
    """Parameter name (model.named_parameters()); None: the output embedding weight."""
    loss: str = "fkl"
    """The distillation loss whose gradient is measured: fkl, rkl or akl."""
    mu: float = 0.5
    """AKL head mass (as in distill)."""
    plot: Path | None = None
    """Optional PNG: normalised SNR per bin, as the paper's Figure 3."""
    max_problems: int | None = None
    """Measure a seeded subset of this many problems, stratified by bin."""
    seed: int = 0
    """Seeds the subset."""
    micro_batch_size: int = 4
    """Sequences per forward pass; a problem's gradient accumulates over its micro-batches."""
    device: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        p = []
        if self.bins < 1:
            p.append(f"--bins {self.bins}: must be at least 1 (the paper uses 10)")
        if self.loss not in losses.LOSSES:
            p.append(f"--loss {self.loss}: use one of {', '.join(losses.LOSSES)}")
        if not 0 < self.mu < 1:
            p.append(f"--mu {self.mu}: the AKL head mass must be in (0, 1)")
        if self.max_problems is not None and self.max_problems < 2:
            p.append(f"--max-problems {self.max_problems}: must be at least 2 (an SNR needs 2 problems in a bin)")
        if self.micro_batch_size < 1:
            p.append(f"--micro-batch-size {self.micro_batch_size}: must be at least 1")
        if self.plot is not None:
            plot = Path(self.plot)
            if plot.suffix.lower() != ".png":
                p.append(f"--plot {plot}: give a .png file name")
            elif not plot.parent.is_dir():
                p.append(f"--plot {plot}: directory {plot.parent} does not exist; create it first")
        if p:
            raise InputError("\n".join(p))


# ---------------------------------------------------------------------------------------
# Binning and the streaming statistics: pure functions, no model.


def bin_of(p: float, bins: int) -> int:
    """The bin of pass rate p: lo <= p < hi, and p = 1 in the last bin.

    p * bins is rounded to 9 decimals first so a pass rate on an edge (k/K, e.g. 3/10 with 10
    bins) lands in the bin it opens whatever the float rounding of k/K.
    """
    return min(int(math.floor(round(p * bins, 9))), bins - 1)


def bin_edges(i: int, bins: int) -> tuple[float, float]:
    return i / bins, (i + 1) / bins


def bin_stats(items: Iterable[tuple[float, Any]], bins: int) -> list[dict[str, Any]]:
    """Per-bin SNR of a stream of (pass rate, gradient) pairs, one snr-artifact row per bin.

    Gradients are tensors of any shape (all the same), consumed one at a time and never kept:
    per bin only a running mean (one buffer of the gradient's size and dtype) and the running
    sum of squared deviations M2 = sum_i ||g_i - mean||^2 (Welford's update, stable where
    sum ||g||^2 - n ||mean||^2 would cancel). tr Cov = M2 / (n - 1), the unbiased estimate.
    """
    import torch

    n = [0] * bins
    p_sum = [0.0] * bins
    mean: list[Any] = [None] * bins
    m2 = [0.0] * bins
    for p, g in items:
        b = bin_of(p, bins)
        g = g.detach().reshape(-1)
        if not bool(torch.isfinite(g).all()):
            raise RuntimeError(f"a gradient of pass rate {p} is not finite (NaN or inf); check the model and inputs")
        n[b] += 1
        p_sum[b] += p
        if mean[b] is None:
            mean[b] = g.clone()
            continue
        delta = g - mean[b]
        mean[b].add_(delta, alpha=1.0 / n[b])
        # delta . (g - new mean) = (1 - 1/n) ||delta||^2: no second parameter-sized temporary.
        m2[b] += (1.0 - 1.0 / n[b]) * float(torch.dot(delta, delta))
        del delta

    rows = []
    for b in range(bins):
        lo, hi = bin_edges(b, bins)
        snr, debiased, status = None, None, "ok"
        if n[b] == 0:
            status = "empty"
        elif n[b] == 1:
            status = "too few problems (n=1)"
        elif m2[b] <= 0.0:
            status = "identical gradients (tr Cov = 0)"
        else:
            signal = float(torch.dot(mean[b], mean[b]))
            snr = signal / (m2[b] / (n[b] - 1))
            # E||mean||^2 = ||E g||^2 + tr Cov / n: subtract the noise floor.
            debiased = snr - 1.0 / n[b]
        rows.append(
            {
                "bin": b, "lo": lo, "hi": hi, "problems": n[b],
                "mean_pass_rate": p_sum[b] / n[b] if n[b] else None,
                "snr": snr, "snr_normalized": None, "snr_debiased": debiased, "status": status,
            }
        )
        mean[b] = None  # free the buffer before the next bin's dot product
    top = max((r["snr"] for r in rows if r["snr"] is not None), default=None)
    if top:  # 0 / 0 when every bin's mean gradient is exactly 0: leave null
        for r in rows:
            if r["snr"] is not None:
                r["snr_normalized"] = r["snr"] / top
    return rows


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


# ---------------------------------------------------------------------------------------
# Gradients: distill's own collate and micro_batch_loss, one problem at a time.


def problem_gradients(model, param, data: distill.TrainData, names: list[str], *, loss: str, mu: float,
                      micro_batch_size: int, device: str) -> Iterator[tuple[str, Any]]:
    """Yield (problem, gradient of its mean token loss w.r.t. `param`), one problem at a time.

    The yielded tensor is `param.grad`, valid until the next problem starts: consume it first.
    Coefficient 1 / T_i on every sequence of problem i makes distill's weighted sum its mean
    token loss (distill uses w_i / (N T_i)).
    """
    import torch

    def autocast():  # float32 everywhere: the SNR compares small differences of gradients
        return torch.autocast(device.split(":")[0], enabled=False)

    for name in names:
        param.grad = None
        rows = data.rows[name]
        for m in range(0, len(rows), micro_batch_size):
            chunk = rows[m : m + micro_batch_size]
            batch = distill.collate(data, chunk, device)
            coef = torch.full((len(chunk),), 1.0 / data.tokens[name], dtype=torch.float32, device=device)
            terms = distill.micro_batch_loss(model, batch, coef, loss=loss, mu=mu, chunk_size=CHUNK_SIZE, autocast=autocast)
            terms["loss"].backward()
        if param.grad is None:
            raise InputError("--param: the distillation loss does not depend on this parameter; choose another")
        yield name, param.grad


def parameter_names(student: str, trust_remote_code: bool) -> tuple[list[str], str]:
    """The student's parameter names (tied ones under each name) and its output embedding
    weight's name, from the config alone: the model is built on the meta device, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(student, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    return [n for n, _ in model.named_parameters(remove_duplicate=False)], _head_name(model)


def _head_name(model) -> str:
    head = model.get_output_embeddings()
    return next(f"{n}.weight" for n, m in model.named_modules() if m is head)


def check_param(name: str, names: list[str]) -> None:
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    examples = list(dict.fromkeys(close + [names[0], names[-1], *names[1:3]]))[:5]
    raise InputError(
        f"--param {name}: the student has no parameter of that name; valid names include "
        f"{', '.join(examples)} ({len(names)} in all, as listed by model.named_parameters()). "
        f"Leave --param out to use the output embedding weight"
    )


# ---------------------------------------------------------------------------------------


def run(config: SnrConfig) -> Path:
    import torch

    started = time.perf_counter()
    # 1. Inputs and options, before any model is loaded.
    schemas.io.check_file_out(config.out, schemas.SNR)
    weights = schemas.read(config.weights, schemas.WEIGHTS, option="--weights")
    tl = schemas.read_header(config.teacher_logits, schemas.TEACHER_LOGITS, option="--teacher-logits")
    models.check_model(config.student, "--student")
    tokenizer = models.load_tokenizer(config.student, trust_remote_code=config.trust_remote_code)
    tl_options = (tl.provenance or {}).get("options") or {}
    if tl_options.get("tokenizer"):
        models.check_same_tokenizer(tl_options["tokenizer"], models.tokenizer_signature(tokenizer),
                                    "the teacher of --teacher-logits", f"--student {config.student}")
    names, head = parameter_names(config.student, config.trust_remote_code)
    param_name = config.param or head
    check_param(param_name, names)
    if tl_options.get("weights"):
        console.print(
            f"[yellow]warning:[/] --teacher-logits {tl.path} was built with --weights, which skips problems "
            f"of weight 0 (p = 0 and p = 1 under the Beta kernel): those bins will be empty or thin. "
            f"Rebuild the teacher logits without --weights to measure them"
        )

    files, _ = schemas.io.artifact_files(Path(config.teacher_logits), "--teacher-logits")
    in_tl = set()
    for f in files:
        in_tl.update(pq.read_table(f, columns=["problem_id"])["problem_id"].to_pylist())
    rates = dict(zip(weights.frame["problem_id"].to_list(), weights.frame["pass_rate"].to_list()))
    chosen = choose_problems({k: v for k, v in rates.items() if k in in_tl}, config.bins, config.max_problems, config.seed)
    # distill's loader copies only rows of weight > 0 and refuses teacher-logits problems the
    # weights file lacks: weight 1 marks the measured problems (whatever their real weight).
    keep = set(chosen)
    mask = dataclasses.replace(weights, frame=weights.frame.with_columns(
        weight=pl.col("problem_id").is_in(list(keep)).cast(pl.Float64)))
    cache = Path(config.out).with_name(f".{Path(config.out).name}.data-{os.getpid()}.arrow")
    try:
        data, stats = distill.load_data(Path(config.teacher_logits), mask, cache)
        distill.check_lengths(data, config.student)

        # 2. The model: float32, eval mode (no dropout), one parameter trainable.
        device = models.resolve_device(config.device)
        model = models.load_model(config.student, device=device, dtype="float32", trust_remote_code=config.trust_remote_code)
        distill.check_vocab(data, model)
        params = dict(model.named_parameters(remove_duplicate=False))
        param = params[param_name]
        for p in model.parameters():
            p.requires_grad_(False)
        param.requires_grad_(True)
        model.eval()

        # 3. One gradient per problem, folded into its bin as it comes.
        with progress("snr", total=len(data.problems), unit="problems") as bar:
            def stream():
                for name, g in problem_gradients(model, param, data, data.problems, loss=config.loss, mu=config.mu,
                                                 micro_batch_size=config.micro_batch_size, device=device):
                    yield rates[name], g
                    advance(bar, 1, "problems")

            rows = bin_stats(stream(), config.bins)
        shape = list(param.shape)
        del model, param, params
    finally:
        cache.unlink(missing_ok=True)

    # 4. The artifact, the plot, the report.
    options = asdict(config) | {"param": param_name, "param_shape": shape, "problems_measured": len(data.problems)}
    prov = schemas.provenance("snr", options, {"teacher_logits": tl, "weights": weights})
    table = schemas.table_from_columns({c.name: [r[c.name] for r in rows] for c in schemas.SNR.columns}, schemas.SNR)
    out = schemas.write_file(config.out, table, schemas.SNR, prov)
    if config.plot is not None:
        plot(rows, param_name, config, Path(config.plot))
    report(rows, config, param_name, shape, len(rates) - len(rates.keys() & in_tl), time.perf_counter() - started)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def report(rows: list[dict[str, Any]], config: SnrConfig, param_name: str, shape: list[int], no_logits: int, seconds: float) -> None:
    from rich.table import Table

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    table = Table(title=f"gradient SNR by pass-rate bin ({config.loss}, at {param_name})", title_justify="left")
    for col, justify in (("pass rate", "left"), ("problems", "right"), ("mean p", "right"), ("SNR", "right"),
                         ("normalised", "right"), ("SNR - 1/n", "right"), ("status", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        close = "]" if r["bin"] == config.bins - 1 else ")"
        table.add_row(f"[{r['lo']:.2f}, {r['hi']:.2f}{close}", f"{r['problems']:,}", num(r["mean_pass_rate"], ".3f"),
                      num(r["snr"], ".4g"), num(r["snr_normalized"], ".3f"), num(r["snr_debiased"], ".4g"), r["status"])
    console.print(table)
    measured = sum(r["problems"] for r in rows)
    summary = [
        ("problems measured", f"{measured:,}" + (f" (subset, seed {config.seed})" if config.max_problems else "")),
        ("parameter", f"{param_name} {tuple(shape)}"),
        ("bins with an SNR", f"{sum(r['snr'] is not None for r in rows)} of {len(rows)}"),
    ]
    if no_logits:
        summary.append(("problems in --weights without teacher logits", f"{no_logits:,}"))
    summary.append(("seconds", f"{seconds:.1f}"))
    summary_table("snr summary", summary)


def plot(rows: list[dict[str, Any]], param_name: str, config: SnrConfig, path: Path) -> None:
    """Bars of normalised SNR at the bin centres: red where a bin lies wholly in the paper's
    collapse zones (p < 0.2 or p > 0.8), green between; bins without an SNR hatched grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.9 / config.bins
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        centre = (r["lo"] + r["hi"]) / 2
        if r["snr_normalized"] is None:
            ax.bar(centre, 0.04, width=width, color="#ddd", hatch="//", edgecolor="#888")
            label = "empty" if r["problems"] == 0 else "n<2" if r["problems"] < 2 else ("tr Cov=0" if r["snr"] is None else "n/a")
            ax.text(centre, 0.06, label, ha="center", va="bottom", fontsize=8, color="#555", rotation=90)
            continue
        outside = r["hi"] <= LOW + 1e-12 or r["lo"] >= HIGH - 1e-12
        ax.bar(centre, r["snr_normalized"], width=width, color="#c33" if outside else "#3a3", edgecolor="#333")
    for edge in (LOW, HIGH):
        ax.axvline(edge, color="#888", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("student pass rate p")
    ax.set_ylabel("normalised gradient SNR")
    measured = sum(r["problems"] for r in rows)
    ax.set_title(f"Gradient SNR = ||E[g]||² / tr Cov[g] by pass rate\n"
                 f"({config.loss} at {param_name}, {measured:,} problems, {config.bins} bins)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
