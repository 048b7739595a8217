"""examples/prepare_data.py on files in each dataset's real layout, the real-model recipes end
to end on tiny models (BACKEND=hf), and bench/gpu_check.sh as a CPU dry run."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prepare_data  # examples/ is on sys.path (tests/conftest.py)
import schemas
from tests.conftest import ROOT, manifest_record, script_env

SUFFIX = prepare_data.SUFFIX
DAPO_WRAP = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)
RECIPES = ROOT / "examples" / "recipes"


# ---------------------------------------------------------------------------------------
# Fixture files, in the layouts of the hub datasets (see prepare_data.py's docstring)


def write_dapo(path, rows):
    """BytedTsinghua-SIA/DAPO-Math-17k: prompt is a chat list, the answer is in reward_model."""
    chat = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
    reward = pa.struct([("ground_truth", pa.string()), ("style", pa.string())])
    pq.write_table(pa.table({
        "data_source": pa.array(["math_dapo"] * len(rows)),
        "prompt": pa.array([[{"content": DAPO_WRAP.format(p), "role": "user"}] for p, _ in rows], type=chat),
        "ability": pa.array(["MATH"] * len(rows)),
        "reward_model": pa.array([{"ground_truth": a, "style": "rule-lighteval/MATH_v2"} for _, a in rows], type=reward),
        "extra_info": pa.array([{"index": f"idx-{i}"} for i in range(len(rows))], type=pa.struct([("index", pa.string())])),
    }), path)


DAPO_ROWS = [
    ("What is $2+3$?", "5"),
    ("Find $x$ if $2x = 10$.", "5"),
    ("What is  $2+3$? ", "5"),            # the same problem, other whitespace: a duplicate
    ("Compute $7 \\cdot 6$.", "42"),
    ("What is $2+3$?", "6"),              # a duplicate with a conflicting answer: the first wins
]

MATH500_ROWS = [
    {"problem": "Compute $\\sqrt{16}$.", "solution": "$\\sqrt{16} = \\boxed{4}$.", "answer": "4",
     "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "solution": "It is $\\boxed{\\frac{3}{4}}$.",
     "answer": "\\frac{3}{4}", "subject": "Prealgebra", "level": 2, "unique_id": "test/prealgebra/7.json"},
]

AIME24_ROWS = [
    {"id": 60, "problem": "Every morning Aya goes for a 9-kilometer-long walk ...", "solution": "... $\\boxed{204}$.",
     "answer": "204", "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1", "year": "2024"},
    {"id": 86, "problem": "Alice chooses a set $A$ of positive integers ...", "solution": "... $\\boxed{055}$.",
     "answer": "055", "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_II_Problems/Problem_6", "year": "2024"},
]

AIME25_I = [{"question": "Find the sum of all integer bases $b>9$ for which $17_b$ divides $97_b$.", "answer": "70"},
            {"question": "On $\\triangle ABC$ points $A, D, E$, and $B$ lie in that order ...", "answer": "588"}]
AIME25_II = [{"question": "Six points $A, B, C, D, E$, and $F$ lie in a straight line ...", "answer": "468"},
             {"question": "Find the sum of all positive integers $n$ such that $n+2$ divides ...", "answer": "49"}]

MMLU_ROWS = [
    {"question": "Find the degree for the given field extension Q(sqrt(2)) over Q.", "subject": "abstract_algebra",
     "choices": ["0", "2", "1", "3"], "answer": 1},
    {"question": "What is the capital of France?", "subject": "geography", "choices": ["Rome", "Oslo", "Bern", "Paris"],
     "answer": 3},
] + [
    {"question": f"Which number is {i}?", "subject": "elementary_mathematics",
     "choices": [str(i), str(i + 1), str(i + 2), str(i + 3)], "answer": 0}
    for i in range(10)
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_mmlu(path, rows):
    pq.write_table(pa.table({
        "question": [r["question"] for r in rows],
        "subject": [r["subject"] for r in rows],
        "choices": pa.array([r["choices"] for r in rows], type=pa.list_(pa.string())),
        "answer": pa.array([r["answer"] for r in rows], type=pa.int64()),  # a ClassLabel is int64 in Parquet
    }), path)


def write_raw(root):
    """One folder per dataset, each in the hub layout: what PREPARE_LOCAL and --local read."""
    for name in ("dapo", "math500", "aime2024", "aime2025", "mmlu"):
        (root / name).mkdir(parents=True, exist_ok=True)
    write_dapo(root / "dapo" / "dapo-math-17k.parquet", DAPO_ROWS)
    write_jsonl(root / "math500" / "test.jsonl", MATH500_ROWS)
    pq.write_table(pa.Table.from_pylist(AIME24_ROWS, schema=pa.schema([
        ("id", pa.int64()), ("problem", pa.string()), ("solution", pa.string()), ("answer", pa.string()),
        ("url", pa.string()), ("year", pa.string())])), root / "aime2024" / "train-00000-of-00001.parquet")
    write_jsonl(root / "aime2025" / "aime2025-I.jsonl", AIME25_I)
    write_jsonl(root / "aime2025" / "aime2025-II.jsonl", AIME25_II)
    write_mmlu(root / "mmlu" / "test.parquet", MMLU_ROWS)
    return root


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_raw(tmp_path_factory.mktemp("raw"))


def prepare(*args) -> int:
    """Run prepare_data in-process; its exit code (stdout and stderr: the caller's capsys)."""
    return prepare_data.main([str(a) for a in args])


def read(path) -> pl.DataFrame:
    return schemas.read(path, schemas.PROBLEMS, option="--problems").frame


# ---------------------------------------------------------------------------------------
# prepare_data.py


def test_dapo_nested_layout_dedup_and_suffix(raw, tmp_path, capsys):
    out = tmp_path / "dapo.parquet"
    assert prepare("dapo", "--local", raw / "dapo", "--out", out) == 0
    assert capsys.readouterr().out.strip() == str(out)
    f = read(out)
    assert f["prompt"].to_list() == [p + SUFFIX for p in ("What is $2+3$?", "Find $x$ if $2x = 10$.", "Compute $7 \\cdot 6$.")]
    assert f["answer"].to_list() == ["5", "5", "42"]
    assert f["reference"].null_count() == 3 and set(f["benchmark"]) == {"dapo"}
    assert f["source_id"].to_list() == ["idx-0", "idx-1", "idx-3"]
    assert all(re.fullmatch(r"dapo-[0-9a-f]{12}", i) for i in f["problem_id"])
    assert "Answer:" not in "".join(f["prompt"])  # DAPO's own answer-format instruction is gone
    # provenance: schema name and version, and how it was made
    meta = pq.read_schema(out).metadata
    assert meta[b"paced.schema"] == b"problems" and meta[b"paced.schema_version"] == b"1"
    assert json.loads(meta[b"paced.provenance"])["stage"] == "prepare_data"


def test_dapo_answer_as_reference(raw, tmp_path):
    out = tmp_path / "dapo.parquet"
    assert prepare("dapo", "--local", raw / "dapo" / "dapo-math-17k.parquet", "--out", out, "--answer-as-reference") == 0
    f = read(out)
    assert f["reference"].to_list() == ["The final answer is $\\boxed{5}$.", "The final answer is $\\boxed{5}$.",
                                        "The final answer is $\\boxed{42}$."]


def test_dapo_conflicting_duplicate_is_reported(raw, tmp_path, capsys):
    assert prepare("dapo", "--local", raw / "dapo", "--out", tmp_path / "d.parquet") == 0
    err = capsys.readouterr().err
    assert "read 5 rows" in err and "2 duplicate(s) dropped (1 with another answer" in err and "3 problems" in err


def test_math500(raw, tmp_path):
    out = tmp_path / "math500.parquet"
    assert prepare("math500", "--local", raw / "math500", "--out", out) == 0
    f = read(out)
    assert f["prompt"].to_list() == [r["problem"] + SUFFIX for r in MATH500_ROWS]
    assert f["answer"].to_list() == ["4", "\\frac{3}{4}"]
    assert f["reference"].to_list() == [r["solution"] for r in MATH500_ROWS]
    assert f["source_id"].to_list() == ["test/algebra/1.json", "test/prealgebra/7.json"]
    assert f["level"].to_list() == [1, 2] and f["subject"].to_list() == ["Algebra", "Prealgebra"]
    assert set(f["benchmark"]) == {"math500"}


def test_aime2024_integer_answers_and_solutions(raw, tmp_path):
    out = tmp_path / "aime2024.parquet"
    assert prepare("aime2024", "--local", raw / "aime2024", "--out", out) == 0
    f = read(out)
    assert f["answer"].to_list() == ["204", "55"]  # "055" as the verifier compares it
    assert f["reference"].to_list() == [r["solution"] for r in AIME24_ROWS]
    assert f["source_id"].to_list() == ["60", "86"]
    assert f["prompt"][0] == AIME24_ROWS[0]["problem"] + SUFFIX


def test_aime2024_maxwell_jia_layout(tmp_path):
    src = tmp_path / "aime_2024_problems.parquet"
    pl.DataFrame({"ID": ["2024-I-1"], "Problem": ["Every morning Aya ..."], "Solution": ["... 204"], "Answer": [204]}).write_parquet(src)
    assert prepare("aime2024", "--local", src, "--out", tmp_path / "a.parquet") == 0
    f = read(tmp_path / "a.parquet")
    assert f.row(0, named=True) | {"problem_id": None} == {
        "problem_id": None, "prompt": "Every morning Aya ..." + SUFFIX, "answer": "204", "reference": "... 204",
        "benchmark": "aime2024", "source": str(src), "source_id": "2024-I-1"}


def test_aime2025_two_files_no_solutions(raw, tmp_path):
    out = tmp_path / "aime2025.parquet"
    assert prepare("aime2025", "--local", raw / "aime2025", "--out", out) == 0
    f = read(out)
    assert f["answer"].to_list() == ["70", "588", "468", "49"]  # files in name order: I, then II
    assert f["prompt"].to_list() == [r["question"] + SUFFIX for r in AIME25_I + AIME25_II]
    assert f["reference"].null_count() == 4


def test_mmlu_letters_and_prompt(raw, tmp_path):
    out = tmp_path / "mmlu.parquet"
    assert prepare("mmlu", "--local", raw / "mmlu", "--out", out) == 0
    f = read(out)
    assert f.height == len(MMLU_ROWS)
    assert f["answer"][:2].to_list() == ["B", "D"]
    assert f["prompt"][1] == (
        "What is the capital of France?\n\nA. Rome\nB. Oslo\nC. Bern\nD. Paris\n\n"
        "Answer with the letter of the correct choice." + SUFFIX
    )
    assert f["subject"][0] == "abstract_algebra" and set(f["benchmark"]) == {"mmlu"}
    # the math verifier (paced score's default) accepts the boxed letter
    from stages.verifiers import check_one

    assert check_one("math", "... so the answer is \\boxed{D}.", {"answer": "D"}).correct
    assert not check_one("math", "\\boxed{A}", {"answer": "D"}).correct


def test_ids_do_not_depend_on_row_order(raw, tmp_path):
    rows = list(MMLU_ROWS)
    random.Random(3).shuffle(rows)
    write_mmlu(tmp_path / "shuffled.parquet", rows)
    assert prepare("mmlu", "--local", raw / "mmlu", "--out", tmp_path / "a.parquet") == 0
    assert prepare("mmlu", "--local", tmp_path / "shuffled.parquet", "--out", tmp_path / "b.parquet") == 0
    a, b = (read(tmp_path / n).select("problem_id", "prompt", "answer").sort("problem_id") for n in ("a.parquet", "b.parquet"))
    assert a.equals(b)


def test_limit_is_a_seeded_subset(raw, tmp_path):
    rows = list(MMLU_ROWS)
    random.Random(5).shuffle(rows)
    write_mmlu(tmp_path / "shuffled.parquet", rows)
    ids = {}
    for name, src, seed in (("a", raw / "mmlu", 0), ("b", tmp_path / "shuffled.parquet", 0), ("c", raw / "mmlu", 1)):
        assert prepare("mmlu", "--local", src, "--out", tmp_path / f"{name}.parquet", "--limit", 4, "--seed", seed) == 0
        ids[name] = set(read(tmp_path / f"{name}.parquet")["problem_id"])
    assert len(ids["a"]) == 4
    assert ids["a"] == ids["b"]  # the same subset whatever the row order
    assert ids["a"] != ids["c"]  # another seed, another subset


def test_missing_columns_exit_2(raw, tmp_path):
    bad = tmp_path / "no_answer.jsonl"
    write_jsonl(bad, [{"problem": "What is 1 + 1?", "solution": "2"}])
    r = subprocess.run([sys.executable, "examples/prepare_data.py", "math500", "--local", str(bad), "--out", str(tmp_path / "o.parquet")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert str(bad) in r.stderr and "'answer'" in r.stderr and "HuggingFaceH4/MATH-500" in r.stderr
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("dataset, frame, column", [
    ("dapo", pl.DataFrame({"prompt": ["What is 1 + 1?"], "answer": ["2"]}), "'reward_model'"),
    ("mmlu", pl.DataFrame({"question": ["Q?"], "answer": [0]}), "'choices'"),
    ("aime2025", pl.DataFrame({"question": ["Q?"], "solution": ["..."]}), "'answer'"),
])
def test_missing_columns_name_the_column(tmp_path, capsys, dataset, frame, column):
    frame.write_parquet(tmp_path / "bad.parquet")
    assert prepare(dataset, "--local", tmp_path / "bad.parquet", "--out", tmp_path / "o.parquet") == 2
    err = capsys.readouterr().err
    assert column in err and str(tmp_path / "bad.parquet") in err and "the file has:" in err


def test_refuses_to_replace_a_file_that_is_not_a_problems_file(raw, tmp_path, capsys):
    other = tmp_path / "precious.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(other)
    assert prepare("math500", "--local", raw / "math500", "--out", other) == 2
    assert "paced never replaces a file it did not write" in capsys.readouterr().err
    assert pl.read_parquet(other).columns == ["x"]


def test_without_datasets_it_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    assert prepare("math500", "--out", tmp_path / "o.parquet") == 2
    err = capsys.readouterr().err
    assert "pip install datasets" in err and "--local" in err


def test_hub_path_through_datasets_load_dataset(raw, tmp_path):
    """Without --local the file goes through datasets.load_dataset (here a local folder, offline)."""
    pytest.importorskip("datasets")
    hub = tmp_path / "hub"
    hub.mkdir()
    write_mmlu(hub / "test.parquet", MMLU_ROWS[:3])
    env = os.environ | {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "examples/prepare_data.py", "mmlu", "--hf-name", str(hub), "--out", str(tmp_path / "m.parquet")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    f = read(tmp_path / "m.parquet")
    assert f["answer"].to_list() == ["B", "D", "A"] and set(f["source"]) == {str(hub)}


# ---------------------------------------------------------------------------------------
# The recipes use only options the CLI has


def cli_options() -> dict[str, set[str]]:
    import typer

    from paced_cli import app

    group = typer.main.get_command(app)
    return {name: {o for p in cmd.params for o in p.opts + p.secondary_opts} for name, cmd in group.commands.items()}


def _vllm_flags() -> set[str]:
    from stages.backends import vllm

    return {f"--{name.replace('_', '-')}" for name in vllm.OPTIONS}


VLLM_OPTIONS = _vllm_flags()


@pytest.mark.parametrize("recipe", ["distill_qwen3.sh", "self_distill_math.sh", "common.sh"])
def test_recipe_uses_real_commands_and_options(recipe):
    text = "\n".join(line for line in (RECIPES / recipe).read_text().splitlines() if not line.lstrip().startswith("#"))
    commands = set(re.findall(r"\bpaced ([a-z-]+)", text))
    options = cli_options()
    assert commands and commands <= set(options), commands - set(options)
    known = set().union(*options.values())
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))
    prepare_opts = {"--out", "--local", "--limit", "--seed", "--answer-as-reference"}
    unknown = used - known - prepare_opts
    assert unknown <= VLLM_OPTIONS, f"{recipe} uses options no paced command has: {sorted(unknown - VLLM_OPTIONS)}"
    # the vLLM backend's options: required once the CLI has them (another change adds them)
    if unknown:
        pytest.skip(f"the CLI has no {sorted(unknown)} yet (the vLLM backend adds them)")
    for cmd in ("rollout", "eval"):
        assert VLLM_OPTIONS <= options[cmd], (cmd, VLLM_OPTIONS - options[cmd])


@pytest.mark.parametrize("recipe", ["distill_qwen3.sh", "self_distill_math.sh"])
def test_recipe_header_states_hardware(recipe):
    header = (RECIPES / recipe).read_text().split("set -euo pipefail")[0]
    for word in ("GPUs", "Memory", "Time", "Backend", "BACKEND=vllm", "BACKEND=hf"):
        assert word in header, (recipe, word)
    text = (RECIPES / recipe).read_text()
    assert ". examples/recipes/common.sh" in text and "BACKEND=${BACKEND:-vllm}" in (RECIPES / "common.sh").read_text()


# ---------------------------------------------------------------------------------------
# The recipes end to end on tiny models


def run_recipe(name, work, **env) -> subprocess.CompletedProcess:
    e = script_env(WORK=work, PACED_NO_PROGRESS=1, **env)
    return subprocess.run(["bash", str(RECIPES / name)], cwd=ROOT, env=e, capture_output=True, text=True, timeout=1800)


def tiny_env(tmp_path) -> dict:
    # Random tiny models solve nothing; a deterministic coin-flip verifier gives the spread of
    # pass rates that Paced weights need (as in tests/test_examples.py). Evaluation keeps math.
    (tmp_path / "coin.py").write_text("import zlib\ndef check(c, p):\n    return zlib.crc32(c.encode()) % 2 == 0\n")
    return {"BACKEND": "hf", "PREPARE_LOCAL": write_raw(tmp_path / "raw"), "K": 4, "MAX_NEW_TOKENS": 8, "BATCH": 2,
            "EVAL_SAMPLES": 1, "EVAL_MAX_NEW_TOKENS": 8, "MMLU_LIMIT": 3, "WORKERS": 1, "VERIFIER": "coin:check",
            "PYTHONPATH": tmp_path}


def provenance(path) -> dict:
    return manifest_record(path)["provenance"]


def check_evals(work, names):
    base = None
    for name in names:
        s = pl.read_parquet(work / "eval" / name / "summary.parquet").sort("benchmark")
        assert s["benchmark"].to_list() == ["aime2024", "aime2025", "math500", "mmlu"]
        assert s["problems"].to_list() == [2, 4, 2, 3]
        assert s.filter(pl.col("retain"))["benchmark"].to_list() == ["mmlu"]
        if base is None:
            base = s
        else:
            assert s["baseline_accuracy"].to_list() == base["accuracy_mean"].to_list()


@pytest.mark.slow
def test_distill_qwen3_recipe_end_to_end(tmp_path, student_dir, teacher_dir):
    work = tmp_path / "work"
    r = run_recipe("distill_qwen3.sh", work, STUDENT=student_dir, TEACHER=teacher_dir, **tiny_env(tmp_path))
    assert r.returncode == 0, r.stderr[-4000:]
    s1, s2 = work / "stage1" / "student", work / "stage2" / "student"
    assert r.stdout.strip().splitlines()[-1] == str(s2)
    # the problems files were made by prepare_data from the raw layouts
    train = read(work / "data" / "dapo.parquet")
    assert train.height == 3 and train["prompt"][0].endswith(SUFFIX)
    # stage 1: forward KL, the paper's hyperparameters; stage 2: reverse KL from stage 1
    p1, p2 = provenance(s1)["options"], provenance(s2)["options"]
    assert p1["loss"] == "fkl" and p2["loss"] == "rkl" and p2["init"] == str(s1)
    for p in (p1, p2):
        assert (p["lr"], p["weight_decay"], p["max_grad_norm"], p["gradient_checkpointing"]) == (1e-6, 0.1, 1.0, True)
    # pass rates measured twice: the base student, then the stage-1 student (re-estimated)
    for stage, model in (("stage1", student_dir), ("stage2", s1)):
        ro = provenance(work / stage / "student_rollouts")["options"]
        assert (ro["samples"], ro["temperature"], ro["model"]) == (4, 1.0, str(model))
        assert ro["chat_template_kwargs"] == '{"enable_thinking":true}'  # THINKING=1, recorded
        w = pl.read_parquet(work / stage / "weights.parquet")
        assert w.height == 3 and (w["weight"] > 0).any()
    assert provenance(work / "stage1" / "teacher_rollouts")["options"]["model"] == str(teacher_dir)
    assert provenance(work / "stage2" / "onpolicy_rollouts")["options"]["model"] == str(s1)
    check_evals(work, ["base", "stage1", "stage2"])
    ev = provenance(work / "eval" / "stage2" / "results")["options"]
    assert (ev["temperature"], ev["top_p"], ev["top_k"]) == (0.6, 0.8, 20)
    assert ev["chat_template_kwargs"] == '{"enable_thinking":true}'
    assert "| mmlu (retention) | 3 |" in r.stdout and "| base student | Paced FKL | Paced FKL -> RKL |" in r.stdout


@pytest.mark.slow
def test_self_distill_math_recipe_end_to_end(tmp_path, student_dir):
    work = tmp_path / "work"
    r = run_recipe("self_distill_math.sh", work, MODEL=student_dir, LORA_R=4, **tiny_env(tmp_path))
    assert r.returncode == 0, r.stderr[-4000:]
    final = work / "round1" / "student"
    assert r.stdout.strip().splitlines()[-1] == str(final)
    assert (final / "model.safetensors").exists()
    train = read(work / "data" / "dapo-answer-ref.parquet")
    assert train["reference"].to_list()[0] == "The final answer is $\\boxed{5}$."
    tl = provenance(work / "round1" / "teacher_logits")["options"]
    assert tl["context"] == "reference" and tl["teacher"] == str(student_dir)  # its own teacher
    d = provenance(final)["options"]
    assert (d["loss"], d["lora_r"], d["lr"], d["student"]) == ("rkl", 4, 1e-5, str(student_dir))
    # on-policy: the sequences are the student's own responses
    assert provenance(work / "round1" / "onpolicy_rollouts")["options"]["model"] == str(student_dir)
    check_evals(work, ["base", "paced_rkl"])
    assert "| base | Paced RKL |" in r.stdout


# ---------------------------------------------------------------------------------------
# bench/gpu_check.sh


def test_gpu_check_cpu_dry_run(tmp_path):
    env = script_env(DEVICE="cpu", WORK=tmp_path / "g", PACED_NO_PROGRESS=1, N=4, MAX_NEW_TOKENS=8)
    r = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = r.stdout.splitlines()
    for stage in ("rollout", "teacher-logits", "distill"):
        line = next(x for x in lines if x.startswith(f"{stage}: "))
        m = re.search(r"([\d,]+) [a-z ]*tokens in ([\d.]+) s = ([\d,]+) tokens/s", line)
        assert m and int(m.group(1).replace(",", "")) > 0 and float(m.group(2)) > 0, line
    rollouts = pl.read_parquet(sorted((tmp_path / "g" / "rollouts").rglob("part-*.parquet")))
    generated = int(rollouts["completion_token_ids"].list.len().sum())
    assert f"rollout: {generated:,} generated tokens" in r.stdout
    log = pl.read_parquet(tmp_path / "g" / "distilled" / "train_log.parquet")
    assert f"distill: {int(log['tokens'].sum()):,} trained tokens" in r.stdout
    assert "device cpu, dtype float32" in r.stderr


def test_gpu_check_without_cuda_says_so(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = script_env(WORK=tmp_path / "g")
    r = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "DEVICE=cpu" in r.stderr and "torch.cuda.is_available() is False" in r.stderr
    assert not (tmp_path / "g").exists()
