"""eval's metrics from per-response results: accuracy per benchmark (mean and std over sample
indices), pass@k (Chen et al.'s unbiased estimate), maj@k (a majority vote over answers, equal
answers as the verifier judges voting together), and the gain and forgetting against a baseline
eval: the rows of the eval summary artifact. No model, no files: stages/eval.py is the stage.
"""

from __future__ import annotations

from typing import Callable, Sequence

import polars as pl

import schemas
from stages import stats


# Judges pairs of extracted answers: is each pair one answer (verifiers.SameAnswer)?
SameFn = Callable[[Sequence[tuple[str, str]]], list[bool]]


def majority(results: pl.DataFrame, k: int, same: SameFn | None = None) -> pl.DataFrame:
    """maj@k's verdict per problem (benchmark, problem_id, maj): whether the answer most of its
    responses 0..k-1 give is correct (self-consistency, Wang et al. 2023).

    Votes go to answers, not strings: responses whose extracted answers `same` judges one answer
    vote together (None: equal strings only). Every correct response's answer is the reference's,
    so they are one answer; wrong answers are grouped greedily in the order given, each joining
    the first group whose first answer it equals. Responses without an answer do not vote, a
    problem without any is wrong, ties go to the answer given first, and a string's verdict is
    that of its first response. Only the problems whose verdict the grouping can change are
    judged pair by pair (a correct answer with more votes than all wrong ones wins as it is),
    round by round: each wrong answer is compared with the first answer of each group formed
    before it, so answers that merge save the comparisons with one another's group.
    """
    votes = (results.filter((pl.col("sample_index") < k) & pl.col("extracted").is_not_null())
             .sort("benchmark", "problem_id", "sample_index"))
    problems: dict[tuple[str, str], dict[str, list]] = {}
    for bench, pid, index, answer, correct in votes.select(
            "benchmark", "problem_id", "sample_index", "extracted", "correct").iter_rows():
        entry = problems.setdefault((bench, pid), {}).setdefault(answer, [0, index, bool(correct)])
        entry[0] += 1  # votes; the first response's index and verdict stay
    wrong_of = {key: [(a, v, first) for a, (v, first, right) in answers.items() if not right]
                for key, answers in problems.items()}
    right_of = {key: (sum(v for v, _, right in answers.values() if right),  # votes, first index
                      min((first for _, first, right in answers.values() if right), default=None))
                for key, answers in problems.items()}
    # The problems whose verdict grouping the wrong answers can change (a dict: in order): two
    # wrong strings or more, and the right votes at least the largest wrong string's and at most
    # all wrong votes together.
    open_ = {key: None for key, wrong in wrong_of.items()
             if len(wrong) > 1 and max(v for _, v, _ in wrong) <= right_of[key][0] <= sum(v for _, v, _ in wrong)}
    compare = same if same is not None else (lambda pairs: [a == b for a, b in pairs])
    groups_of: dict[tuple[str, str], list[list]] = {  # [first answer, votes, first index]
        key: [] if key in open_ else [[a, v, first] for a, v, first in wrong] for key, wrong in wrong_of.items()}
    # Round i: answer i of every open problem against the first answer of each of its groups so
    # far, one call for all problems; it joins the first group it equals, else starts one. Where
    # answers merge there are fewer groups to ask than pairs (where all differ, C(m, 2) either way).
    for i in range(max((len(wrong_of[key]) for key in open_), default=0)):
        asks = [(key, g) for key in open_ if i < len(wrong_of[key]) for g in groups_of[key]]
        pairs = list(dict.fromkeys((g[0], wrong_of[key][i][0]) for key, g in asks))
        verdicts = dict(zip(pairs, compare(pairs) if pairs else []))
        for key in open_:
            if i >= len(wrong_of[key]):
                continue
            answer, v, first = wrong_of[key][i]
            home = next((g for g in groups_of[key] if verdicts[(g[0], answer)]), None)
            if home is None:
                groups_of[key].append([answer, v, first])
            else:
                home[1] += v
                home[2] = min(home[2], first)
    rows = []
    for key, groups in groups_of.items():
        right_votes, right_first = right_of[key]
        best_wrong = max(((g[1], -g[2]) for g in groups), default=(0, 0))
        rows.append((*key, right_votes > 0 and (right_votes, -right_first) > best_wrong))
    return pl.DataFrame(rows, schema={"benchmark": pl.String, "problem_id": pl.String, "maj": pl.Boolean},
                        orient="row")


