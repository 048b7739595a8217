"""The quickstart's synthetic task (examples/task.py) and tiny pretraining (examples/train_tiny.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import polars as pl
import pytest

import schemas
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "examples"))

import task  # noqa: E402

SMALL = dict(train=600, test_per_digit=40, retain=50)
ADD = re.compile(r"^(\d{5})\+(\d{5})=$")
COPY = re.compile(r"^copy (\d{5})=$")


@pytest.fixture(scope="module")
def splits() -> dict[str, pl.DataFrame]:
    return task.make_splits(seed=0, **SMALL)


def test_deterministic_for_a_seed_and_different_for_another(splits):
    again = task.make_splits(seed=0, **SMALL)
    for name in splits:
        assert splits[name].equals(again[name]), name
    other = task.make_splits(seed=1, **SMALL)
    assert not splits["train"]["prompt"].equals(other["train"]["prompt"])
    assert not splits["test"]["prompt"].equals(other["test"]["prompt"])


def _expected(prompt: str) -> tuple[str, int]:
    """The answer and digit count recomputed from the prompt by integer arithmetic."""
    if m := ADD.match(prompt):
        a, b = int(m[1][::-1]), int(m[2][::-1])  # little-endian operands
        return str(a + b).zfill(6)[::-1], max(len(str(a)), len(str(b)))
    m = COPY.match(prompt)
    assert m, f"unexpected prompt {prompt!r}"
    return m[1], 5


def test_every_answer_and_reference_is_right(splits):
    for name, frame in splits.items():
        for row in frame.iter_rows(named=True):
            answer, digits = _expected(row["prompt"])
            assert row["answer"] == answer, row
            assert row["digits"] == digits, row
            assert row["problem_id"].startswith(f"{name}-") and f"-{digits}d-" in row["problem_id"], row
            # The answer alone on the reference's last line: the exact verifier reads that.
            work, last = row["reference"].rsplit("\n", 1)
            assert last == answer, row


def test_addition_reference_work_is_consistent(splits):
    for row in splits["test"].iter_rows(named=True):
        a, b = (int(x[::-1]) for x in ADD.match(row["prompt"]).groups())
        carry, digits = 0, []
        for step, (x, y) in zip(row["reference"].split("\n")[0].split(" "), zip(f"{a:05d}"[::-1], f"{b:05d}"[::-1])):
            assert step == f"{x}+{y}+{carry}={int(x) + int(y) + carry:02d}", (row, step)
            carry = (int(x) + int(y) + carry) // 10
            digits.append(step[-1])
        assert "".join(digits) + str(carry) == row["answer"]



def test_msb_order_writes_the_same_problems_the_usual_way_round(splits):
    """--order msb: operands and answer most significant digit first, the answer right by
    integer arithmetic, the reference's last line that answer; the same problems as lsb."""
    msb = task.make_splits(seed=0, order="msb", **SMALL)
    for name, frame in msb.items():
        lsb = splits[name]
        assert frame["problem_id"].equals(lsb["problem_id"]) and frame["digits"].equals(lsb["digits"])
        for row, old in zip(frame.iter_rows(named=True), lsb.iter_rows(named=True)):
            if row["benchmark"] == task.RETAIN_BENCHMARK:
                assert row == old  # copying does not change
                continue
            a, b = (int(x) for x in ADD.match(row["prompt"]).groups())  # the usual way round
            assert row["prompt"] == f"{a:05d}+{b:05d}=" and row["answer"] == f"{a + b:06d}", row
            assert old["prompt"] == f"{a:05d}"[::-1] + "+" + f"{b:05d}"[::-1] + "=", (row, old)
            assert row["answer"] == old["answer"][::-1]
            work, last = row["reference"].rsplit("\n", 1)
            assert last == row["answer"] and work == old["reference"].rsplit("\n", 1)[0], row
    assert task.add_row(347, 89, "", "", "msb")["answer"] == "000436"
    assert task.add_row(99999, 1, "", "", "msb")["answer"] == "100000"
    with pytest.raises(ValueError):
        task.make_splits(seed=0, order="middle", **SMALL)


