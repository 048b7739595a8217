"""Trained teachers for section `storage`: a small language model trained here on real English,
and the quickstart's teacher. Both are cached, so only the first run of the bench trains them.

The English-text teacher
------------------------
Corpus (everything ships with the interpreter and the venv; nothing is downloaded): the
English documentation that CPython and NumPy carry, as documents in a fixed order:

1. `pydoc_data.topics`: the language reference's help topics (`help('if')` ...), one document
   per topic, sorted by name;
2. the docstrings (`ast.get_docstring`, so indentation-cleaned) of every module, class and
   function in the standard library's `.py` files, files in sorted order, skipping
   `site-packages`, `test`/`tests` directories, `idlelib`, `lib2to3` and `tkinter`;
3. the same for the installed `numpy` package.

Docstrings shorter than 80 characters are dropped. With CPython 3.11.7 and NumPy 2.4.6 that
is 5,270 documents, 3.45 MB of text (the quick run uses part 1 alone, 0.47 MB). Prose mostly,
with the doctest examples and parameter lists documentation has. A document goes to the
held-out split when its crc32 is divisible by HELD_OUT_EVERY (a twentieth).

Recipe: byte-level BPE trained on the training split (`bench.workload.build_tokenizer`,
without the chat template: the model is a plain LM and prompts are raw text) to `vocab`
tokens, then a Qwen2 model from `stages/tiny_model.build` trained from scratch for a fixed
number of AdamW steps on random windows of the training split (documents joined by the
end-of-sequence token), seeded, bfloat16 autocast on CPU, one thread (bench.common.set_threads).
The checkpoint at `student_step` is kept as well: the student of the loss-error measurement
(a model that has learnt some English, as a distillation student has).

The teacher's prompts are the first `prompt_tokens` tokens of held-out paragraphs at least
twice that long (round robin over the held-out documents: every document's first paragraph,
then every second one, ...); bench/storage.py samples the teacher's own responses to them
with the real `paced rollout` stage at temperature 1 (what forward-KL distillation trains on).

Cache: `$PACED_BENCH_CACHE` (default `~/.cache/paced-bench`)/english-<recipe>-<hash of the
settings>/, built in a temporary directory beside it and renamed into place, with its marker
(`recipe.json`: settings, training seconds, losses, corpus size) written last.

The quickstart teacher
----------------------
`examples/train_tiny.py`'s default TEACHER recipe (4 layers, hidden 128, 1000 steps; `--quick`: 12
steps, a valid checkpoint but not a trained teacher; the quickstart itself now trains a 2-layer
teacher that reads the reference), trained by its own `make_model` into
the cache (or reused from `runs/quickstart/models/teacher` when the quickstart made it with
the same settings). Its tokenizer is character level: 258 tokens.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bench.common import ROOT
from bench.workload import build_tokenizer, tiny_model

RECIPE_VERSION = 1
MARKER = "recipe.json"
HELD_OUT_EVERY = 20
MIN_DOC_CHARS = 80
SKIP_STDLIB = ("site-packages", "idlelib", "lib2to3", "tkinter")


def cache_root() -> Path:
    return Path(os.environ.get("PACED_BENCH_CACHE") or Path.home() / ".cache" / "paced-bench")


# ---------------------------------------------------------------------------------------
# Corpus


def _docstrings(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in skip or "test" in rel or "tests" in rel:
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOC_CHARS:
                    out.append(doc)
    return out


def corpus(kind: str) -> list[str]:
    """The documents, in order: 'topics' (pydoc_data.topics) or 'docs' (topics + stdlib + numpy docstrings)."""
    import pydoc_data.topics

    docs = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    docs = [d for d in docs if len(d) >= MIN_DOC_CHARS]
    if kind == "docs":
        docs += _docstrings(Path(sysconfig.get_paths()["stdlib"]), SKIP_STDLIB)
        docs += _docstrings(Path(np.__file__).parent)
    elif kind != "topics":
        raise ValueError(f"corpus {kind!r}: use 'topics' or 'docs'")
    return docs


def corpus_identity(kind: str) -> dict:
    """What the corpus depends on (it is read from the installed files, so their versions)."""
    out = {"kind": kind, "python": sys.version.split()[0]}
    if kind == "docs":
        out["numpy"] = np.__version__
    return out


def held_out(doc: str) -> bool:
    return zlib.crc32(doc.encode()) % HELD_OUT_EVERY == 0


# ---------------------------------------------------------------------------------------
# Recipe and training


@dataclass(frozen=True)
class TextRecipe:
    name: str
    corpus: str          # 'docs' or 'topics' (see corpus())
    vocab: int           # BPE vocabulary, special tokens included
    hidden: int
    layers: int
    heads: int
    context: int         # tokens per training window; also the model's max_position_embeddings
    batch: int           # windows per step
    steps: int
    lr: float
    student_step: int    # this checkpoint is kept as the loss-error student
    prompt_tokens: int   # the teacher's prompts: this many tokens of a held-out paragraph
    seed: int = 0


FULL = TextRecipe("full", "docs", 32_000, hidden=256, layers=4, heads=4, context=256, batch=8, steps=150, lr=5e-3,
                  student_step=30, prompt_tokens=24)
# FULL trained longer: 1,000 steps (about 2.4 passes over the training split) instead of 150, all else
# the same (its student is this run's step-30 checkpoint). FULL's 150 steps leave a teacher of 6.2 nats of
# entropy on its own samples, far above a real language model's; section `sparse-trained` measures
# the drawn-token student on this one to see how the gap to dense moves with the teacher's entropy.
TRAINED = replace(FULL, name="trained", steps=1_000)
QUICK = TextRecipe("quick", "topics", 4_000, hidden=128, layers=2, heads=2, context=128, batch=8, steps=40, lr=3e-3,
                   student_step=8, prompt_tokens=16)
TRAINED_QUICK = replace(QUICK, name="quick-trained", steps=120)


@dataclass(frozen=True)
class TextTeacher:
    dir: Path
    teacher: Path
    student: Path
    prompts: list[str]   # raw prompt texts (held-out document openings)
    record: dict         # the marker: settings, train seconds, losses, corpus


def _stream(tokenizer, docs: list[str]) -> np.ndarray:
    eos = tokenizer.eos_token_id
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    return np.fromiter((t for seq in ids for t in (*seq, eos)), dtype=np.int64)


def _held_out_loss(model, held: np.ndarray, context: int, windows: int = 32) -> float:
    """Mean next-token cross-entropy on the first `windows` disjoint held-out windows (float32)."""
    import torch

    n = min(windows, (len(held) - 1) // context)
    x = torch.from_numpy(held[: n * context + 1])
    inputs = torch.stack([x[i * context : (i + 1) * context] for i in range(n)])
    targets = torch.stack([x[i * context + 1 : (i + 1) * context + 1] for i in range(n)])
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, n, 8):
            logits = model(input_ids=inputs[s : s + 8]).logits.float()
            total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets[s : s + 8].flatten(), reduction="sum"))
    model.train()
    return total / (n * context)


def native_bf16() -> bool | None:
    """Whether this CPU computes bfloat16 natively (the avx512_bf16 or amx_bf16 flag of
    /proc/cpuinfo); None where that file is not there to read."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train(r: TextRecipe, out: Path, log=print) -> dict:
    """Tokenizer, teacher and student checkpoint into `out`; return the record (no marker)."""
    import torch
    from transformers import AutoModelForCausalLM

    if native_bf16() is False:
        # The recipe trains under bfloat16 autocast (the cached teacher, and every figure measured
        # on it, depend on that); without the instructions it runs in emulation.
        log("english teacher: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag): the "
            "recipe's bfloat16 autocast is emulated, about 25x slower than float32, so training it once takes "
            "hours here (`python -m bench.text_teacher` times one step both ways)")
    t0 = time.perf_counter()
    docs = corpus(r.corpus)
    train_docs = [d for d in docs if not held_out(d)]
    held_docs = [d for d in docs if held_out(d)]
    tokenizer = build_tokenizer(r.vocab, train_docs)
    tokenizer.chat_template = None  # a plain LM: prompts are raw text
    train_ids, held_ids = _stream(tokenizer, train_docs), _stream(tokenizer, held_docs)
    prep = time.perf_counter() - t0

    sys.path.insert(0, str(ROOT / "examples"))
    import train_tiny  # an example script (examples/train_tiny.py): its learning-rate schedule

    teacher_dir, student_dir = out / "teacher", out / "student"
    tiny_model.build(teacher_dir, arch="qwen2", hidden=r.hidden, layers=r.layers, heads=r.heads, seed=r.seed,
                     max_positions=r.context, tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"english teacher: {len(docs):,} documents, {sum(map(len, docs)) / 1e6:.2f} MB; {len(train_ids):,} training "
        f"tokens, {len(held_ids):,} held out; Qwen2 {n_params / 1e6:.1f} M parameters, {r.steps} steps of "
        f"{r.batch} x {r.context} tokens")
    torch.manual_seed(r.seed)
    rng = np.random.default_rng(r.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    model.train()
    losses: list[float] = []
    student_held = float("nan")
    t1 = time.perf_counter()
    for step in range(r.steps):
        for group in opt.param_groups:
            group["lr"] = train_tiny.lr_at(step, r)  # the same schedule as the quickstart models
        starts = rng.integers(0, len(train_ids) - r.context - 1, size=r.batch)
        x = torch.from_numpy(np.stack([train_ids[s : s + r.context + 1] for s in starts]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        done = step + 1
        if done == r.student_step:
            model.save_pretrained(student_dir)
            tokenizer.save_pretrained(student_dir)
            student_held = _held_out_loss(model, held_ids, r.context)
        if done % max(1, r.steps // 8) == 0 or done == r.steps:
            log(f"english teacher step {done}/{r.steps}  train loss {loss.item():.3f}  {time.perf_counter() - t1:.0f} s")
    train_seconds = time.perf_counter() - t1
    teacher_held = _held_out_loss(model, held_ids, r.context)
    model.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)

    # Prompts: openings of held-out paragraphs with at least as much text again after them,
    # round robin over the documents (every document's first paragraph, then every second one ...).
    paragraphs = [[p for p in d.split("\n\n") if p.strip()] for d in held_docs]
    prompts = []
    for i in range(max(map(len, paragraphs))):
        for doc in paragraphs:
            if i < len(doc):
                ids = tokenizer(doc[i].strip(), add_special_tokens=False)["input_ids"]
                if len(ids) >= 2 * r.prompt_tokens:
                    prompts.append(tokenizer.decode(ids[: r.prompt_tokens]))
    tail = losses[-max(1, r.steps // 10):]
    return {
        "documents": len(docs), "characters": sum(map(len, docs)), "train_tokens": int(len(train_ids)),
        "held_out_tokens": int(len(held_ids)), "vocab": len(tokenizer), "parameters": n_params,
        "prepare_seconds": round(prep, 1), "train_seconds": round(train_seconds, 1),
        "train_loss_last_10pct": round(float(np.mean(tail)), 4), "held_out_loss": round(teacher_held, 4),
        "student_held_out_loss": round(student_held, 4), "prompts": prompts,
    }


def english_teacher(r: TextRecipe, log=print) -> TextTeacher:
    """The trained English-text teacher of recipe r: from the cache, or trained now into it."""
    settings = json.loads(json.dumps({"recipe_version": RECIPE_VERSION, "recipe": asdict(r), "corpus": corpus_identity(r.corpus)}))
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_root() / f"english-{r.name}-{key}"
    marker = final / MARKER
    if not (marker.exists() and json.loads(marker.read_text()).get("settings") == settings):
        partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        record = {"settings": settings, **train(r, partial, log)}
        (partial / MARKER).write_text(json.dumps(record, indent=2) + "\n")  # last: the directory is complete
        shutil.rmtree(final, ignore_errors=True)  # an unfinished or other-settings one
        try:
            partial.rename(final)
        except OSError:  # another run finished first: use its copy
            shutil.rmtree(partial, ignore_errors=True)
    else:
        log(f"english teacher: reused {final} (same settings)")
    record = json.loads(marker.read_text())
    return TextTeacher(dir=final, teacher=final / "teacher", student=final / "student", prompts=record["prompts"], record=record)


# ---------------------------------------------------------------------------------------
# The quickstart's teacher


def _quickstart(quick: bool):
    sys.path.insert(0, str(ROOT / "examples"))
    import train_tiny

    recipe = replace(train_tiny.TEACHER, steps=train_tiny.QUICK_STEPS) if quick else train_tiny.TEACHER
    tokenizer = train_tiny.build_tokenizer()
    return train_tiny, recipe, tokenizer, train_tiny.settings(recipe, 0, tokenizer)


def _quickstart_cached(quick: bool) -> Path | None:
    """A finished quickstart teacher with the recipe's settings: the quickstart's own, or ours."""
    train_tiny, _, _, wanted = _quickstart(quick)
    for path in (ROOT / "runs" / "quickstart" / "models" / "teacher", cache_root() / f"quickstart-{'quick' if quick else 'full'}" / "teacher"):
        marker = path / train_tiny.MARKER
        if marker.exists() and json.loads(marker.read_text()).get("settings") == wanted:
            return path
    return None


def quickstart_teacher(quick: bool) -> tuple[Path, dict]:
    """examples/train_tiny.py's teacher (its --quick one when quick), trained by its own
    make_model into the cache unless finished already: path and its train_config.json."""
    path = _quickstart_cached(quick)
    if path is None:
        train_tiny, recipe, tokenizer, _ = _quickstart(quick)
        out = cache_root() / f"quickstart-{'quick' if quick else 'full'}"
        out.mkdir(parents=True, exist_ok=True)
        path = train_tiny.make_model(out, "teacher", recipe, 0, tokenizer,
                                     train_tiny.QUICK_EVAL if quick else train_tiny.EVAL_PER_DIGIT)
    return path, json.loads((path / "train_config.json").read_text())


def start_quickstart_teacher(log=print):
    """Train the full quickstart teacher in a child process (one thread, as the bench's own
    work) unless it is cached: it then trains beside the section's other work. Returns the
    child, or None."""
    if _quickstart_cached(False) is not None:
        return None
    cache_root().mkdir(parents=True, exist_ok=True)
    log_path = cache_root() / "quickstart-full.log"
    log(f"quickstart teacher: training in the background (examples/train_tiny.py's recipe, once); log in {log_path}")
    with open(log_path, "w") as f:
        return subprocess.Popen([sys.executable, "-c", "from bench.text_teacher import quickstart_teacher; quickstart_teacher(False)"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=os.environ | {"PACED_NO_PROGRESS": "1"})


def wait_quickstart_teacher(child, log=print) -> None:
    t = time.perf_counter()
    code = child.wait()
    log(f"quickstart teacher: background training {'done' if code == 0 else f'failed (exit {code})'}, waited {time.perf_counter() - t:.0f} s")
    # On failure, quickstart_teacher() trains it in this process (and raises what went wrong).


def bf16_cost(r: TextRecipe = FULL) -> tuple[float, float]:
    """Seconds of one forward and backward pass of recipe r's batch (its model, random weights and
    tokens) in float32 and under the recipe's bfloat16 autocast, after a short warm-up."""
    import contextlib

    import torch

    model = tiny_model.random_model(r.vocab, hidden=r.hidden, layers=r.layers, heads=r.heads, seed=r.seed,
                                    max_positions=r.context)
    x = torch.randint(0, r.vocab, (r.batch, r.context + 1))
    out = []
    for ctx in (contextlib.nullcontext, lambda: torch.autocast("cpu", dtype=torch.bfloat16)):
        for batch, timed in ((x[:1, :17], False), (x, True)):  # the warm-up: one short sequence
            t = time.perf_counter()
            with ctx():
                logits = model(input_ids=batch[:, :-1]).logits
            torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()).backward()
            model.zero_grad(set_to_none=True)
            if timed:
                out.append(time.perf_counter() - t)
    return out[0], out[1]


if __name__ == "__main__":
    from bench.common import set_threads

    set_threads(1)  # as the recipe trains
    f32, bf16 = bf16_cost()
    print(f"english teacher, full recipe: one forward and backward pass of {FULL.batch} x {FULL.context} tokens, one "
          f"thread: float32 {f32:.1f} s, bfloat16 autocast {bf16:.1f} s ({bf16 / f32:.1f}x); native bfloat16 on this "
          f"CPU: {native_bf16()}")
