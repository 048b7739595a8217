"""Pretrain a tiny teacher and a tiny student from scratch on CPU, for the quickstart.

    python examples/train_tiny.py --out runs/quickstart/models            # a few minutes, 2 cores
    python examples/train_tiny.py --out /tmp/models --quick               # under a minute; for CI
    python examples/train_tiny.py --out m --student-layers 1 --student-hidden 64 --student-heads 1 --student-seed 3
    python examples/train_tiny.py --out m --order msb --teacher-steps 1000    # numbers the usual way round
    python examples/train_tiny.py --out m --pad problem --student-window 5    # a student that cannot see 4-5 digit sums whole

Both models learn the task of `examples/task.py` (fixed-width addition, numbers written
units first) and its retention skill (copying a string) from freshly sampled problems of the
training region, never a test or retain problem. Prompts are tokenised by
`stages.prompts.encode_prompts`, exactly as `paced rollout` and `paced teacher-logits` do
(raw text: the tokenizer has no chat template; no prompt suffix). Some examples carry the
problem's reference solution in the prompt (`--context reference`'s template), so that a model
conditioned on the reference reads the answer off it: that is what makes self-distillation
with privileged context mean something. The loss is on the response and its end-of-sequence
token only.

- The teacher (by default 4 layers, 1000 steps) learns to add. The quickstart's and the
  regime map's teacher is the paper's privileged-context teacher instead: `--teacher-layers 2
  --teacher-reference-fraction 1 --teacher-stop-at 1` reads every problem's reference and stops
  once it answers 200 fresh problems with it without a mistake (seed 0: 100 steps, 66 s on 2
  cores, 100 % greedy on every held-out 1-5 digit test problem with the reference, 0 % without).
- The student (2 layers) first learns to read the answer off the reference (every prompt
  carries it for `reading_steps`; `--student-reference-fraction 0` skips that), then learns to
  add and to copy, and stops half-way: as soon as its greedy accuracy on fresh training
  problems reaches `stop_at`. Addition "clicks" within about a hundred steps, at a step that
  varies from run to run, so a fixed step count gives a student that knows nothing or
  everything; a fixed competence gives a spread of pass rates at temperature 1 (a few problems
  mastered, most at the frontier, the hardest unsolved): what Paced weights.

The thread count did not change the model where it was checked: the seed-0 reading teacher
trained at 1 and at 2 threads came out with identical weights.

Writes `OUT/teacher` and `OUT/student`: ordinary checkpoints (safetensors, a character-level
tokenizer shared by both, a generation config with the end-of-sequence token) that
`paced rollout --model` loads, and prints the two paths on stdout. Each directory gets
`train_config.json` (settings, steps run, seconds, greedy accuracy) last; a rerun with the same
settings reuses a finished model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from stages import threads  # noqa: E402

threads.bounded_wait()  # before torch loads (stages.threads says why)

import task  # noqa: E402
import tiny_model  # noqa: E402

from stages.prompts import encode_prompts  # noqa: E402

EOS, PAD = "<|endoftext|>", "<|pad|>"
# Bumped whenever a change here would make a cached model stale.
RECIPE_VERSION = 2
MARKER = "train_config.json"
MAX_NEW_TOKENS = 8  # 6 answer digits and the end-of-sequence token, plus one to spare
EVAL_PER_DIGIT = 200
QUICK_EVAL = 10  # --quick: the check that generation and scoring run, not a measurement
QUICK_STEPS = 12
"""--quick: the teacher's steps (a valid checkpoint, not a good teacher)."""
QUICK_STUDENT_STOP = 0.3
"""--quick: the student still stops at a fixed competence (lower, and with no reading phase),
so its pass rates spread and Paced has problems to weight: about 40 s on 2 cores."""
CHECK_EVERY = 10  # steps between two checks of `stop_at`
CHECK_PER_DIGIT = 40


