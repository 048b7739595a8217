"""Turn standard Hugging Face datasets into paced problems files.

    python examples/prepare_data.py dapo     --out data/dapo.parquet
    python examples/prepare_data.py math500  --out data/math500.parquet
    python examples/prepare_data.py aime2024 --out data/aime2024.parquet
    python examples/prepare_data.py aime2025 --out data/aime2025.parquet
    python examples/prepare_data.py mmlu     --out data/mmlu.parquet --limit 1000 --seed 0
    python examples/prepare_data.py math500  --out data/math500.parquet --local MATH-500/test.jsonl

Each output is a problems file (`problem_id`, `prompt`, `answer`, `reference`: the problems
schema, validated with `schemas` before it is written) plus `benchmark` (the dataset name,
which `paced eval` reports by), `source` (the hub id or local path) and `source_id` (the
dataset's own id of the row, when it has one). Prompts end with the paper's suffix, " Let's
think step by step and output the final answer within \\boxed{}." (`--suffix` to change it,
`--suffix ''` to leave it out and pass `--prompt-suffix` to the paced commands instead).
Never both: the suffix would appear twice.

Without `--local` the dataset is read with `datasets.load_dataset` (`pip install datasets`);
with `--local PATH` it is read from a Parquet or JSON-lines file, or a folder of them (read
recursively, in name order), laid out like the hub dataset: that is how it runs offline.

The datasets and their columns (the layout `--local` expects):

  dapo      BytedTsinghua-SIA/DAPO-Math-17k, split train (training set). Columns:
            `prompt` (a chat list: [{"content": ..., "role": "user"}]), `reward_model`
            (struct: `ground_truth` = the answer, `style`), `data_source`, `ability`,
            `extra_info` (struct: `index`). The user message wraps the problem in DAPO's
            "Solve the following math problem step by step. The last line of your response
            should be of the form Answer: $Answer ..." / "Remember to put your answer on its
            own line after "Answer:"." instruction; it is removed (the paper's \\boxed{}
            suffix replaces it). The hub copy repeats problems (copies of it list 1,791,700
            rows for about 17.9 k distinct rows), so rows are deduplicated by problem text.
            It has no solutions: `reference` is null unless `--answer-as-reference`.
  math500   HuggingFaceH4/MATH-500, split test. Columns: `problem`, `solution`, `answer`,
            `subject`, `level`, `unique_id`. `reference` = `solution`.
  aime2024  HuggingFaceH4/aime_2024, split train (30 problems). Columns: `id`, `problem`,
            `solution`, `answer`, `url`, `year`. Maxwell-Jia/AIME_2024 (`ID`, `Problem`,
            `Solution`, `Answer`) is read too. Integer answers lose leading zeros ("055" -> "55").
  aime2025  opencompass/AIME2025, configs AIME2025-I and AIME2025-II, split test (15 + 15).
            Columns: `question`, `answer` (no solutions: `reference` is null). Copies with
            `problem` instead of `question` (e.g. math-ai/aime25) are read too.
  mmlu      cais/mmlu, config all, split test (14,042 questions). Columns: `question`,
            `subject`, `choices` (4 strings), `answer` (class label 0-3, i.e. A-D). The prompt
            lists the choices as "A. ...", asks for the letter, and the answer is the letter.
            A retention benchmark: take a subset with `--limit N --seed S`.

Rows are deduplicated by problem text (whitespace-normalised; for mmlu, question plus
choices); the first row wins. Rows without a problem or an answer are dropped. `problem_id`
is `<dataset>-` plus the first 12 hex digits of the SHA-256 of that text, so it does not
depend on row order, and ids of different datasets never collide in `paced eval`.
`--limit N` keeps N problems chosen by `--seed` (a seeded hash order: the same subset whatever
the row order of the input); the output keeps the input order.

Exit codes as in paced: 0 success (the output path alone on stdout), 2 bad input or usage
(a file without the columns its dataset needs, `datasets` not installed, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."
MMLU_INSTRUCTION = "Answer with the letter of the correct choice."
LETTERS = "ABCDEFGHIJ"

# DAPO-Math-17k's own instruction around each problem (removed: the paper's suffix replaces it).
DAPO_PREFIX = "Solve the following math problem step by step."
DAPO_REMINDER = '\n\nRemember to put your answer on its own line after "Answer:"'


class UsageError(Exception):
    """Bad input or usage: exit code 2 with the message."""


@dataclass(frozen=True)
class Source:
    hub_id: str
    configs: tuple[str | None, ...]
    split: str
    convert: Callable[[Any, str], list[dict[str, Any]]]  # (polars frame, where) -> rows


# ---------------------------------------------------------------------------------------
# Columns


def _pick(frame, names: tuple[str, ...], dataset: str, where: str, required: bool = True) -> str | None:
    """The first of `names` that the frame has; a missing required column is exit 2."""
    for n in names:
        if n in frame.columns:
            return n
    if not required:
        return None
    want = " or ".join(repr(n) for n in names)
    have = ", ".join(frame.columns) or "(none)"
    raise UsageError(
        f"{where}: the {dataset} layout needs a column {want}, but the file has: {have}. "
        f"Pass a file laid out like {SOURCES[dataset].hub_id} (see the columns in "
        f"`python examples/prepare_data.py --help`)"
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _level(value: Any) -> int | None:
    """MATH levels: 1-5 (HuggingFaceH4/MATH-500), or "Level 5" in the original MATH files."""
    m = re.search(r"\d+", str(value)) if value is not None else None
    return int(m.group()) if m else None


def _integer_answer(answer: str | None) -> str | None:
    """AIME answers are integers 0-999; some copies store "055"."""
    if answer is not None and re.fullmatch(r"\d+", answer):
        return str(int(answer))
    return answer


def _dapo_problem(prompt: Any) -> str | None:
    """The problem inside DAPO's chat prompt, without DAPO's answer-format instruction."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        text = users[-1].get("content") if users else None
    else:
        text = None
    if text is None:
        return None
    text = text.strip()
    if text.startswith(DAPO_PREFIX) and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    if DAPO_REMINDER in text:
        text = text.split(DAPO_REMINDER, 1)[0]
    return _text(text)


