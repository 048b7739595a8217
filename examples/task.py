"""A synthetic reasoning task that tiny models partly learn: fixed-width addition.

    python examples/task.py --out runs/quickstart/data --seed 0
    python examples/task.py --out data --seed 1 --train 6000 --test-per-digit 500 --retain 500
    python examples/task.py --out data --order msb     # most significant digit first
    python examples/task.py --out data --pad problem   # operands as wide as the problem, not 5

Writes three problems files (the `problems` schema plus `digits` and `benchmark` columns) and
prints their paths:

- `train.parquet`: the problems Paced measures pass rates on and distills on, 1 to 5 digits.
- `test.parquet`: held out, benchmarks `add-1d` ... `add-5d` (one per digit count, so
  `paced eval` reports accuracy per difficulty).
- `retain.parquet`: benchmark `copy`, a skill the student learns in pretraining and the
  distillation never trains (copying a 5-digit string, `copy 34712=` -> `34712`):
  `paced eval --retain copy` measures forgetting on it, as the paper does on MMLU.

Every number is written least significant digit first ("little-endian"), zero-padded to a
fixed width: 347 + 89 = 436 reads `74300+98000=` and its answer `634000`. In this format
answer digit i sits a fixed distance after operand digits i in every problem, so a small
transformer finds the columns by relative position, and what remains hard is the carry.
Measured on 2 CPU cores: with operands written the usual way round (`00347+00089=`, only the
answer reversed) a 2-layer model was at 92 / 13 / 0 / 0 / 0 % greedy on 1-5 digits after 1500
steps of 64 and a 4-layer one at 100 / 98 / 59 / 67 / 58 % after 2000; in this format the
same 2-layer model reached 100 % on all five within 1000 steps, which is what lets
`examples/train_tiny.py` train both models in about 4 minutes.

    prompt     74300+98000=
    answer     634000
    reference  7+9+0=16 4+8+1=13 3+0+1=04 0+0+0=00 0+0+0=00
               634000

`--order msb` writes every number the usual way round instead (`00347+00089=` -> `000436`;
the reference's column work still runs from the units, its last line is `000436`): the
answer's first digit then depends on the whole carry chain before anything is written, so
hard problems need more sequential computation than a shallow model has in one pass.

`--order answer-lsb` writes the operands the usual way round and the answer units first
(`00347+00089=` -> `634000`; the reference's last line is that answer). Answer digit i is then
predicted 7 + 2i tokens after the first operand's digit i (and 1 + 2i after the second's): the
higher the digit, the further back its operands, at the same distance in every problem. A
student whose attention sees W tokens per layer through L layers (`examples/train_tiny.py
--student-window W`) reaches L (W - 1) tokens back, so with 2 layers and W = 7 (reach 12) it sees
the operand digits of answer digits 0-2 and not those of 3-4: 1-3 digit sums are within its
reach (the zeros above them follow from the second operand, which it sees whole), and 4-5 digit
sums out of it whatever it is taught (beyond guessing), while a teacher with full attention (or
one that reads the reference) can solve them all.

`--pad problem` pads both operands only to the problem's own digit count d (the larger
operand's), and the answer to d + 1 digits: 347 + 89 reads `743+980=` -> `6340` (`lsb`) or
`347+089=` -> `0436` (`msb`). Problems of more digits are then longer, and the operand digits an
answer digit needs sit further back: the first answer digit needs a digit of the first operand
2d + 1 tokens before the token that predicts it (in `lsb` every answer digit does). A student
whose attention sees only a window of W tokens per layer (`examples/train_tiny.py
--student-window W`) reaches at most L (W - 1) tokens back through L layers, so a d-digit sum
with 2d + 1 > L (W - 1) is out of its reach by construction, whatever it is taught: with 2
layers and W = 5, 1-3 digits are in reach and 4-5 digits are not.

`--pad labelled` is `problem` with every digit after its column's letter (`A` the units): 347 + 89
reads `A7B4C3+A9B8C0=` -> `A6B3C4D0` (`lsb`), so a model can find a column's digits by its letter
rather than by a distance that changes with the problem's width; every answer digit then needs
its column's digit of the first operand 4d + 1 tokens back (2 layers and W = 9: 1-3 digits in
reach, 4-5 not).

Both are harder to learn than the fixed width: train_tiny.py's default 4-layer teacher did not learn
either in 1,000-3,000 steps (greedy 100 / 100 / 14 / 1 / 0 % on 1-5 digits with `problem`, lsb,
3,000 steps; 76 / 11 / 2 / 0 / 0 % with `labelled`; docs/reproduce/pilot.md, pilot 4), against
100 % on every width in 1,000 steps with `fixed`. A window-limited student needs a flawless
teacher on the same format, so these formats wait for a stronger teacher.

The reference is the column-by-column work from the units ("digit + digit + carry = next
carry and sum digit"), then the answer alone on the last line, so `paced score --verifier
exact` (which reads the last non-empty line) accepts both a bare answer and a worked solution.

A problem has d digits when its larger operand has d digits. Which operand pairs (and which
strings to copy) may ever be tested is fixed by a hash with a constant salt, independent
of the seed: a quarter of all pairs is held out. Test and retain problems come only from the
held-out quarter, train problems and pretraining examples (`examples/train_tiny.py`) only
from the rest, so no seed, size or model ever sees a test problem in training. With only 100
one-digit pairs, the 1-digit benchmark is small (the held-out ones, about 25).
"""