@dataclass(frozen=True)
class Recipe:
    """How one model is built and pretrained."""

    hidden: int
    """Hidden size; the head dimension is hidden / heads (vLLM's CPU attention needs >= 32)."""
    layers: int
    heads: int
    steps: int
    """Optimizer steps (at most, with `stop_at`), each on `batch_size` fresh problems."""
    lr: float = 2e-3
    batch_size: int = 64
    reference_fraction: float = 0.25
    """Share of examples whose prompt carries the reference solution (`--context reference`)."""
    retain_fraction: float = 0.1
    """Share of examples from the retention skill (copying a string)."""
    reading_steps: int = 0
    """Steps at the start where every prompt carries the reference: the model learns to read
    the answer off it before it learns to add."""
    stop_at: float | None = None
    """Stop once greedy accuracy on fresh training problems (1-5 digits equally, checked every
    CHECK_EVERY steps) reaches this; None trains all `steps`."""
    stop_context: str = "none"
    """The prompts `stop_at` is checked on: `none`, or `reference` (the teacher that reads the
    reference stops once it reads it well enough)."""
    max_positions: int = 512
    """Context length: the reference prompt is 188 tokens, the response 7."""
    window: int | None = None
    """Sliding attention window on every layer (tokens, the current one included), None for full
    attention. Information then travels at most layers x (window - 1) tokens back: with
    `--pad problem`, d-digit sums with 2d + 1 beyond that are out of the model's reach
    (examples/task.py)."""


TEACHER = Recipe(hidden=128, layers=4, heads=4, steps=1000, reference_fraction=0.1, retain_fraction=0.05)
STUDENT = Recipe(hidden=128, layers=2, heads=4, steps=600, reading_steps=100, stop_at=0.6)