@pytest.mark.parametrize("order", ("lsb", "msb"))
def test_pad_problem_writes_each_sum_as_wide_as_its_digits(splits, order):
    """--pad problem: the same problems, each operand zero-padded to the problem's digit count d,
    the answer to d + 1 digits (right by integer arithmetic), the reference one column per digit."""
    wide = task.make_splits(seed=0, order=order, **SMALL)
    narrow = task.make_splits(seed=0, order=order, pad="problem", **SMALL)
    lengths = {}
    for name, frame in narrow.items():
        assert frame["problem_id"].equals(wide[name]["problem_id"]) and frame["digits"].equals(wide[name]["digits"])
        for row, old in zip(frame.iter_rows(named=True), wide[name].iter_rows(named=True)):
            if row["benchmark"] == task.RETAIN_BENCHMARK:
                assert row == old
                continue
            d = row["digits"]
            x, y = row["prompt"][:-1].split("+")
            a, b = (int(v if order == "msb" else v[::-1]) for v in (x, y))
            assert len(x) == len(y) == d and max(len(str(a)), len(str(b))) == d, row
            want = f"{a + b:0{d + 1}d}"
            assert row["answer"] == (want if order == "msb" else want[::-1]), row
            work, last = row["reference"].rsplit("\n", 1)
            assert last == row["answer"] and len(work.split()) == d, row
            lengths.setdefault(d, set()).add(len(row["prompt"]))
    assert {d: min(v) for d, v in lengths.items()} == {d: 2 * d + 2 for d in task.DIGITS}
    assert task.add_row(347, 89, "", "", "lsb", "problem")["prompt"] == "743+980="
    assert task.add_row(347, 89, "", "", "msb", "problem")["answer"] == "0436"
    assert task.add_row(3, 4, "", "", "msb", "problem")["prompt"] == "3+4="
    with pytest.raises(ValueError):
        task.make_splits(seed=0, pad="wide", **SMALL)


@pytest.mark.parametrize("order", ("lsb", "msb"))
def test_pad_labelled_puts_each_digit_after_its_column_letter(order):
    """--pad labelled: --pad problem's digits, each after its column's letter (A the units)."""
    labelled = task.make_splits(seed=0, order=order, pad="labelled", **SMALL)
    plain = task.make_splits(seed=0, order=order, pad="problem", **SMALL)
    for name, frame in labelled.items():
        for row, old in zip(frame.iter_rows(named=True), plain[name].iter_rows(named=True)):
            if row["benchmark"] == task.RETAIN_BENCHMARK:
                assert row == old
                continue
            for key in ("prompt", "answer"):
                text = row[key].rstrip("=")
                for part, old_part in zip(text.split("+"), old[key].rstrip("=").split("+")):
                    letters = task.COLUMNS[: len(old_part)]
                    assert part[0::2] == (letters if order == "lsb" else letters[::-1]) and part[1::2] == old_part, row
            assert row["reference"].rsplit("\n", 1) == [old["reference"].rsplit("\n", 1)[0], row["answer"]]
    assert task.add_row(347, 89, "", "", "lsb", "labelled")["prompt"] == "A7B4C3+A9B8C0="
    assert task.add_row(347, 89, "", "", "lsb", "labelled")["answer"] == "A6B3C4D0"
    assert task.add_row(347, 89, "", "", "msb", "labelled")["answer"] == "D0C4B3A6"


def test_answer_lsb_writes_operands_the_usual_way_and_the_answer_units_first(splits):
    """--order answer-lsb: the msb prompt, the lsb answer (the reference's last line), the same problems."""
    mixed = task.make_splits(seed=0, order="answer-lsb", **SMALL)
    msb = task.make_splits(seed=0, order="msb", **SMALL)
    for name, frame in mixed.items():
        for row, up, down in zip(frame.iter_rows(named=True), msb[name].iter_rows(named=True), splits[name].iter_rows(named=True)):
            assert (row["problem_id"], row["prompt"]) == (up["problem_id"], up["prompt"])
            assert row["answer"] == down["answer"] and row["reference"].rsplit("\n", 1)[1] == row["answer"], row
    assert task.add_row(347, 89, "", "", "answer-lsb") == {**task.add_row(347, 89, "", "", "msb"), "answer": "634000",
                                                           "reference": task.add_reference(347, 89) }
    assert task.add_row(347, 89, "", "", "answer-lsb", "problem")["prompt"] == "347+089="