def _convert_dapo(frame, where: str) -> list[dict[str, Any]]:
    pc = _pick(frame, ("prompt",), "dapo", where)
    rc = _pick(frame, ("reward_model",), "dapo", where)
    xc = _pick(frame, ("extra_info",), "dapo", where, required=False)
    rows = []
    for prompt, reward, extra in zip(
        frame[pc].to_list(), frame[rc].to_list(), frame[xc].to_list() if xc else [None] * frame.height
    ):
        if reward is not None and not isinstance(reward, dict):
            raise UsageError(
                f"{where}: column 'reward_model' must be a struct with 'ground_truth' (the "
                f"answer), as in {SOURCES['dapo'].hub_id}; it holds {type(reward).__name__} values"
            )
        answer = _text((reward or {}).get("ground_truth"))
        index = (extra or {}).get("index") if isinstance(extra, dict) else None
        rows.append({"problem": _dapo_problem(prompt), "answer": answer, "reference": None, "source_id": _text(index)})
    if frame.height and all(r["answer"] is None for r in rows):
        raise UsageError(
            f"{where}: no row has reward_model.ground_truth; the dapo layout keeps the answer "
            f"there (as in {SOURCES['dapo'].hub_id})"
        )
    return rows


def _convert_math500(frame, where: str) -> list[dict[str, Any]]:
    pc = _pick(frame, ("problem",), "math500", where)
    ac = _pick(frame, ("answer",), "math500", where)
    sc = _pick(frame, ("solution",), "math500", where, required=False)
    ic = _pick(frame, ("unique_id",), "math500", where, required=False)
    subj = _pick(frame, ("subject",), "math500", where, required=False)
    lvl = _pick(frame, ("level",), "math500", where, required=False)
    col = lambda c: frame[c].to_list() if c else [None] * frame.height  # noqa: E731
    return [
        {"problem": _text(p), "answer": _text(a), "reference": _text(s), "source_id": _text(i),
         "subject": _text(sj), "level": _level(lv)}
        for p, a, s, i, sj, lv in zip(col(pc), col(ac), col(sc), col(ic), col(subj), col(lvl))
    ]