# ---------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer():
    """Character level: a byte-level BPE with no merges, so every digit is its own token and
    any text round-trips. No chat template: prompts are used raw."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([EOS, PAD, *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS, PAD])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


# ---------------------------------------------------------------------------------------
# Data


def sample_rows(
    rng: random.Random, n: int, recipe: Recipe, reading: bool = False, order: str = "lsb", pad: str = "fixed"
) -> list[tuple[dict, str]]:
    """n fresh (problem row, context) pairs from the training region; with `reading`, every
    prompt carries the reference."""
    out = []
    for _ in range(n):
        if rng.random() < recipe.retain_fraction:
            row = task.copy_row(task.fresh_string(rng), "")
        else:
            a, b = task.fresh_pair(rng, rng.choice(task.DIGITS))
            row = task.add_row(a, b, "", "", order, pad)
        out.append((row, "reference" if reading or rng.random() < recipe.reference_fraction else "none"))
    return out


def encode(tokenizer, rows: list[dict], context: str) -> list[tuple[list[int], int]]:
    """Each row as (prompt + response + end-of-sequence token ids, prompt length)."""
    prompts = encode_prompts(tokenizer, rows, context=context)
    eos = tokenizer.eos_token_id
    return [
        (p + tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [eos], len(p))
        for p, r in zip(prompts, rows)
    ]


def by_length(examples: list[tuple[list[int], int]]):
    """Batches of equal-length sequences: input_ids and labels [batch, seq], labels -100 on
    the prompt. No padding, so no attention mask: a reference prompt is 15 times longer than
    a plain one, and one padded batch would cost its length for every row."""
    import torch

    groups: dict[int, list[tuple[list[int], int]]] = {}
    for ex in examples:
        groups.setdefault(len(ex[0]), []).append(ex)
    for group in groups.values():
        ids = torch.tensor([seq for seq, _ in group])
        labels = ids.clone()
        for i, (_, n_prompt) in enumerate(group):
            labels[i, :n_prompt] = -100
        yield ids, labels


# ---------------------------------------------------------------------------------------
# Training


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up over 5 % of the steps, then cosine down to a tenth."""
    warm = max(1, recipe.steps // 20)
    if step < warm:
        return recipe.lr * (step + 1) / warm
    t = (step - warm) / max(1, recipe.steps - warm)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, tokenizer, recipe: Recipe, seed: int, name: str, order: str = "lsb", pad: str = "fixed") -> int:
    """Train in place; return the number of steps run."""
    import torch

    from stages.common import advance, console, progress

    rng = random.Random(f"{seed}:pretrain:{name}")
    # Fresh training-region problems (never test ones) to check `stop_at` on.
    check_rng = random.Random(f"{seed}:check:{name}")
    check_rows = [
        task.add_row(*task.fresh_pair(check_rng, d), "", "", order, pad)
        for d in task.DIGITS for _ in range(CHECK_PER_DIGIT)
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    start, every = time.monotonic(), max(1, recipe.steps // 10)
    with progress(f"pretraining {name}", recipe.steps, "steps") as bar:
        for step in range(recipe.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, recipe)
            batch = sample_rows(rng, recipe.batch_size, recipe, reading=step < recipe.reading_steps, order=order, pad=pad)
            examples = []
            for context in ("none", "reference"):
                rows = [row for row, c in batch if c == context]
                examples += encode(tokenizer, rows, context) if rows else []
            n_targets = sum(len(seq) - n_prompt for seq, n_prompt in examples)
            total = 0.0
            for ids, labels in by_length(examples):
                logits = model(input_ids=ids).logits[:, :-1].float()
                # Summed over the group's response tokens, divided by the whole batch's count:
                # every target token weighs the same, whichever group it is in.
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
                ) / n_targets
                loss.backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            advance(bar, 1, "steps")
            done = step + 1
            if done % every == 0 or done == recipe.steps:
                console.print(f"{name} step {done}/{recipe.steps}  loss {total:.4f}  {time.monotonic() - start:.0f} s")
            if recipe.stop_at is not None and done > recipe.reading_steps and done % CHECK_EVERY == 0:
                model.eval()
                reached = accuracy(model, tokenizer, check_rows, recipe.stop_context)
                model.train()
                if reached >= recipe.stop_at:
                    with_ref = " with the reference" if recipe.stop_context == "reference" else ""
                    console.print(
                        f"{name}: stopped at step {done}: greedy accuracy {reached:.0%} on fresh training "
                        f"problems{with_ref} reached stop_at {recipe.stop_at:.0%}"
                    )
                    break
    model.eval()
    return done


# ---------------------------------------------------------------------------------------
# Evaluation: the pipeline's own prompts, generation and verifier


def accuracy(model, tokenizer, rows: list[dict], context: str) -> float:
    """Greedy accuracy on `rows`, checked by `--verifier exact`."""
    from stages.backends.hf import generate_hf
    from stages.backends.sampling import SamplingOptions
    from stages.models import eos_token_ids
    from stages.verifiers import check_one

    longest = max(len(r["answer"]) for r in rows) + 2  # characters are tokens; --pad labelled's answers are longer
    options = SamplingOptions(n=1, temperature=0.0, top_p=1.0, max_new_tokens=max(MAX_NEW_TOKENS, longest))
    prompts = encode_prompts(tokenizer, rows, context=context)
    samples = generate_hf(model, tokenizer, prompts, options, eos_ids=eos_token_ids(model, tokenizer), batch_size=256)
    right = [
        check_one("exact", tokenizer.decode(s[0].token_ids, skip_special_tokens=True), row).correct
        for s, row in zip(samples, rows)
    ]
    return sum(right) / len(right)


def held_out_accuracy(
    model, tokenizer, seed: int, per_digit: int = EVAL_PER_DIGIT, order: str = "lsb", pad: str = "fixed"
) -> dict[str, float]:
    """Greedy accuracy on held-out problems per digit count, on the retention skill, and on
    the hardest problems with the reference in the prompt (a model that reads the answer off
    the reference scores near 100 % there)."""
    groups: dict[str, tuple[list[dict], str]] = {}
    for d in task.DIGITS:
        pairs = task.distinct_pairs(random.Random(f"{seed}:eval:{d}"), d, per_digit, want_held_out=True)
        groups[f"add-{d}d"] = ([task.add_row(a, b, "", "", order, pad) for a, b in pairs], "none")
    xs = random.Random(f"{seed}:eval:{task.RETAIN_BENCHMARK}").sample(
        [x for x in range(10**task.WIDTH) if task.held_out_string(x)], per_digit
    )
    groups[task.RETAIN_BENCHMARK] = ([task.copy_row(x, "") for x in xs], "none")
    groups[f"add-{task.WIDTH}d+reference"] = (groups[f"add-{task.WIDTH}d"][0], "reference")
    return {name: accuracy(model, tokenizer, rows, context) for name, (rows, context) in groups.items()}


# ---------------------------------------------------------------------------------------
# One model, cached


def settings(recipe: Recipe, seed: int, tokenizer, order: str = "lsb", pad: str = "fixed") -> dict:
    """Everything that determines the model. The rendered prompts are included so that a
    change to the task's format or the pipeline's prompt template retrains, not reuses."""
    probe = [task.add_row(347, 89, "", "", order, pad), task.copy_row(347, "")]
    rendered = [encode_prompts(tokenizer, probe, context=c) for c in ("none", "reference")]
    record = {
        "recipe_version": RECIPE_VERSION,
        # Defaults of fields added later are left out, so models cached before them are still reused.
        "recipe": {k: v for k, v in asdict(recipe).items()
                   if not (k == "window" and v is None or k == "stop_context" and v == "none")},
        "seed": seed,
        "vocab_sha256": hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest(),
        "prompt_sha256": hashlib.sha256(json.dumps(rendered).encode()).hexdigest(),
    }
    return json.loads(json.dumps(record))  # as it reads back from the marker


def make_model(
    out: Path, name: str, recipe: Recipe, seed: int, tokenizer, eval_per_digit: int = EVAL_PER_DIGIT, order: str = "lsb",
    pad: str = "fixed",
) -> Path:
    """Train `name` into out/name unless a finished model with the same settings is there."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from stages.common import console

    hf_logging.disable_progress_bar()  # the console lines below say what happens
    final = out / name
    wanted = settings(recipe, seed, tokenizer, order, pad)
    marker = final / MARKER
    if marker.exists():
        if json.loads(marker.read_text()).get("settings") == wanted:
            console.print(f"{name}: reused the finished model in {final} (same settings)")
            return final
    elif final.exists():
        raise SystemExit(
            f"--out {out}: {final} exists but was not made by this script (no {MARKER}); "
            f"move it away or choose another --out"
        )
    partial = out / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    tiny_model.build(
        partial, arch="qwen2", hidden=recipe.hidden, layers=recipe.layers, heads=recipe.heads,
        seed=seed, max_positions=recipe.max_positions, tokenizer=tokenizer, sliding_window=recipe.window,
    )
    model = AutoModelForCausalLM.from_pretrained(partial, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    window = f", attention window {recipe.window} tokens" if recipe.window else ""
    console.print(f"{name}: {n_params / 1e6:.2f} M parameters{window}, up to {recipe.steps} steps of {recipe.batch_size}")
    start = time.monotonic()
    steps_run = train(model, tokenizer, recipe, seed, name, order, pad)
    seconds = time.monotonic() - start
    held_out = held_out_accuracy(model, tokenizer, seed, eval_per_digit, order, pad)
    console.print(
        f"{name}: {steps_run} steps in {seconds:.0f} s; greedy accuracy on held-out problems: "
        + "  ".join(f"{k} {v:.0%}" for k, v in held_out.items())
    )
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    record = {"settings": wanted, "steps_run": steps_run, "train_seconds": round(seconds, 1), "greedy_accuracy": held_out}
    (partial / MARKER).write_text(json.dumps(record, indent=2) + "\n")  # last: the model is complete
    if final.exists():
        shutil.rmtree(final)  # ours (it has a marker), made with other settings
    partial.rename(final)
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="writes OUT/teacher and OUT/student")
    ap.add_argument("--quick", action="store_true",
                    help=f"CI: the teacher trains {QUICK_STEPS} steps (a valid checkpoint, not a good teacher); the "
                         f"student stops at greedy accuracy {QUICK_STUDENT_STOP} (under a minute)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and training data")
    ap.add_argument("--teacher-steps", type=int, default=None, help=f"default {TEACHER.steps}")
    ap.add_argument("--teacher-reference-fraction", type=float, default=None,
                    help=f"share of the teacher's examples whose prompt carries the reference (default "
                         f"{TEACHER.reference_fraction}); a teacher used with --context reference, which reads the "
                         "answer off it (the paper's privileged-context teacher), learns that with 0.5")
    ap.add_argument("--teacher-stop-at", type=float, default=None,
                    help="stop the teacher once its greedy accuracy on fresh training problems with the reference in "
                         f"the prompt reaches this (checked every {CHECK_EVERY} steps; --teacher-steps is then the most "
                         "it trains): a teacher used with --context reference is ready when it reads the reference")
    ap.add_argument("--student-reference-fraction", type=float, default=None,
                    help=f"share of the student's examples whose prompt carries the reference (default "
                         f"{STUDENT.reference_fraction}, and every one in its first {STUDENT.reading_steps} steps); 0: it "
                         "never sees a reference, and trains about four times faster (a reference prompt is 188 tokens)")
    ap.add_argument("--student-steps", type=int, default=None,
                    help=f"at most: it stops at greedy accuracy {STUDENT.stop_at} (default {STUDENT.steps})")
    ap.add_argument("--student-seed", type=int, default=None,
                    help="the student's initialisation and data (default --seed); the teacher keeps --seed, so "
                         "students of several seeds share one cached teacher")
    for name, base in (("teacher", TEACHER), ("student", STUDENT)):
        ap.add_argument(f"--{name}-hidden", type=int, default=None, help=f"default {base.hidden}")
        ap.add_argument(f"--{name}-layers", type=int, default=None, help=f"default {base.layers}")
        ap.add_argument(f"--{name}-heads", type=int, default=None,
                        help=f"default {base.heads}; hidden / heads is the head dimension (vLLM's CPU attention needs >= 32)")
    ap.add_argument("--student-stop-at", type=float, default=None,
                    help=f"greedy accuracy at which the student stops (default {STUDENT.stop_at}); 0 trains all its steps")
    ap.add_argument("--order", choices=task.ORDERS, default="lsb",
                    help="how numbers are written (examples/task.py --order): both models train on that format")
    ap.add_argument("--pad", choices=task.PADS, default="fixed",
                    help="how wide operands are written (examples/task.py --pad): both models train on that format")
    ap.add_argument("--student-window", type=int, default=None,
                    help="the student attends to this many tokens per layer (the current one included; default: "
                         "all). With --pad problem, the sums it cannot see whole are out of its reach")
    ap.add_argument("--only", choices=("teacher", "student"), default=None,
                    help="train only this model (students of several seeds share one teacher trained once)")
    ap.add_argument("--threads", type=int, default=None, help=threads.HELP)
    args = ap.parse_args()
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: must be at least 1")

    def recipe(base: Recipe, given: int | None, flag: str) -> Recipe:
        steps = given if given is not None else base.steps
        if steps < 1:
            ap.error(f"{flag} {steps}: must be at least 1")
        return replace(base, steps=steps, reading_steps=min(base.reading_steps, steps // 2))

    teacher, student = TEACHER, STUDENT
    if args.quick:
        teacher = replace(TEACHER, steps=QUICK_STEPS)
        student = replace(STUDENT, reading_steps=0, stop_at=QUICK_STUDENT_STOP)
    def sized(base: Recipe, name: str) -> Recipe:
        """`base` with the --NAME-hidden/-layers/-heads (and the student's --student-window) given."""
        fields = ("hidden", "layers", "heads", "window") if name == "student" else ("hidden", "layers", "heads")
        size = {k: v for k in fields if (v := getattr(args, f"{name}_{k}")) is not None}
        for flag, v in size.items():
            least = 2 if flag == "window" else 1  # a window of 1 sees only the current token
            if v < least:
                ap.error(f"--{name}-{flag} {v}: must be at least {least}")
        out = replace(base, **size)
        if out.hidden % out.heads:
            ap.error(f"--{name}-hidden {out.hidden} is not a multiple of --{name}-heads {out.heads}")
        return out

    teacher, student = sized(teacher, "teacher"), sized(student, "student")
    if args.teacher_reference_fraction is not None:
        if not 0 <= args.teacher_reference_fraction <= 1:
            ap.error(f"--teacher-reference-fraction {args.teacher_reference_fraction}: must be from 0 to 1")
        teacher = replace(teacher, reference_fraction=args.teacher_reference_fraction)
    if args.teacher_stop_at is not None:
        if not 0 < args.teacher_stop_at <= 1:
            ap.error(f"--teacher-stop-at {args.teacher_stop_at}: must be above 0 and at most 1")
        teacher = replace(teacher, stop_at=args.teacher_stop_at, stop_context="reference")
    if args.student_reference_fraction is not None:
        if not 0 <= args.student_reference_fraction <= 1:
            ap.error(f"--student-reference-fraction {args.student_reference_fraction}: must be from 0 to 1")
        student = replace(student, reference_fraction=args.student_reference_fraction,
                          reading_steps=student.reading_steps if args.student_reference_fraction else 0)
    if args.student_stop_at is not None:
        if not 0 <= args.student_stop_at <= 1:
            ap.error(f"--student-stop-at {args.student_stop_at}: must be from 0 to 1")
        student = replace(student, stop_at=args.student_stop_at or None)
    recipes = {
        "teacher": recipe(teacher, args.teacher_steps, "--teacher-steps"),
        "student": recipe(student, args.student_steps, "--student-steps"),
    }
    seeds = {"teacher": args.seed, "student": args.seed if args.student_seed is None else args.student_seed}

    threads.configure(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    for name, r in recipes.items():
        if args.only not in (None, name):
            continue
        print(make_model(args.out, name, r, seeds[name], tokenizer, QUICK_EVAL if args.quick else EVAL_PER_DIGIT,
                         args.order, args.pad))


if __name__ == "__main__":
    main()