from __future__ import annotations

import argparse
import os
import random
import zlib
from pathlib import Path

import polars as pl

WIDTH = 5  # operand digits, zero-padded
SUM_WIDTH = WIDTH + 1
ORDERS = ("lsb", "msb", "answer-lsb")
"""How numbers are written: least significant digit first (the default), most significant
first, the usual way (`--order msb`), or operands the usual way and the answer units first
(`--order answer-lsb`)."""
PADS = ("fixed", "problem", "labelled")
"""How wide operands are written: always WIDTH digits (the default), or the problem's own digit
count (`--pad problem`), or that with every digit after its column's letter (`--pad labelled`)."""
COLUMNS = "ABCDEF"  # column letters, units first (`--pad labelled`)
DIGITS = tuple(range(1, WIDTH + 1))
RETAIN_BENCHMARK = "copy"
# Held out: the pairs whose salted hash is 0 mod 4. The salt is a constant on purpose: the
# partition must not move with --seed, or a model pretrained under one seed would have seen
# the test problems of another.
_SALT = "paced-quickstart-v1"
_HELD_OUT_MOD = 4
# Rejection sampling draws distinct pairs from a region of >= 247,500 (3 digits); far below
# that, repeats stay rare.
_MAX_SAMPLED = 100_000

SCHEMA = {
    "problem_id": pl.String,
    "prompt": pl.String,
    "answer": pl.String,
    "reference": pl.String,
    "digits": pl.Int32,
    "benchmark": pl.String,
}


# ---------------------------------------------------------------------------------------
# One problem


def little_endian(x: int, width: int = WIDTH) -> str:
    return f"{x:0{width}d}"[::-1]


def big_endian(x: int, width: int = WIDTH) -> str:
    return f"{x:0{width}d}"


def write_number(x: int, width: int = WIDTH, order: str = "lsb") -> str:
    """Zero-padded to `width`, least significant digit first (`lsb`) or the usual way (`msb`)."""
    if order not in ("lsb", "msb"):
        raise ValueError(f"order {order!r}: lsb or msb")
    return little_endian(x, width) if order == "lsb" else big_endian(x, width)


def _orders(order: str) -> tuple[str, str]:
    """(operands' order, answer's order) for a task `--order`."""
    if order not in ORDERS:
        raise ValueError(f"order {order!r}: one of {', '.join(ORDERS)}")
    return ("msb", "lsb") if order == "answer-lsb" else (order, order)


def operand_width(a: int, b: int, pad: str = "fixed") -> int:
    """Digits each operand is written with: WIDTH, or the problem's digit count (`problem`, `labelled`)."""
    if pad not in PADS:
        raise ValueError(f"pad {pad!r}: one of {', '.join(PADS)}")
    return WIDTH if pad == "fixed" else digits_of(a, b)


def _written(x: int, width: int, order: str, pad: str) -> str:
    """`x` in `width` digits; `labelled`: each digit after its column's letter (`A` the units)."""
    digits = write_number(x, width, order)
    if pad != "labelled":
        return digits
    columns = COLUMNS[:width] if order == "lsb" else COLUMNS[:width][::-1]
    return "".join(c + d for c, d in zip(columns, digits))


def add_prompt(a: int, b: int, order: str = "lsb", pad: str = "fixed") -> str:
    w, operands = operand_width(a, b, pad), _orders(order)[0]
    return f"{_written(a, w, operands, pad)}+{_written(b, w, operands, pad)}="


def add_answer(a: int, b: int, order: str = "lsb", pad: str = "fixed") -> str:
    return _written(a + b, operand_width(a, b, pad) + 1, _orders(order)[1], pad)