def _convert_aime(dataset: str) -> Callable[[Any, str], list[dict[str, Any]]]:
    def convert(frame, where: str) -> list[dict[str, Any]]:
        problem_names = ("problem", "Problem", "question") if dataset == "aime2024" else ("question", "problem", "Problem")
        pc = _pick(frame, problem_names, dataset, where)
        ac = _pick(frame, ("answer", "Answer"), dataset, where)
        sc = _pick(frame, ("solution", "Solution"), dataset, where, required=False)
        ic = _pick(frame, ("id", "ID"), dataset, where, required=False)
        col = lambda c: frame[c].to_list() if c else [None] * frame.height  # noqa: E731
        return [
            {"problem": _text(p), "answer": _integer_answer(_text(a)), "reference": _text(s), "source_id": _text(i)}
            for p, a, s, i in zip(col(pc), col(ac), col(sc), col(ic))
        ]

    return convert


def _mmlu_letter(answer: Any, n: int, where: str) -> str | None:
    if answer is None:
        return None
    if isinstance(answer, bool):
        raise UsageError(f"{where}: column 'answer' holds booleans; mmlu answers are indices 0-3 or letters A-D")
    if isinstance(answer, (int, float)) or (isinstance(answer, str) and answer.strip().isdigit()):
        i = int(answer)
        if not 0 <= i < n:
            raise UsageError(f"{where}: mmlu answer index {i} is outside the {n} choices")
        return LETTERS[i]
    s = str(answer).strip().upper()
    if len(s) == 1 and s in LETTERS[:n]:
        return s
    raise UsageError(f"{where}: mmlu answer {answer!r} is neither an index 0-{n - 1} nor a letter A-{LETTERS[n - 1]}")


def _convert_mmlu(frame, where: str) -> list[dict[str, Any]]:
    qc = _pick(frame, ("question",), "mmlu", where)
    cc = _pick(frame, ("choices",), "mmlu", where)
    ac = _pick(frame, ("answer",), "mmlu", where)
    sc = _pick(frame, ("subject",), "mmlu", where, required=False)
    rows = []
    subjects = frame[sc].to_list() if sc else [None] * frame.height
    for q, choices, a, subject in zip(frame[qc].to_list(), frame[cc].to_list(), frame[ac].to_list(), subjects):
        if not isinstance(choices, (list, tuple)) or not choices:
            raise UsageError(f"{where}: column 'choices' must be a list of strings (the options), as in cais/mmlu")
        choices = [str(c).strip() for c in choices][: len(LETTERS)]
        question = _text(q)
        body = None
        if question is not None:
            options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
            body = f"{question}\n\n{options}\n\n{MMLU_INSTRUCTION}"
        rows.append({"problem": body, "answer": _mmlu_letter(a, len(choices), where), "reference": None,
                     "source_id": None, "subject": _text(subject),
                     "_key": None if question is None else question + "\x1f" + "\x1f".join(choices)})
    return rows


SOURCES: dict[str, Source] = {
    "dapo": Source("BytedTsinghua-SIA/DAPO-Math-17k", (None,), "train", _convert_dapo),
    "math500": Source("HuggingFaceH4/MATH-500", (None,), "test", _convert_math500),
    "aime2024": Source("HuggingFaceH4/aime_2024", (None,), "train", _convert_aime("aime2024")),
    "aime2025": Source("opencompass/AIME2025", ("AIME2025-I", "AIME2025-II"), "test", _convert_aime("aime2025")),
    "mmlu": Source("cais/mmlu", ("all",), "test", _convert_mmlu),
}