def test_answer_lsb_puts_higher_answer_digits_further_from_their_operand_digits(tmp_path):
    """In `answer-lsb`, answer digit i is predicted 7 + 2i tokens after the first operand's digit i:
    a 2-layer student with a 7-token window (reach 12) sees it for i <= 2 and not for i = 3."""
    import torch
    from transformers import AutoModelForCausalLM

    import train_tiny
    from stages.prompts import encode_prompts

    tok = train_tiny.build_tokenizer()
    path = train_tiny.tiny_model.build(tmp_path / "s", hidden=32, layers=2, heads=2, seed=0, tokenizer=tok, sliding_window=7)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def digit_logits(a, b, i):  # the logits that predict answer digit i, after the right digits 0..i-1
        row = task.add_row(a, b, "", "", "answer-lsb")
        ids = encode_prompts(tok, [row], context="none")[0] + tok(row["answer"][:i], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1]

    assert torch.equal(digit_logits(1347, 2089, 3), digit_logits(9347, 2089, 3))  # a_3, 13 back: out of reach
    assert not torch.allclose(digit_logits(1347, 2089, 2), digit_logits(1947, 2089, 2))  # a_2, 11 back: in reach


def test_window_student_cannot_see_sums_beyond_its_reach(tmp_path):
    """A 2-layer student with a 5-token window (train_tiny --student-window 5) reaches 8 tokens
    back: on a 4-digit --pad problem sum its first answer digit does not depend on the first
    operand's leading digit (9 tokens back) at all, on a 3-digit one it can (7 back); and the
    pipeline's generation (paced rollout's hf backend) keeps the window."""
    import torch
    from transformers import AutoModelForCausalLM

    import train_tiny
    from stages.backends.hf import generate_hf
    from stages.backends.sampling import SamplingOptions
    from stages.prompts import encode_prompts

    tok = train_tiny.build_tokenizer()
    path = train_tiny.tiny_model.build(tmp_path / "s", hidden=32, layers=2, heads=2, seed=0, tokenizer=tok, sliding_window=5)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def first_digit_logits(a, b):
        ids = encode_prompts(tok, [task.add_row(a, b, "", "", "msb", "problem")], context="none")[0]
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1]

    assert torch.equal(first_digit_logits(4347, 1089), first_digit_logits(9347, 1089))  # 4 digits: out of reach
    assert not torch.allclose(first_digit_logits(347, 189), first_digit_logits(947, 189))  # 3 digits: in reach
    # --pad labelled, lsb: the units digit of the answer is predicted from the answer's `A`, 4d + 1 tokens
    # after the first operand's units digit; a 9-token window in 2 layers reaches 16.
    path9 = train_tiny.tiny_model.build(tmp_path / "s9", hidden=32, layers=2, heads=2, seed=0, tokenizer=tok, sliding_window=9)
    model9 = AutoModelForCausalLM.from_pretrained(path9, dtype=torch.float32).eval()

    def units_logits(a, b):
        ids = encode_prompts(tok, [task.add_row(a, b, "", "", "lsb", "labelled")], context="none")[0]
        ids = ids + tok("A", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return model9(torch.tensor([ids])).logits[0, -1]

    assert torch.equal(units_logits(4341, 1089), units_logits(4349, 1089))
    assert not torch.allclose(units_logits(341, 189), units_logits(349, 189))
    rows = [task.add_row(a, b, "", "", "msb", "problem") for a, b in ((4347, 1089), (12, 7), (99999, 1))]
    prompts = encode_prompts(tok, rows, context="none")
    options = SamplingOptions(n=1, temperature=0.0, top_p=1.0, max_new_tokens=6)
    out = generate_hf(model, tok, prompts, options, eos_ids=[], batch_size=3)
    for p, s in zip(prompts, out):
        seq = list(p)
        with torch.no_grad():
            for _ in range(6):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        assert list(s[0].token_ids) == seq[len(p):]


def test_default_order_is_lsb(splits):
    lsb = task.make_splits(seed=0, order="lsb", **SMALL)
    for name in splits:
        assert splits[name].equals(lsb[name]), name
    assert task.add_row(347, 89, "", "")["prompt"] == "74300+98000="


def test_splits_are_disjoint_and_sized(splits):
    train, test, retain = splits["train"], splits["test"], splits["retain"]
    assert train.height == SMALL["train"] and retain.height == SMALL["retain"]
    prompts = [set(f["prompt"]) for f in (train, test, retain)]
    assert sum(len(p) for p in prompts) == len(set().union(*prompts)), "a prompt is in two splits"
    for f in (train, test, retain):
        assert f["prompt"].is_unique().all() and f["problem_id"].is_unique().all()
    # Test and retain come from the held-out region, train from the rest: pretraining
    # (task.fresh_pair / fresh_string) can never produce a test or retain problem.
    for row in test.iter_rows(named=True):
        assert task.held_out_pair(*(int(x[::-1]) for x in ADD.match(row["prompt"]).groups()))
    for row in train.iter_rows(named=True):
        assert not task.held_out_pair(*(int(x[::-1]) for x in ADD.match(row["prompt"]).groups()))
    assert all(task.held_out_string(int(COPY.match(p)[1])) for p in retain["prompt"])
    counts = dict(test.group_by("benchmark").len().iter_rows())
    assert counts == {"add-1d": counts["add-1d"], **{f"add-{d}d": 40 for d in range(2, 6)}}
    assert 15 <= counts["add-1d"] <= 40  # about a quarter of the 100 one-digit pairs is held out
    assert set(train["digits"]) == {1, 2, 3, 4, 5} and set(retain["benchmark"]) == {"copy"}


def test_fresh_problems_avoid_the_held_out_region():
    import random

    rng = random.Random(0)
    for d in task.DIGITS:
        for _ in range(200):
            a, b = task.fresh_pair(rng, d)
            assert task.digits_of(a, b) == d and not task.held_out_pair(a, b)
    assert not any(task.held_out_string(task.fresh_string(rng)) for _ in range(500))


def test_cli_writes_valid_problems_files(tmp_path):
    out = tmp_path / "data"
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "task.py"), "--out", out, "--seed", "3",
         "--train", "300", "--test-per-digit", "20", "--retain", "30"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(out / f"{n}.parquet") for n in ("train", "test", "retain")]
    for name, n in (("train", 300), ("retain", 30)):
        art = schemas.read(out / f"{name}.parquet", schemas.PROBLEMS, option="--problems")
        assert art.frame.height == n and {"digits", "benchmark"} <= set(art.frame.columns)
    schemas.read(out / "test.parquet", schemas.PROBLEMS, option="--problems")
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "task.py"), "--out", out, "--train", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--train" in bad.stderr