def add_reference(a: int, b: int, order: str = "lsb", pad: str = "fixed") -> str:
    """Column by column from the units: `x+y+carry=cs` (c the next carry, s the sum digit);
    in either order the work runs from the units (where the carries start), and the answer
    on the last line is written in `order`."""
    w = operand_width(a, b, pad)
    xs, ys = little_endian(a, w), little_endian(b, w)
    carry, steps = 0, []
    for x, y in zip(xs, ys):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}+{carry}={total:02d}")
        carry = total // 10
    return " ".join(steps) + "\n" + add_answer(a, b, order, pad)


def copy_prompt(x: int) -> str:
    return f"copy {x:0{WIDTH}d}="


def copy_answer(x: int) -> str:
    return f"{x:0{WIDTH}d}"


def copy_reference(x: int) -> str:
    return "digit by digit: " + " ".join(copy_answer(x)) + "\n" + copy_answer(x)


def digits_of(a: int, b: int) -> int:
    return len(str(max(a, b)))


def held_out(*key: object) -> bool:
    """True for the quarter of operand pairs (or strings to copy) reserved for evaluation."""
    return zlib.crc32(":".join(map(str, (_SALT, *key))).encode()) % _HELD_OUT_MOD == 0


def held_out_pair(a: int, b: int) -> bool:
    return held_out("add", a, b)


def held_out_string(x: int) -> bool:
    return held_out("copy", x)


def add_row(a: int, b: int, problem_id: str, benchmark: str, order: str = "lsb", pad: str = "fixed") -> dict:
    return {
        "problem_id": problem_id,
        "prompt": add_prompt(a, b, order, pad),
        "answer": add_answer(a, b, order, pad),
        "reference": add_reference(a, b, order, pad),
        "digits": digits_of(a, b),
        "benchmark": benchmark,
    }


def copy_row(x: int, problem_id: str) -> dict:
    return {
        "problem_id": problem_id,
        "prompt": copy_prompt(x),
        "answer": copy_answer(x),
        "reference": copy_reference(x),
        "digits": WIDTH,
        "benchmark": RETAIN_BENCHMARK,
    }


# ---------------------------------------------------------------------------------------
# Sampling


def _pool(d: int) -> list[tuple[int, int]] | None:
    """Every d-digit pair when there are few enough to list (d <= 2), else None."""
    if d > 2:
        return None
    lo = 0 if d == 1 else 10 ** (d - 1)
    hi = 10**d
    return [(a, b) for a in range(hi) for b in range(hi) if max(a, b) >= lo]


def sample_pair(rng: random.Random, d: int) -> tuple[int, int]:
    """A uniformly random pair whose larger operand has exactly d digits."""
    lo = 0 if d == 1 else 10 ** (d - 1)
    while True:
        a, b = rng.randrange(10**d), rng.randrange(10**d)
        if max(a, b) >= lo:
            return a, b


def fresh_pair(rng: random.Random, d: int) -> tuple[int, int]:
    """A d-digit pair from the training region (never a test pair): for pretraining."""
    while True:
        a, b = sample_pair(rng, d)
        if not held_out_pair(a, b):
            return a, b


def fresh_string(rng: random.Random) -> int:
    """A string to copy from the training region (never a retain problem)."""
    while True:
        x = rng.randrange(10**WIDTH)
        if not held_out_string(x):
            return x


