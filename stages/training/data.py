"""The training rows of a distill run: the teacher_logits rows of problems with weight > 0,
streamed into one memory-mapped Arrow file and checked on the way; each step's problems in a
seeded order; micro-batches collated into tensors.

Every representation of the teacher (`paced teacher-logits --logits topk|sampled|hybrid`) is
collated into the same buckets the losses take (stages/training/losses.py): the top-k ids,
then the drawn ids with the mass each stands for, padded to one width per micro-batch with
ids of mass 0 (distinct from the position's own, so each bucket is one token), then the tail
bucket, which holds the teacher's remaining mass when nothing was drawn and nothing (mass 0)
when the draws stand for it. The forward-KL gradient on such buckets is softmax(z) - m: with
drawn masses m whose expectation is the teacher's probabilities, an unbiased estimate of the
full-vocabulary gradient. `fkl_shift` turns the bucket divergence into an unbiased estimate of
the KL's value: the divergence from the buckets is -H(m) - sum m log q; the KL is
-H_T - sum p_T log q, so the shift is H(m) - H_T (the teacher's entropy, stored per token).
"""

from __future__ import annotations

import functools
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from schemas import InputError
from stages import models
from stages.training import losses


@dataclass
class TrainData:
    table: pa.Table               # memory-mapped Arrow IPC: one row per sequence
    problems: tuple[str, ...]     # problems with weight > 0 and at least one sequence
    weight: dict[str, float]
    rows: dict[str, list[int]]    # problem -> its row indices in `table`
    tokens: dict[str, int]        # problem -> response tokens over all its sequences

    def __post_init__(self) -> None:
        self.problems = tuple(self.problems)  # hashable: epoch_order caches on it