def benchmark_metrics(results: pl.DataFrame, k: int, same: SameFn | None = None, votes: bool = True) -> pl.DataFrame:
    """Per benchmark: problems, samples, accuracy mean and std over sample indices, pass@k, maj@k.

    `results` needs problem_id, sample_index, benchmark and correct, and `extracted` for maj@k
    (null without it, or without `votes`: a module:function verifier extracts no answers to
    vote; with it, a benchmark whose responses gave no answer has maj@k 0). The accuracy of sample index s is the fraction of a benchmark's
    problems whose response s is correct; accuracy_mean and accuracy_std (ddof=0) are over
    those per-index accuracies. pass@k is the mean over problems of Chen et al.'s unbiased
    estimate from c correct of n responses (stats.pass_at_k); maj@k the share of problems whose
    majority answer among responses 0..k-1 is correct (`majority`; `same` judges which answers
    are one). Both are null for a benchmark with a problem of fewer than k responses.
    """
    per_index = results.group_by("benchmark", "sample_index", maintain_order=True).agg(
        acc=pl.col("correct").cast(pl.Float64).mean(),
    )
    accuracy = per_index.group_by("benchmark", maintain_order=True).agg(
        accuracy_mean=pl.col("acc").mean(),
        accuracy_std=pl.col("acc").std(ddof=0),
    )
    per_problem = results.group_by("benchmark", "problem_id", maintain_order=True).agg(
        n=pl.len(), c=pl.col("correct").sum(),
    )
    per_problem = per_problem.with_columns(
        pass_at_k=pl.Series([stats.pass_at_k(n, c, k) if n >= k else None
                             for n, c in per_problem.select("n", "c").iter_rows()], dtype=pl.Float64),
    )
    if votes and "extracted" in results.columns:
        per_problem = per_problem.join(majority(results, k, same), on=["benchmark", "problem_id"], how="left",
                                       maintain_order="left")
        per_problem = per_problem.with_columns(maj=pl.col("maj").fill_null(False).cast(pl.Float64))
    else:
        per_problem = per_problem.with_columns(maj=pl.lit(None, pl.Float64))
    short = (pl.col("n") < k).any()
    per_benchmark = per_problem.group_by("benchmark", maintain_order=True).agg(
        problems=pl.len().cast(pl.Int32),
        samples=pl.col("n").max().cast(pl.Int32),
        pass_at_k=pl.when(short).then(None).otherwise(pl.col("pass_at_k").mean()),
        maj_at_k=pl.when(short).then(None).otherwise(pl.col("maj").mean()),
    )
    return per_benchmark.join(accuracy, on="benchmark", how="left", maintain_order="left").with_columns(
        k=pl.lit(k, pl.Int32)
    )


def summarize(results: pl.DataFrame, retain: set[str], baseline: pl.DataFrame | None, model: str, k: int,
              same: SameFn | None = None, votes: bool = True) -> pl.DataFrame:
    """One row per benchmark, in the EVAL_SUMMARY columns, from per-response results
    (benchmark_metrics at k). `baseline`: another eval's per-response results, measured at the
    same k; benchmarks it lacks get nulls. Forgetting is only for `retain` benchmarks, and null
    where the baseline accuracy is 0. `same`: which extracted answers are one (maj@k); `votes`:
    whether the verifier extracts answers to vote on (not a module:function one).
    """
    summary = benchmark_metrics(results, k, same, votes).with_columns(
        model=pl.lit(model, pl.String),
        retain=pl.col("benchmark").is_in(sorted(retain)),
    )
    names = {"accuracy_mean": "baseline_accuracy", "pass_at_k": "baseline_pass_at_k", "maj_at_k": "baseline_maj_at_k"}
    if baseline is None:
        summary = summary.with_columns(pl.lit(None, pl.Float64).alias(b) for b in names.values())
    else:
        base = benchmark_metrics(baseline, k, same, votes).select("benchmark", *(pl.col(a).alias(b) for a, b in names.items()))
        summary = summary.join(base, on="benchmark", how="left", maintain_order="left")
    base = pl.col("baseline_accuracy")
    summary = summary.with_columns(
        gain=pl.col("accuracy_mean") - base,
        pass_at_k_gain=pl.col("pass_at_k") - pl.col("baseline_pass_at_k"),
        maj_at_k_gain=pl.col("maj_at_k") - pl.col("baseline_maj_at_k"),
        forgetting_pct=pl.when(pl.col("retain") & (base > 0))
        .then((base - pl.col("accuracy_mean")) / base * 100)
        .otherwise(None),
    )
    return summary.select([c.name for c in schemas.EVAL_SUMMARY.columns])