def distinct_pairs(rng: random.Random, d: int, n: int, want_held_out: bool) -> list[tuple[int, int]]:
    """n distinct d-digit pairs from one region; fewer if the region has fewer (d <= 2)."""
    pool = _pool(d)
    if pool is not None:
        region = [p for p in pool if held_out_pair(*p) == want_held_out]
        return rng.sample(region, min(n, len(region)))
    if n > _MAX_SAMPLED:
        raise ValueError(f"{n} problems of {d} digits: at most {_MAX_SAMPLED:,} per digit count")
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < n:  # d >= 3: at least 247,500 pairs per region, so few repeats
        p = sample_pair(rng, d)
        if held_out_pair(*p) == want_held_out and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _train_counts(total: int, d_available: dict[int, int]) -> dict[int, int]:
    """An equal share per digit count, where a small pool (1 digit) gives its rest to the others."""
    counts, remaining = {}, total
    order = sorted(d_available, key=lambda d: d_available[d])
    for i, d in enumerate(order):
        counts[d] = min(remaining // (len(order) - i), d_available[d])
        remaining -= counts[d]
    if remaining:
        raise ValueError(f"--train {total}: more than the {sum(d_available.values())} training pairs there are")
    return counts


def _region_size(d: int, want_held_out: bool) -> int:
    pool = _pool(d)
    if pool is None:
        return 10**9  # effectively unbounded for the sizes asked here
    return sum(held_out_pair(*p) == want_held_out for p in pool)


def make_splits(
    seed: int = 0, train: int = 6000, test_per_digit: int = 500, retain: int = 500, order: str = "lsb",
    pad: str = "fixed",
) -> dict[str, pl.DataFrame]:
    """The three problems tables, all determined by `seed` (and the sizes); `order` and `pad`
    change only how the sums are written, not which problems are drawn."""
    if order not in ORDERS:
        raise ValueError(f"--order {order!r}: one of {', '.join(ORDERS)}")
    if pad not in PADS:
        raise ValueError(f"--pad {pad!r}: one of {', '.join(PADS)}")
    rows: dict[str, list[dict]] = {"train": [], "test": [], "retain": []}
    for d in DIGITS:
        rng = random.Random(f"{seed}:test:{d}")
        for i, (a, b) in enumerate(distinct_pairs(rng, d, test_per_digit, want_held_out=True)):
            rows["test"].append(add_row(a, b, f"test-add-{d}d-{i:06d}", f"add-{d}d", order, pad))

    counts = _train_counts(train, {d: _region_size(d, want_held_out=False) for d in DIGITS})
    pairs = []
    for d in DIGITS:
        pairs += distinct_pairs(random.Random(f"{seed}:train:{d}"), d, counts[d], want_held_out=False)
    random.Random(f"{seed}:train:order").shuffle(pairs)  # mixed difficulties in every part
    for i, (a, b) in enumerate(pairs):
        rows["train"].append(add_row(a, b, f"train-add-{digits_of(a, b)}d-{i:06d}", "train", order, pad))

    region = [x for x in range(10**WIDTH) if held_out_string(x)]
    if retain > len(region):
        raise ValueError(f"--retain {retain}: there are only {len(region)} held-out strings to copy")
    strings = random.Random(f"{seed}:retain").sample(region, retain)
    rows["retain"] = [copy_row(x, f"retain-copy-{WIDTH}d-{i:06d}") for i, x in enumerate(strings)]
    return {name: pl.DataFrame(r, schema=SCHEMA) for name, r in rows.items()}


def write_splits(out: str | Path, **kw) -> dict[str, Path]:
    """Write train/test/retain.parquet into `out` (each via a temporary name); return the paths.
    A file already there is left when it holds the same rows (a rerun) and refused otherwise
    (ValueError): it is someone else's, or another seed's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_splits(**kw)
    for name, frame in splits.items():
        path = out / f"{name}.parquet"
        try:
            same = not path.exists() or pl.read_parquet(path, glob=False).equals(frame)
        except Exception:  # noqa: BLE001 - not Parquet, or other columns: not these rows
            same = False
        if not same:
            raise ValueError(f"--out {out}: {path.name} exists with other rows (another --seed or sizes, or a file "
                             f"of yours); choose another --out or move it away")
    paths = {}
    for name, frame in splits.items():
        path = out / f"{name}.parquet"
        if path.exists():
            paths[name] = path
            continue
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        frame.write_parquet(tmp)
        tmp.replace(path)
        paths[name] = path
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for train/test/retain.parquet")
    ap.add_argument("--seed", type=int, default=0, help="which problems are drawn (the held-out region does not move)")
    ap.add_argument("--train", type=int, default=6000, help="training problems, split evenly over 1-5 digits")
    ap.add_argument("--test-per-digit", type=int, default=500,
                    help="test problems per digit count (1 digit has only 25 held-out pairs)")
    ap.add_argument("--retain", type=int, default=500, help="retention problems (copy a string)")
    ap.add_argument("--order", choices=ORDERS, default="lsb",
                    help="lsb: numbers least significant digit first (default); msb: the usual way, so the "
                         "answer's first digit depends on the whole carry chain; answer-lsb: operands the usual "
                         "way, the answer units first, so higher answer digits need operand digits further back")
    ap.add_argument("--pad", choices=PADS, default="fixed",
                    help=f"fixed: operands zero-padded to {WIDTH} digits (default); problem: to the problem's own "
                         "digit count, so harder problems are longer; labelled: that, each digit after its column's letter")
    args = ap.parse_args()
    for flag, v in (("--train", args.train), ("--test-per-digit", args.test_per_digit), ("--retain", args.retain)):
        if v < 1:
            ap.error(f"{flag} {v}: must be at least 1")
    try:
        paths = write_splits(args.out, seed=args.seed, train=args.train, test_per_digit=args.test_per_digit, retain=args.retain,
                            order=args.order, pad=args.pad)
    except ValueError as e:
        ap.error(str(e))
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