@pytest.mark.parametrize("script", ["task.py", "train_tiny.py"])
def test_help(script):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--out" in r.stdout, r.stderr


def test_exact_verifier_accepts_the_answer_and_the_reference(splits):
    from stages.verifiers import check_one

    row = splits["test"].row(0, named=True)
    assert check_one("exact", row["answer"], row).correct
    assert check_one("exact", row["reference"], row).correct
    assert not check_one("exact", row["answer"][:-1] + "9" * (row["answer"][-1] != "9"), row).correct


# ---------------------------------------------------------------------------------------
# train_tiny --quick


from tests.conftest import train_tiny_quick as _train  # noqa: E402


def test_quick_training_writes_loadable_checkpoints(quick_models):
    from transformers import AutoModelForCausalLM

    from stages import models
    from stages.prompts import encode_prompts

    out, r = quick_models
    assert r.stdout.split() == [str(out / "teacher"), str(out / "student")]
    sigs = []
    for name in ("teacher", "student"):
        d = out / name
        models.check_model(str(d), "--model")
        assert (d / "model.safetensors").exists() and not (out / f".{name}.partial").exists()
        record = json.loads((d / "train_config.json").read_text())
        recipe = record["settings"]["recipe"]
        if name == "teacher":
            assert recipe["steps"] == 12 and 1 <= record["steps_run"] <= 12
        else:  # stops at a fixed competence: it adds a little, and copies
            assert recipe["stop_at"] == 0.3 and recipe["reading_steps"] == 0
            assert record["steps_run"] < recipe["steps"]
            assert record["greedy_accuracy"]["add-1d"] >= 0.3
        model = models.load_model(str(d), device="cpu")
        tok = models.load_tokenizer(str(d))
        assert models.eos_token_ids(model, tok) == [tok.eos_token_id]
        assert getattr(tok, "chat_template", None) is None  # raw prompts
        # Character level: every digit is one token, and text round-trips.
        ids = encode_prompts(tok, [{"prompt": "74300+98000=", "reference": None}])[0]
        assert len(ids) == 12 and tok.decode(ids) == "74300+98000="
        assert AutoModelForCausalLM.from_pretrained(d).config.max_position_embeddings >= 256
        sigs.append(models.tokenizer_signature(tok))
    models.check_same_tokenizer(*sigs, "teacher", "student")
    teacher = json.loads((out / "teacher" / "config.json").read_text())
    student = json.loads((out / "student" / "config.json").read_text())
    assert teacher["num_hidden_layers"] > student["num_hidden_layers"]
    for cfg in (teacher, student):
        assert cfg["hidden_size"] // cfg["num_attention_heads"] >= 32  # vLLM's CPU attention


