"""Artifact schemas: columns, versions and validation.

Every artifact paced writes or reads is described by one `ArtifactSchema`: its name, its
version, its columns (Arrow type, nullability, one line of documentation) and the key that
must be unique. Reading validates a table against it and collects *every* problem before
failing once with `InputError`, whose message names the file, the column, the offending rows
and the fix.

Inputs written by other tools are welcome: polars writes `large_string` and `int64` where
paced writes `string` and `int32`; such a column is cast to the canonical type when the cast
is lossless, and refused otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["InputError", "Column", "ArtifactSchema", "check_types", "conform", "key_runs"]

# Rows quoted in an error message; more would bury the fix under the evidence.
MAX_QUOTED_ROWS = 5


class InputError(Exception):
    """Bad input or usage: the CLI exits with code 2 and prints the message.

    The message must name the file, column or option at fault, and say how to fix it.
    """


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False


# An invariant check receives the conformed table as a polars frame and returns problems.
Check = Callable[[pl.DataFrame], list[str]]


@dataclass(frozen=True)
class ArtifactSchema:
    """One artifact kind: fixed columns, a version, a unique key and invariants."""

    name: str
    version: int
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    checks: tuple[Check, ...] = field(default=())
    older: tuple["ArtifactSchema", ...] = field(default=())
    """Earlier versions still read, newest first: a file that declares one (or, from another
    tool, has none of the columns added since) is checked against it."""

    def variant(self, arrow_schema: pa.Schema, declared: int | None) -> "ArtifactSchema | None":
        """The version of this schema a file is read as: the one it declares (None when paced
        reads no such version), or for an undeclared file the newest whose added columns it
        lacks entirely (a file with some of them is checked, and refused, as this version)."""
        if declared is not None:
            return next((s for s in (self, *self.older) if s.version == declared), None)
        names = set(arrow_schema.names)
        for old in self.older:
            added = {c.name for c in self.columns} - {c.name for c in old.columns}
            if not added & names:
                return old
            break
        return self

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns]
        )

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


# ---------------------------------------------------------------------------------------
# Type compatibility: which Arrow types a foreign file may use for each canonical type.


def _family(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return "list<" + _family(t.value_type) + ">"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def _type_name(t: pa.DataType) -> str:
    return {"string": "string", "integer": "integer", "float": "float", "bool": "bool"}.get(
        _family(t), _family(t)
    )


def _polars_type(t: pa.DataType) -> pl.DataType:
    return pl.from_arrow(pa.array([], type=t)).dtype  # type: ignore[union-attr]


def check_types(arrow_schema: pa.Schema, schema: ArtifactSchema, source: str) -> None:
    """Refuse missing columns and columns of the wrong type family (cheap: metadata only)."""
    problems: list[str] = []
    names = arrow_schema.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # which of them is the column? (polars and pyarrow readers refuse or pick one)
        raise InputError(_format(source, [f"column(s) {', '.join(repr(n) for n in twice)} appear more than once; "
                                          f"keep one of each (rename or drop the others) and write the file again"]))
    missing = [c.name for c in schema.columns if c.name not in names]
    if missing:
        have = ", ".join(names) if names else "(none)"
        problems.append(
            f"missing column(s) {', '.join(repr(m) for m in missing)}; the file has: {have}. "
            f"A {schema.name} file needs {', '.join(c.name for c in schema.columns)} "
            f"(see docs/artifacts.md)"
        )
    for col in schema.columns:
        if col.name not in names:
            continue
        got = arrow_schema.field(col.name).type
        if _family(got) == "null" and col.nullable:
            continue
        if _family(got) != _family(col.type):
            problems.append(
                f"column {col.name!r} has type {got}, expected {col.type} "
                f"({_type_name(col.type)}); cast it before writing, e.g. in polars "
                f"`pl.col({col.name!r}).cast(pl.{_polars_type(col.type)})`"
            )
    if problems:
        raise InputError(_format(source, problems))


def conform(frame: pl.DataFrame, schema: ArtifactSchema, source: str) -> pl.DataFrame:
    """Validate a frame (already type-checked by `check_types`) and cast it to canonical types.

    Extra columns are kept as they are (the design lets users add columns). Raises one
    `InputError` listing every problem found.
    """
    return conform_with_runs(frame, schema, source)[0]


def conform_with_runs(frame: pl.DataFrame, schema: ArtifactSchema, source: str) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """`conform`, and the `key_runs` of the conformed frame that proved its key unique (or None).

    The runs come for free with the fast unique-key check, and a stage that aggregates per
    group (`paced weight`) reuses them instead of hashing every row again.
    """
    problems: list[str] = []
    casts = []
    for col in schema.columns:
        if col.name not in frame.columns:
            continue
        want = _polars_type(col.type)
        if frame.schema[col.name] != want:
            casts.append(pl.col(col.name).cast(want, strict=True))
    if casts:
        try:
            frame = frame.with_columns(casts)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as e:
            first = str(e).strip().splitlines()[0]
            raise InputError(
                f"{source}: a column cannot be converted losslessly to its paced type ({first}); "
                f"see docs/artifacts.md for the types"
            ) from None
    nulls = _null_problems(frame, schema)
    problems.extend(nulls)
    runs = None if nulls else key_runs(frame, schema.key)
    problems.extend(_key_problems(frame, schema, runs))
    if not problems:  # invariants assume non-null, unique rows
        for check in schema.checks:
            problems.extend(check(frame))
    if problems:
        raise InputError(_format(source, problems))
    return frame, runs


def key_runs(frame: pl.DataFrame, key: tuple[str, ...] | list[str]) -> pl.DataFrame | None:
    """Where each group of the key's first column starts, if the groups prove the two-column
    key unique; None otherwise (and always for other keys).

    The proof, without hashing every row: (1) each group's rows are contiguous, i.e. the
    values that start the runs of equal adjacent values are all distinct (one hash per group,
    not per row); (2) within each run the second key column, an integer, strictly increases.
    Then no two rows share a key. It is how `paced rollout` and `paced score` write (a
    problem's samples together, in sample order) and what a user's `sort` gives; any other
    order, e.g. shuffled rows or a problem split over two parts, gives None, and the caller
    falls back to the general check. Assumes no nulls in the key (checked before).

    Returns one row per group, in row order: ``start`` (its first row, polars' index type;
    ascending, the first 0) and the key's first column (the group's value). None for an
    empty frame.
    """
    if len(key) != 2 or frame.height == 0:
        return None
    group, index = key
    if not frame.schema[index].is_integer():
        return None
    g = frame.get_column(group)
    new_run = _adjacent(g, lambda a, b: a != b)  # [n - 1]: row r + 1 starts a run
    increasing = _adjacent(frame.get_column(index), lambda a, b: a > b)
    if not (increasing | new_run).all():
        return None
    starts = pl.concat([pl.Series([True]), new_run], rechunk=True)  # [n]: row r starts a run
    offsets = starts.arg_true()
    first = g.filter(starts)  # a filter, twice as fast as a gather at the offsets
    m = first.len()
    # Strictly increasing ids (sorted input) are distinct without hashing; otherwise distinct
    # hashes prove distinct values, and a collision only costs the exact count.
    if m > 1 and not (first.slice(1) > first.slice(0, m - 1)).all():
        if first.hash().n_unique() != m and first.n_unique() != m:
            return None  # some group comes back after another one: not contiguous
    return pl.DataFrame({"start": offsets, group: first})


def _adjacent(s: pl.Series, op: Callable[[pl.Series, pl.Series], pl.Series]) -> pl.Series:
    """``op(s[r + 1], s[r])`` for every row r: a Boolean series one shorter than ``s``.

    Chunk by chunk, on zero-copy slices of each chunk (plus one comparison across each chunk
    boundary): slices of the whole series that are offset by one row have misaligned chunks,
    which polars would realign by copying both (80 M strings: most of the time), and a shifted
    copy costs as much.
    """
    parts: list[pl.Series] = []
    last = None
    for chunk in s.get_chunks():
        if chunk.len() == 0:
            continue
        if last is not None:
            parts.append(op(chunk.slice(0, 1), last))
        parts.append(op(chunk.slice(1), chunk.slice(0, chunk.len() - 1)))
        last = chunk.slice(chunk.len() - 1, 1)
    if not parts:
        return pl.Series(s.name, [], dtype=pl.Boolean)
    return pl.concat(parts, rechunk=True)


def _duplicates(frame: pl.DataFrame, key: list[str], runs: pl.DataFrame | None = None) -> bool:
    """Whether any key value repeats.

    `runs` from `key_runs` (not None) already proves the key unique. Otherwise, equal keys
    hash equal, so if the combined hashes are all distinct there is no duplicate (8 M score
    rows: 0.17 s, against 0.8 s for `is_duplicated`). Distinct keys whose hashes collide only
    send us to the exact check.
    """
    if runs is not None:
        return False
    combined = pl.col(key[0]).hash(0)
    for i, k in enumerate(key[1:], start=1):
        combined = combined.xor(pl.col(k).hash(i))
    if frame.select(combined.n_unique()).item() == frame.height:
        return False
    return bool(frame.select(pl.struct(key).is_duplicated().any()).item())


def _null_problems(frame: pl.DataFrame, schema: ArtifactSchema) -> list[str]:
    problems = []
    for col in schema.columns:
        if col.nullable:
            continue
        nulls = frame.get_column(col.name).null_count()
        if nulls:
            rows = quote_rows(frame, pl.col(col.name).is_null(), schema.key)
            problems.append(
                f"column {col.name!r} has {nulls} null value(s) but may not be null "
                f"(rows {rows}); fill or drop those rows"
            )
        elif isinstance(frame.schema[col.name], pl.List) and _nulls_inside(frame.get_column(col.name)):
            bad = frame.select(pl.col(col.name).list.eval(_any_null(frame.schema[col.name].inner)).list.any().fill_null(False)).to_series()
            problems.append(
                f"column {col.name!r} holds null items inside its lists (rows {quote_rows(frame, bad, schema.key)}); "
                f"fill or drop those rows"
            )
    return problems


def _nulls_inside(column: pl.Series) -> bool:
    """Whether a list column holds a null item at any depth (Arrow's null counts: no row-wise work)."""
    inner = column.to_arrow()
    while pa.types.is_list(inner.type) or pa.types.is_large_list(inner.type):
        inner = pc.list_flatten(inner)
        if inner.null_count:
            return True
    return False


def _any_null(inner: pl.DataType) -> pl.Expr:
    """Per list item: is it null, or (a list itself) does it hold a null, at any depth."""
    if isinstance(inner, pl.List):
        return pl.element().is_null() | pl.element().list.eval(_any_null(inner.inner)).list.any().fill_null(False)
    return pl.element().is_null()


def _key_problems(frame: pl.DataFrame, schema: ArtifactSchema, runs: pl.DataFrame | None = None) -> list[str]:
    key = list(schema.key)
    if not key or frame.height == 0 or not _duplicates(frame, key, runs):
        return []
    dup = frame.select(key).is_duplicated()
    n = int(dup.sum())
    shown = frame.filter(dup).select(key).unique(maintain_order=True).head(MAX_QUOTED_ROWS)
    values = ", ".join(
        "(" + ", ".join(short_repr(v) for v in row) + ")" if len(key) > 1 else short_repr(row[0])
        for row in shown.iter_rows()
    )
    what = " + ".join(key)
    return [
        f"{what} must be unique, but {n} rows share a value: {values}"
        f"{' ...' if n > MAX_QUOTED_ROWS else ''}; drop or rename the duplicates"
    ]


def short_repr(value: Any, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters: a message quotes a 1 MB id by its start."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[: limit - 20]}...{r[-8:]} ({len(r):,} characters)"


def quote_rows(frame: pl.DataFrame, predicate: pl.Expr, key: tuple[str, ...]) -> str:
    """A short human list of the rows matching `predicate`, named by their key."""
    cols = [k for k in key if k in frame.columns]
    idx = frame.with_row_index("__row").filter(predicate)
    parts = []
    for row in idx.head(MAX_QUOTED_ROWS).iter_rows(named=True):
        name = ", ".join(f"{k}={short_repr(row[k])}" for k in cols) if cols else ""
        parts.append(f"#{row['__row']}" + (f" ({name})" if name else ""))
    more = " ..." if idx.height > MAX_QUOTED_ROWS else ""
    return "; ".join(parts) + more


def _format(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}:\n" + "\n".join(f"  - {p}" for p in problems)