def load_data(tl: Path, weights: schemas.Artifact, cache: Path) -> tuple[TrainData, dict[str, int]]:
    """Stream teacher_logits parts into one memory-mapped Arrow file of the trained rows.

    Arrow IPC maps zero-copy, so a data set larger than memory is paged in on demand; only
    rows of problems with weight > 0 are copied (zero-weight problems are never loaded).
    """
    w = dict(zip(weights.frame["problem_id"].to_list(), weights.frame["weight"].to_list()))
    files, _ = schemas.io.artifact_files(Path(tl), "--teacher-logits")
    stats = {"sequences": 0, "skipped_zero_weight": 0, "missing_weight": 0, "draws": 0}
    tmp = schemas.outputs.temp_path(cache)
    missing: list[str] = []
    try:  # nothing of the copy is left when it fails: a bad part, a full disk, Ctrl-C
        k = _copy_rows(files, w, tmp, cache, stats, missing)
        if missing:
            raise InputError(
                f"--weights {weights.path}: no weight for {len(set(missing))} problem(s) in --teacher-logits "
                f"({', '.join(repr(x) for x in sorted(set(missing))[:5])}); the weights were computed from "
                f"other scores than these teacher logits: rerun paced weight on the matching scores"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stats["missing_weight"] = len(missing)
    stats["top_k"] = k[0] if k is not None else 0
    stats["representation"] = representation(stats["top_k"], stats["draws"])
    os.replace(tmp, cache)
    return open_data(cache, w), stats


def _copy_rows(files: list[Path], w: dict[str, float], tmp: Path, cache: Path, stats: dict[str, int],
               missing: list[str]) -> tuple[int, Path] | None:
    """Check each part and copy the rows of problems of weight > 0 into the Arrow file `tmp` (a
    failure to write it is named by `cache`, what the user knows); problems `w` lacks go to
    `missing`. Returns the artifact's k and the part it was first seen in."""
    columns = ["problem_id", "sample_index", "prompt_token_ids", "token_ids", "topk_ids", "topk_logprobs", "tail_logprob"]
    drawn = list(schemas.teacher_logits.DRAWS)  # version 2; a version-1 part has none (top-k)
    keep_w = pa.array([p for p, v in w.items() if v > 0], pa.string())
    k: tuple[int, Path] | None = None
    keys: list[pa.Table] = []  # every part's (problem_id, sample_index, its index in files)
    with schemas.outputs.writing(cache):
        sink = pa.OSFile(str(tmp), "wb")
    with sink:
        writer = None
        for f in files:
            part = pq.ParquetFile(f)  # one footer read: which version-2 columns it has, then its rows
            t = schemas.teacher_logits.with_draws(part.read(columns=columns + [c for c in drawn if c in part.schema_arrow.names]))
            t = t.select([*columns, *drawn])
            _check_nulls(t, f, columns + drawn[:2])  # (entropy may be null: vLLM cannot see it)
            _check_aligned(t, f)
            keys.append(pa.table({"problem_id": t["problem_id"].cast(pa.large_string()), "sample_index": t["sample_index"].cast(pa.int64()),
                                  "part": pa.array([len(keys)] * t.num_rows, pa.int32())}))
            stats["draws"] = max(stats["draws"], _check_draws(t, f))
            k = _check_values(t, f, k)  # after the draws' own checks: it sums their masses
            stats["sequences"] += t.num_rows
            ids = t["problem_id"]
            known = pc.is_in(ids, value_set=pa.array(list(w), pa.string()))
            if not pc.all(known).as_py():
                missing += pc.filter(ids, pc.invert(known)).to_pylist()
            kept = t.filter(pc.is_in(ids, value_set=keep_w))
            stats["skipped_zero_weight"] += t.num_rows - kept.num_rows
            with schemas.outputs.writing(cache):
                if writer is None:
                    writer = pa.ipc.new_file(sink, kept.schema)
                writer.write_table(kept)
        _check_unique(keys, files)
        with schemas.outputs.writing(cache):
            if writer is not None:
                writer.close()
    return k


def representation(k: int, draws: int) -> str:
    """topk, sampled or hybrid: what an artifact holds, from its k and its most draws at a position."""
    return "topk" if draws == 0 else ("sampled" if k == 0 else "hybrid")


def check_loss(representation: str, loss: str, option: str = "--loss") -> None:
    """Refuse a loss the representation cannot estimate (exit 2, with the reason)."""
    why = losses.BUILT_IN[loss].not_drawn
    if representation != "topk" and why:
        drawn = [name for name, each in losses.BUILT_IN.items() if not each.not_drawn]
        raise InputError(
            f"{option} {loss}: --teacher-logits holds a {representation} representation (tokens drawn from the "
            f"teacher), which gives an unbiased estimate of {', '.join(drawn)} only: {loss} {why}; use --loss {drawn[0]}, or "
            f"teacher logits made with --logits topk"
        )


def _check_draws(t: pa.Table, f: Path) -> int:
    """The draws' invariants (ids >= 0, one mass per id, masses that are log-probabilities, an
    entropy >= 0); returns the most distinct draws at one position."""
    problems = []
    ids = pc.list_flatten(t["sample_ids"])
    mass = pc.list_flatten(t["sample_logmass"])
    lengths = pc.list_value_length(ids)
    if not pc.all(pc.equal(lengths, pc.list_value_length(mass))).as_py():
        problems.append("sample_ids and sample_logmass differ in length at some positions")
    low = pc.min(pc.list_flatten(ids)).as_py()
    if low is not None and low < 0:
        problems.append(f"sample_ids holds negative token id {low}")
    v = pc.list_flatten(mass).to_numpy(zero_copy_only=False)
    if (np.isnan(v) | (v > _LOGPROB_SLACK)).any():
        problems.append("sample_logmass holds values that are not log-probabilities (NaN, or above 0)")
    h = pc.list_flatten(t["entropy"]).to_numpy(zero_copy_only=False)
    if (np.isnan(h) | (h < -_LOGPROB_SLACK)).any():
        problems.append("entropy holds NaN or negative values")
    if problems:
        raise InputError(f"--teacher-logits {f}: {'; '.join(problems)}; regenerate it with paced teacher-logits")
    most = pc.max(lengths).as_py()
    return int(most or 0)


def open_data(cache: Path, w: dict[str, float]) -> TrainData:
    """The TrainData of a cache that `load_data` wrote (other processes of a launch open it)."""
    table = pa.ipc.open_file(pa.memory_map(str(cache), "r")).read_all()
    frame = pl.DataFrame(
        {
            "problem_id": table["problem_id"].to_pylist(),
            "n": pc.list_value_length(table["token_ids"]).to_pylist(),
        }
    ).with_row_index("row")
    grouped = frame.group_by("problem_id", maintain_order=True).agg(pl.col("row"), pl.col("n").sum())
    rows = dict(zip(grouped["problem_id"].to_list(), grouped["row"].to_list()))
    tokens = dict(zip(grouped["problem_id"].to_list(), grouped["n"].to_list()))
    problems = list(rows)
    return TrainData(table, problems, {p: float(w[p]) for p in problems}, rows, tokens)


def _check_nulls(t: pa.Table, f: Path, columns: list[str]) -> None:
    """No null in `columns`, nor inside their lists (what reading an artifact checks, here per part
    as it streams by: a null would reach collate as None)."""
    problems = []
    for name in columns:
        col = t[name]
        if col.null_count:
            problems.append(f"{name} is null in {col.null_count:,} row(s)")
            continue
        while pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.list_flatten(col)
            if col.null_count:
                problems.append(f"{name} holds {col.null_count:,} null {'value' if not pa.types.is_list(col.type) else 'list'}(s)")
                break
    if problems:
        raise InputError(f"--teacher-logits {f}: {'; '.join(problems)}; regenerate it with paced teacher-logits")


def _check_aligned(t: pa.Table, f: Path) -> None:
    problem = schemas.teacher_logits.misaligned_problem(pl.from_arrow(t.select(["problem_id", "sample_index"])),
                                                        schemas.teacher_logits.misaligned(t), t.column_names)
    if problem:
        raise InputError(f"--teacher-logits {f}: {problem}")


def _check_unique(keys: list[pa.Table], files: list[Path]) -> None:
    """One row per (problem_id, sample_index) across every part (a row twice is trained twice):
    the artifact's key check, on the keys `_copy_rows` kept of each part (`part`: its index)."""
    if not keys:
        return
    frame = pl.from_arrow(pa.concat_tables(keys))
    problems = schemas.base._key_problems(frame, schemas.TEACHER_LOGITS)
    if problems:
        twice = frame.filter(pl.struct(*schemas.TEACHER_LOGITS.key).is_duplicated())
        where = sorted({str(files[i]) for i in twice["part"].to_list()})
        raise InputError(f"--teacher-logits {files[0].parent}: {problems[0]} (in {', '.join(where[:3])}); "
                         f"or regenerate the artifact with paced teacher-logits")


# How far above 0 a stored log-probability may lie: float32 log-softmax rounds to at most a few
# 1e-7 above it; a value past this is not a log-probability (logits stored by mistake?).
_LOGPROB_SLACK = 1e-3


def _check_values(t: pa.Table, f: Path, k: tuple[int, Path] | None) -> tuple[int, Path] | None:
    """What the losses take on trust, checked per part as it streams by: one k for every position
    of every part and shard (collate reshapes by it), teacher log-probabilities that are
    log-probabilities (no NaN, no +inf, none above 0; -inf is a probability of 0 and allowed),
    token ids >= 0, a prompt token before every response, a teacher token at every position.
    Returns the artifact's k and the part that set it."""
    problems = []
    ks = pc.list_value_length(pc.list_flatten(t["topk_ids"]))
    if len(ks) == 0:
        return k
    lo, hi = (v.as_py() for v in pc.min_max(ks).values())
    if lo != hi:
        problems.append(f"positions hold from {lo} to {hi} teacher tokens (one k per artifact)")
    elif k is not None and lo != k[0]:
        problems.append(
            f"k = {lo} teacher tokens per position, but {k[1]} has k = {k[0]} (parts or shards made with "
            f"different --top-k; rerun paced teacher-logits with one --top-k for all of them)"
        )
    if not pc.all(pc.equal(ks, pc.list_value_length(pc.list_flatten(t["topk_logprobs"])))).as_py():
        problems.append("topk_logprobs and topk_ids differ in length at some positions")
    for name, depth in (("topk_logprobs", 2), ("tail_logprob", 1)):
        col = t[name].combine_chunks()
        flat = pc.list_flatten(pc.list_flatten(col)) if depth == 2 else pc.list_flatten(col)
        v = flat.to_numpy(zero_copy_only=False)  # float16 or float32, compared as stored (no copy up)
        bad = np.isnan(v) | (v > _LOGPROB_SLACK)
        if bad.any():
            row_of = pc.list_parent_indices(col).to_numpy()  # row of each position
            if depth == 2:
                row_of = row_of[pc.list_parent_indices(pc.list_flatten(col)).to_numpy()]  # row of each value
            worst = "NaN" if np.isnan(v).any() else f"up to {float(np.nanmax(v)):g}"
            problems.append(
                f"{name} holds {int(bad.sum()):,} value(s) that are not log-probabilities ({worst}; must be "
                f"<= 0, -inf for probability 0) in problem(s) {_named(t, row_of[np.flatnonzero(bad)])}"
            )
    no_prompt = pc.equal(pc.list_value_length(t["prompt_token_ids"]), 0)
    if pc.any(no_prompt).as_py():
        problems.append(f"prompt_token_ids is empty in {pc.sum(no_prompt).as_py():,} row(s) (problem(s) "
                        f"{_named(t, np.flatnonzero(no_prompt.to_numpy(zero_copy_only=False)))}): the first "
                        f"response token is predicted from the prompt's last one")
    if lo == 0:
        none = pc.equal(pc.list_value_length(pc.list_flatten(t["sample_ids"])), 0)
        if pc.any(none).as_py():
            problems.append(f"{pc.sum(none).as_py():,} position(s) hold no teacher token (k = 0 and no draws): "
                            f"nothing to learn from there")
    for name in ("token_ids", "prompt_token_ids", "topk_ids"):
        flat = pc.list_flatten(t[name])
        flat = pc.list_flatten(flat) if name == "topk_ids" else flat
        low = pc.min(flat).as_py()
        if low is not None and low < 0:
            problems.append(f"{name} holds negative token id {low}")
    if not problems:  # the buckets' sums assume one k and log-probabilities
        problems = _bucket_problems(t, lo)
    if problems:
        raise InputError(
            f"--teacher-logits {f}: {'; '.join(problems)}; regenerate it with paced teacher-logits"
        )
    return k if k is not None else (lo, f)


# How far a position's top-k and tail masses may sum from 1: float16 top-k log-probabilities
# round each mass by at most 0.4 % (below e^-8, where they are small), so a sum stays within a
# few 1e-3 of 1; raw logits or log-probabilities of another distribution land far from it.
_MASS_SLACK = 0.02
_POSITIONS = 1 << 16  # positions checked at once: bounded memory on parts of any size


def _bucket_problems(t: pa.Table, k: int) -> list[str]:
    """What the bucket losses assume of each position, that `_check_values` cannot see one value
    at a time: the top-k's masses and the tail's sum to 1 (a distribution: the teacher's full
    softmax); the draws' masses sum to the tail's (they stand for it); no token id twice among
    a position's top-k and draws (each bucket is one token, whose student probability it
    compares). Problems named by the first problem_ids they occur in."""
    topk_ids, topk_lp = pc.list_flatten(t["topk_ids"]), pc.list_flatten(t["topk_logprobs"])
    tail, d_ids, d_mass = pc.list_flatten(t["tail_logprob"]), pc.list_flatten(t["sample_ids"]), pc.list_flatten(t["sample_logmass"])
    found: dict[str, tuple[list[np.ndarray], list[float]]] = {}

    def note(kind: str, positions: np.ndarray, values: np.ndarray) -> None:
        if len(positions):
            where, seen = found.setdefault(kind, ([], []))
            where.append(positions)
            seen.extend(values[:3].tolist())

    for a in range(0, len(tail), _POSITIONS):
        m = min(_POSITIONS, len(tail) - a)
        tl = tail.slice(a, m).to_numpy(zero_copy_only=False).astype(np.float64)
        ids = pc.list_flatten(topk_ids.slice(a, m)).to_numpy(zero_copy_only=False).astype(np.int64).reshape(m, k)
        lp = pc.list_flatten(topk_lp.slice(a, m)).to_numpy(zero_copy_only=False).astype(np.float64).reshape(m, k)
        total = np.exp(lp).sum(1) + np.exp(tl)
        off = np.flatnonzero(np.abs(total - 1) > _MASS_SLACK)
        note("mass", a + off, total[off])
        drawn = d_ids.slice(a, m)
        pos = pc.list_parent_indices(drawn).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(drawn).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(flat):
            mass = np.exp(pc.list_flatten(d_mass.slice(a, m)).to_numpy(zero_copy_only=False).astype(np.float64))
            has = np.bincount(pos, minlength=m) > 0
            sums = np.bincount(pos, weights=mass, minlength=m)
            off = np.flatnonzero(has & ~np.isclose(sums, np.exp(tl), rtol=1e-3, atol=1e-9))
            note("draws", a + off, sums[off] / np.maximum(np.exp(tl[off]), 1e-300))
        keys = np.concatenate([((np.arange(m, dtype=np.int64)[:, None] << 32) | ids).ravel(), (pos << 32) | flat])
        keys.sort()
        twice = keys[1:][keys[1:] == keys[:-1]]
        note("twice", a + np.unique(twice >> 32), twice & 0xFFFFFFFF)
    if not found:
        return []
    row_of = pc.list_parent_indices(t["tail_logprob"]).to_numpy()

    def named(kind: str) -> str:
        where = np.concatenate(found[kind][0])
        return f"{len(where):,} position(s) of problem(s) {_named(t, row_of[where])}"

    problems = []
    if "mass" in found:
        problems.append(
            f"the teacher's top-k and tail masses sum to {', '.join(f'{x:.4g}' for x in found['mass'][1][:3])}, not 1, at "
            f"{named('mass')} (topk_logprobs and tail_logprob must be log-probabilities under the teacher's full softmax: "
            f"not raw logits, nor log-probabilities of another distribution)"
        )
    if "draws" in found:
        problems.append(
            f"the masses of sample_logmass sum to {', '.join(f'{x:.4g}' for x in found['draws'][1][:3])} times the tail's "
            f"mass (exp(tail_logprob)), not once, at {named('draws')}: the draws must stand for the tail"
        )
    if "twice" in found:
        problems.append(
            f"a token id appears twice among one position's topk_ids and sample_ids (id {int(found['twice'][1][0])}) "
            f"at {named('twice')}: each must be one distinct token"
        )
    return problems


def _named(t: pa.Table, rows: np.ndarray, most: int = 5) -> str:
    """The first `most` distinct problem_ids of rows `rows` of `t`, quoted, for a message."""
    ids: list[str] = []
    for r in rows:
        if (x := t["problem_id"][int(r)].as_py()) not in ids:
            ids.append(x)
            if len(ids) == most:
                break
    return ", ".join(repr(x) for x in ids)


@functools.lru_cache(maxsize=2)
def epoch_order(problems: tuple[str, ...], seed: int, epoch: int) -> tuple[str, ...]:
    """The problems of one epoch in a seeded order: a resumed run replays it exactly. Cached:
    every step of an epoch reads it, and shuffling a large training set at every step cost a
    tenth of a small model's step time."""
    order = list(problems)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


def step_problems(data: TrainData, seed: int, batch_size: int, step: int) -> tuple[int, list[str]]:
    """(epoch, problems) of optimizer step `step` (from 1)."""
    per_epoch = math.ceil(len(data.problems) / batch_size)
    epoch, i = divmod(step - 1, per_epoch)
    order = epoch_order(data.problems, seed, epoch)
    return epoch, list(order[i * batch_size : (i + 1) * batch_size])


def collate(data: TrainData, rows: list[int], device) -> dict[str, Any]:
    """Right-padded tensors for a micro-batch of sequences.

    input_ids [B, L]; gather [B, R] positions whose hidden state predicts each response
    token; topk_ids [B, R, W] int64 and topk_lp [B, R, W] float32, the W = k + D buckets (the
    top-k, then up to D drawn ids, D the most at one position of the micro-batch); tail [B, R];
    fkl_shift [B, R] (0 where nothing was drawn); has_draws [B, R]; mask [B, R].
    """
    import torch

    t = data.table.take(pa.array(rows))
    prompts = t["prompt_token_ids"].to_pylist()
    responses = t["token_ids"].to_pylist()
    k = len(t["topk_ids"][0][0])
    drawn = pc.list_flatten(t["sample_ids"])  # one list per position
    D = int(pc.max(pc.list_value_length(drawn)).as_py() or 0)
    W = k + D
    B = len(rows)
    L = max(len(p) + len(r) for p, r in zip(prompts, responses))
    R = max(len(r) for r in responses)
    input_ids = torch.zeros((B, L), dtype=torch.long)
    attention = torch.zeros((B, L), dtype=torch.long)
    gather = torch.zeros((B, R), dtype=torch.long)
    mask = torch.zeros((B, R), dtype=torch.bool)
    topk_ids = torch.zeros((B, R, W), dtype=torch.long)
    topk_lp = torch.full((B, R, W), -1e4, dtype=torch.float32)
    tail = torch.full((B, R), -1e4, dtype=torch.float32)
    entropy = torch.full((B, R), float("nan"), dtype=torch.float32)  # unknown: no shift
    has_draws = torch.zeros((B, R), dtype=torch.bool)
    for b in range(B):
        p, r = prompts[b], responses[b]
        n = len(r)
        input_ids[b, : len(p) + n] = torch.tensor(p + r)
        attention[b, : len(p) + n] = 1
        gather[b, :n] = torch.arange(len(p) - 1, len(p) + n - 1)
        mask[b, :n] = True
        row = t.slice(b, 1)
        ids = pc.list_flatten(pc.list_flatten(row["topk_ids"])).to_numpy()
        lps = pc.list_flatten(pc.list_flatten(row["topk_logprobs"])).to_numpy(zero_copy_only=False)
        topk_ids[b, :n, :k] = torch.from_numpy(ids.astype(np.int64).reshape(n, k))
        topk_lp[b, :n, :k] = torch.from_numpy(lps.astype(np.float32).reshape(n, k))
        tail[b, :n] = torch.from_numpy(pc.list_flatten(row["tail_logprob"]).to_numpy().astype(np.float32))
        if D:
            d_ids, d_mass, m = _padded(pc.list_flatten(row["sample_ids"]), pc.list_flatten(row["sample_logmass"]), D)
            topk_ids[b, :n, k:] = torch.from_numpy(d_ids)
            topk_lp[b, :n, k:] = torch.from_numpy(d_mass)
            has_draws[b, :n] = torch.from_numpy(m > 0)
            h = row["entropy"][0]
            if h.is_valid:
                entropy[b, :n] = torch.from_numpy(pc.list_flatten(row["entropy"]).to_numpy(zero_copy_only=False).astype(np.float32))
    fkl_shift = torch.zeros((B, R), dtype=torch.float32)
    if D:
        filled = topk_ids >= 0
        topk_ids = _distinct_fill(topk_ids, filled)
        # The draws stand for the tail: its bucket is empty (mass 0) where there are draws.
        tail = torch.where(has_draws, torch.full_like(tail, -1e4), tail)
        buckets = torch.log_softmax(torch.cat([topk_lp, tail[..., None]], -1).clamp_min(-1e4), -1).clamp_min(-1e4)
        h_drawn = -(buckets.exp() * buckets).sum(-1)
        fkl_shift = torch.where(has_draws & mask & entropy.isfinite(), h_drawn - entropy, 0.0)
    batch = dict(input_ids=input_ids, attention=attention, gather=gather, mask=mask, topk_ids=topk_ids, topk_lp=topk_lp, tail=tail,
                 fkl_shift=fkl_shift, has_draws=has_draws)
    return {name: x.to(device) for name, x in batch.items()}


def _padded(ids: pa.Array, mass: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One list per position -> ([n, width] int64 ids, -1 in empty slots; [n, width] float32
    log-mass, -1e4 in empty slots; [n] how many each position holds)."""
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(lengths)
    out_ids = np.full((n, width), -1, dtype=np.int64)
    out_mass = np.full((n, width), -1e4, dtype=np.float32)
    flat_ids = pc.list_flatten(ids).to_numpy(zero_copy_only=False)
    if len(flat_ids):
        pos = np.repeat(np.arange(n), lengths)
        slot = np.arange(len(flat_ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out_ids[pos, slot] = flat_ids
        out_mass[pos, slot] = pc.list_flatten(mass).to_numpy(zero_copy_only=False)
    return out_ids, out_mass, lengths


def _distinct_fill(ids, filled):
    """`ids` [B, R, W] with its empty slots (not `filled`) set to ids of no other bucket of their
    position: the smallest ones not among its ids (W candidates always suffice), so that every
    bucket is one token and an empty one (mass 0) is any other token with target 0."""
    import torch

    W = ids.shape[-1]
    candidates = torch.arange(W, dtype=ids.dtype)
    member = ((ids[..., :, None] == candidates) & filled[..., :, None]).any(-2)  # [B, R, W]
    free = torch.sort(member.to(torch.int8), dim=-1, stable=True).indices  # non-members first, in id order
    rank = ((~filled).cumsum(-1) - 1).clamp_min(0)
    return torch.where(filled, ids, free.gather(-1, rank))


def step_plan(data: TrainData, names: list[str], micro_batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[list[int], list[float]]]:
    """The micro-batches (rows, coefs) this process runs for one step of global batch `names`.

    coef_s = w_i / (N * T_i) with N = len(names), the GLOBAL batch, on every process: the
    normalisation never depends on how the batch is split. Process r takes the problems
    names[r::world] (whole problems: all sequences of a problem stay together). Every process
    runs the same number of micro-batches (collectives in DDP's forward, FSDP's all-gathers):
    a process with fewer pads with copies of one sequence at coef 0, which add exactly 0.
    With world = 1 this is the single-process plan, unchanged.
    """
    n = len(names)

    def chunks(share: list[str]) -> list[tuple[list[int], list[float]]]:
        seqs = [(r, data.weight[p] / (n * data.tokens[p])) for p in share for r in data.rows[p]]
        seqs.sort(key=lambda x: x[0])
        return [([r for r, _ in seqs[m : m + micro_batch_size]], [c for _, c in seqs[m : m + micro_batch_size]])
                for m in range(0, len(seqs), micro_batch_size)]

    plan = chunks(names[rank::world])
    if world > 1:
        most = max(math.ceil(sum(len(data.rows[p]) for p in names[r::world]) / micro_batch_size) for r in range(world))
        pad = ([data.rows[names[0]][0]], [0.0])
        plan += [pad] * (most - len(plan))
    return plan


def check_lengths(data: TrainData, model_dir: str) -> None:
    limit = models.max_context(model_dir)
    if limit is None:
        return
    n = pc.add(pc.list_value_length(data.table["prompt_token_ids"]), pc.list_value_length(data.table["token_ids"]))
    too_long = pc.greater(n, limit)
    if pc.any(too_long).as_py():
        ids = pc.filter(data.table["problem_id"], too_long).to_pylist()
        raise InputError(
            f"--teacher-logits: {len(ids)} sequence(s) are longer than the student's context of {limit} "
            f"tokens ({', '.join(repr(x) for x in ids[:5])}); drop them or use a longer-context student"
        )


def check_vocab(data: TrainData, model, student: str = "") -> None:
    """`check_vocab_rows` against a loaded model's embeddings (input and output)."""
    rows = min(model.get_input_embeddings().weight.shape[0], model.get_output_embeddings().weight.shape[0])
    check_vocab_rows(data, rows, student)


def check_vocab_rows(data: TrainData, rows: int | None, student: str) -> None:
    """Every token id the student is fed (prompt and response) or scored on (the teacher's
    top-k and draws) must be a row of its embeddings: one past them fails mid-step on an index."""
    if rows is None:
        return
    t = data.table
    for name, flat in (
        ("topk_ids", pc.list_flatten(pc.list_flatten(t["topk_ids"]))),
        ("sample_ids", pc.list_flatten(pc.list_flatten(t["sample_ids"]))),
        ("token_ids", pc.list_flatten(t["token_ids"])),
        ("prompt_token_ids", pc.list_flatten(t["prompt_token_ids"])),
    ):
        top = pc.max(flat).as_py()
        if top is not None and top >= rows:
            raise InputError(
                f"--teacher-logits: {name} holds token id {top}, outside the vocabulary of the student"
                f"{' ' + student if student else ''} ({rows:,} rows); use a student with the teacher's tokenizer"
            )