def test_quick_training_is_reused_on_rerun(quick_models, tmp_path):
    import shutil

    out = tmp_path / "models"  # a copy: the session's models stay as they are for other tests
    shutil.copytree(quick_models[0], out)
    before = (out / "student" / "model.safetensors").stat().st_mtime_ns
    r = _train(out)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("reused the finished model") == 2
    assert (out / "student" / "model.safetensors").stat().st_mtime_ns == before
    # Other settings: retrained (the student only), never mixed with the cached one.
    r = _train(out, "--student-steps", "3")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("reused the finished model") == 1
    record = json.loads((out / "student" / "train_config.json").read_text())
    assert record["settings"]["recipe"]["steps"] == 3


def test_student_size_seed_and_stop_options(quick_models, tmp_path):
    """--student-hidden/-layers/-heads/-seed/-stop-at change the student only: the cached
    teacher is reused, the student is built and trained as asked."""
    import shutil

    out = tmp_path / "models"
    shutil.copytree(quick_models[0], out)
    assert "window" not in json.loads((out / "student" / "train_config.json").read_text())["settings"]["recipe"]
    r = _train(out, "--student-hidden", "64", "--student-layers", "1", "--student-heads", "1", "--student-window", "5",
               "--student-seed", "3", "--student-stop-at", "0", "--student-steps", "3", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("reused the finished model") == 1  # the teacher
    cfg = json.loads((out / "student" / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (64, 1, 1)
    assert (cfg["sliding_window"], cfg["layer_types"]) == (5, ["sliding_attention"])
    record = json.loads((out / "student" / "train_config.json").read_text())
    assert record["settings"]["seed"] == 3 and record["settings"]["recipe"]["stop_at"] is None
    assert record["settings"]["recipe"]["window"] == 5
    assert record["steps_run"] == 3
    teacher = json.loads((out / "teacher" / "train_config.json").read_text())
    assert teacher["settings"]["seed"] == 0
    # --teacher-reference-fraction is the teacher's: with --only student it changes nothing.
    r = _train(out, "--only", "student", "--teacher-reference-fraction", "0.5", "--student-hidden", "64", "--student-layers",
               "1", "--student-heads", "1", "--student-window", "5", "--student-seed", "3", "--student-stop-at", "0",
               "--student-steps", "3", "--threads", "1")
    assert r.returncode == 0 and r.stderr.count("reused the finished model") == 1, r.stderr
    r = _train(tmp_path / "privileged", "--only", "teacher", "--teacher-reference-fraction", "0.5", "--threads", "1")
    assert r.returncode == 0, r.stderr
    recipe = json.loads((tmp_path / "privileged" / "teacher" / "train_config.json").read_text())["settings"]["recipe"]
    assert recipe["reference_fraction"] == 0.5


@pytest.mark.parametrize("args", [["--student-hidden", "64", "--student-heads", "3"], ["--student-stop-at", "1.5"],
                                  ["--student-layers", "0"], ["--student-window", "1"], ["--threads", "0"],
                                  ["--teacher-reference-fraction", "-0.1"]])
def test_student_options_refuse_bad_values(args, tmp_path):
    r = _train(tmp_path / "models", *args)
    assert r.returncode == 2 and "error:" in r.stderr and not (tmp_path / "models").exists()


def test_train_tiny_order_changes_the_data_and_the_cache_key():
    """--order msb: pretraining samples and the cached model's settings follow the format;
    lsb (the default) keeps today's settings, so existing cached models are reused."""
    import random

    import train_tiny

    tok = train_tiny.build_tokenizer()
    recipe = train_tiny.STUDENT
    assert train_tiny.settings(recipe, 0, tok) == train_tiny.settings(recipe, 0, tok, "lsb")
    assert train_tiny.settings(recipe, 0, tok) != train_tiny.settings(recipe, 0, tok, "msb")
    assert train_tiny.settings(recipe, 0, tok) != train_tiny.settings(recipe, 0, tok, "lsb", "problem")
    lsb = train_tiny.sample_rows(random.Random(0), 50, recipe)
    msb = train_tiny.sample_rows(random.Random(0), 50, recipe, order="msb")
    for (a, ca), (b, cb) in zip(lsb, msb):
        assert ca == cb and a["digits"] == b["digits"]
        if a["benchmark"] == task.RETAIN_BENCHMARK:
            assert a == b
        else:
            assert b["answer"] == a["answer"][::-1]


def test_the_scripts_leave_a_rerun_as_it_is_and_refuse_what_is_not_theirs(tmp_path):
    """task.py and tiny_model.py, run twice, leave their output; over a file or folder of other
    content they exit 2 and keep it (they wrote over it); a build killed midway leaves no half
    model at --out to block the script's `[ -d "$MODEL" ] || build` rerun."""
    task = [sys.executable, str(ROOT / "examples" / "task.py"), "--train", "10", "--test-per-digit", "2", "--retain", "2"]
    out = tmp_path / "data"
    assert subprocess.run([*task, "--out", out], capture_output=True, timeout=120).returncode == 0
    before = (out / "train.parquet").read_bytes()
    assert subprocess.run([*task, "--out", out], capture_output=True, timeout=120).returncode == 0
    assert (out / "train.parquet").read_bytes() == before
    bad = subprocess.run([*task, "--out", out, "--seed", "5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "train.parquet exists with other rows" in bad.stderr
    assert (out / "train.parquet").read_bytes() == before

    build = [sys.executable, str(ROOT / "examples" / "tiny_model.py"), "--hidden", "16", "--layers", "1"]
    model = tmp_path / "m"
    assert subprocess.run([*build, "--out", model], capture_output=True, timeout=120).returncode == 0
    weights = (model / "model.safetensors").read_bytes()
    again = subprocess.run([*build, "--out", model], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == str(model)
    assert (model / "model.safetensors").read_bytes() == weights
    empty = tmp_path / "empty"
    empty.mkdir()
    assert subprocess.run([*build, "--out", empty], capture_output=True, timeout=120).returncode == 0
    assert (empty / "model.safetensors").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused = subprocess.run([*build, "--out", mine], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "not a tiny model built with these options" in refused.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not list(tmp_path.glob(".*.tmp-*"))