# ---------------------------------------------------------------------------------------
# Reading


def _local_files(path: Path) -> list[Path]:
    if not path.exists():
        raise UsageError(f"--local {path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix in (".parquet", ".jsonl", ".json") and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise UsageError(f"--local {path}: the folder holds no .parquet, .jsonl or .json file")
    return files


def _read_file(path: Path):
    import polars as pl

    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix == ".jsonl":
            return pl.read_ndjson(path)
        if path.suffix == ".json":
            try:
                return pl.read_json(path)
            except Exception:  # a .json file may hold JSON lines
                return pl.read_ndjson(path)
    except Exception as e:  # polars raises several kinds for unreadable files
        raise UsageError(f"--local {path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e})") from None
    raise UsageError(f"--local {path}: unknown format {path.suffix!r}; give a .parquet, .jsonl or .json file")


def _read_local(path: Path) -> list[tuple[Any, str]]:
    return [(_read_file(f), str(f)) for f in _local_files(path)]


def _read_hub(hub_id: str, configs: tuple[str | None, ...], split: str) -> list[tuple[Any, str]]:
    try:
        import datasets
    except ImportError:
        raise UsageError(
            f"reading {hub_id} from the Hugging Face hub needs the datasets library: "
            f"pip install datasets (or download the files and pass --local PATH)"
        ) from None
    import polars as pl

    frames = []
    for config in configs:
        where = f"{hub_id}" + (f" ({config})" if config else "") + f" split {split}"
        try:
            ds = datasets.load_dataset(hub_id, config, split=split)
        except Exception as e:  # network, missing config or split: the user's to fix
            raise UsageError(f"{where}: load_dataset failed ({type(e).__name__}: {e}); check the name, --hf-config and --split, or use --local") from None
        frames.append((pl.from_arrow(ds.with_format("arrow")[:]), where))
    return frames


# ---------------------------------------------------------------------------------------
# Problems


def _norm(text: str) -> str:
    return " ".join(text.split())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build(dataset: str, frames: list[tuple[Any, str]], *, source: str, suffix: str, limit: int | None,
          seed: int, answer_as_reference: bool, log: Callable[[str], None]):
    """The problems frame of one dataset from its raw frames."""
    import polars as pl

    spec = SOURCES[dataset]
    rows: list[dict[str, Any]] = []
    for frame, where in frames:
        rows.extend(spec.convert(frame, where))
    read = len(rows)
    seen: dict[str, str] = {}
    kept, dropped, duplicates, conflicts = [], 0, 0, 0
    for r in rows:
        if r["problem"] is None or r["answer"] is None:
            dropped += 1
            continue
        key = _norm(r.pop("_key", None) or r["problem"])
        if key in seen:
            duplicates += 1
            conflicts += seen[key] != r["answer"]
            continue
        seen[key] = r["answer"]
        r["problem_id"] = f"{dataset}-{_digest(key)[:12]}"
        kept.append(r)
    if not kept:
        raise UsageError(f"{source}: no usable problem (read {read} rows, {dropped} without a problem or an answer)")
    if limit is not None and limit < len(kept):
        order = sorted(range(len(kept)), key=lambda i: _digest(f"{seed}:{kept[i]['problem_id']}"))
        chosen = set(order[:limit])
        kept = [r for i, r in enumerate(kept) if i in chosen]
    log(
        f"{dataset}: read {read:,} rows from {source}; {duplicates:,} duplicate(s) dropped"
        + (f" ({conflicts:,} with another answer than the kept row)" if conflicts else "")
        + (f", {dropped:,} without a problem or an answer" if dropped else "")
        + f"; {len(kept):,} problems"
    )
    reference = [r["reference"] for r in kept]
    if answer_as_reference:
        reference = [ref if ref is not None else f"The final answer is $\\boxed{{{r['answer']}}}$." for ref, r in zip(reference, kept)]
    columns: dict[str, Any] = {
        "problem_id": [r["problem_id"] for r in kept],
        "prompt": [r["problem"] + suffix for r in kept],
        "answer": [r["answer"] for r in kept],
        "reference": reference,
        "benchmark": [dataset] * len(kept),
        "source": [source] * len(kept),
        "source_id": [r["source_id"] for r in kept],
    }
    for extra in ("subject", "level"):
        if any(r.get(extra) is not None for r in kept):
            columns[extra] = [r.get(extra) for r in kept]
    return pl.DataFrame(columns, schema={k: pl.Int64 if k == "level" else pl.String for k in columns})


def write(frame, out: Path, options: dict[str, Any], command: str | None = None) -> Path:
    """Validate the frame against the problems schema, then write it atomically with paced's
    schema name, version and provenance in the Parquet metadata."""
    import json

    import pyarrow.parquet as pq

    import schemas
    import schemas.io
    from schemas.base import check_types, conform

    table = frame.to_arrow()
    where = f"--out {out}"
    check_types(table.schema, schemas.PROBLEMS, where)
    conform(frame, schemas.PROBLEMS, where)
    out.parent.mkdir(parents=True, exist_ok=True)
    schemas.io.check_file_out(out, schemas.PROBLEMS, option="--out")
    prov = schemas.provenance("prepare_data", options, command=command)
    table = table.replace_schema_metadata({
        schemas.io.META_SCHEMA: schemas.PROBLEMS.name.encode(),
        schemas.io.META_VERSION: str(schemas.PROBLEMS.version).encode(),
        schemas.io.META_PROVENANCE: json.dumps(prov).encode(),
    })
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    schemas.read(out, schemas.PROBLEMS, option="--out")  # what paced will read: valid
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="prepare_data.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("dataset", choices=sorted(SOURCES), help="which dataset")
    ap.add_argument("--out", required=True, type=Path, help="output problems Parquet file")
    ap.add_argument("--local", type=Path, help="read this Parquet/JSON-lines file or folder (hub layout) instead of the hub")
    ap.add_argument("--hf-name", help="hub dataset id (default: the dataset's, see below)")
    ap.add_argument("--hf-config", action="append", help="hub config name (repeat for several; default: the dataset's)")
    ap.add_argument("--split", help="hub split (default: the dataset's)")
    ap.add_argument("--limit", type=int, help="keep N problems, chosen by --seed")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (default 0)")
    ap.add_argument("--suffix", default=SUFFIX, help="appended to every prompt (default: the paper's \\boxed{} instruction)")
    ap.add_argument("--answer-as-reference", action="store_true",
                    help="fill a missing reference with 'The final answer is $\\boxed{ANSWER}$.' (privileged "
                         "context for `--context reference` self-distillation on sets without solutions)")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be >= 1")
    if args.local is not None and (args.hf_name or args.hf_config or args.split):
        ap.error("--local reads a file: --hf-name, --hf-config and --split are for the hub")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    try:
        spec = SOURCES[args.dataset]
        if args.local is not None:
            frames, source = _read_local(args.local), str(args.local)
        else:
            hub_id = args.hf_name or spec.hub_id
            configs = tuple(args.hf_config) if args.hf_config else (spec.configs if hub_id == spec.hub_id else (None,))
            split = args.split or spec.split
            frames, source = _read_hub(hub_id, configs, split), hub_id
        frame = build(args.dataset, frames, source=source, suffix=args.suffix, limit=args.limit, seed=args.seed,
                      answer_as_reference=args.answer_as_reference, log=log)
        command = shlex.join(["python", "examples/prepare_data.py", *(sys.argv[1:] if argv is None else argv)])
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        out = write(frame, args.out, options, command)
    except UsageError as e:
        log(f"error: {e}")
        return 2
    except Exception as e:
        from schemas import InputError

        if isinstance(e, InputError):
            log(f"error: {e}")
            return 2
        raise
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
