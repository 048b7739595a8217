"""paced rollout: K samples per problem, reproducible, resumable after kill -9."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq

from tests.conftest import job_record, kill_when, make_problems, manifest_record, paced, paced_subprocess

FAST = ["--samples", "3", "--max-new-tokens", "12", "--part-size", "2", "--batch-size", "2"]


def rollouts(path) -> pl.DataFrame:
    return pl.read_parquet(f"{path}/part-*.parquet").sort("problem_id", "sample_index")


def test_k_samples_per_problem_with_tokens_and_finish_reasons(tmp_path, problems_file, student_dir, tokenizer):
    out = tmp_path / "rollouts"
    r = paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    df = rollouts(out)
    assert df.height == 6 * 3
    assert df.group_by("problem_id").agg(pl.col("sample_index").sort()).get_column("sample_index").to_list() == [[0, 1, 2]] * 6
    assert set(df["finish_reason"]) <= {"stop", "length"}
    eos = tokenizer.eos_token_id
    for row in df.iter_rows(named=True):
        ids = row["completion_token_ids"]
        assert 1 <= len(ids) <= 12
        assert (row["finish_reason"] == "stop") == (ids[-1] == eos)
        assert eos not in ids[:-1]
        assert row["completion"] == tokenizer.decode(ids, skip_special_tokens=True)
        assert row["model"] == str(student_dir)
    manifest = manifest_record(out)
    assert manifest["rows"] == 18 and len(manifest["parts"]) == 3
    prov = json.loads(pq.read_schema(out / "part-00000.parquet").metadata[b"paced.provenance"])
    assert prov["options"]["samples"] == 3 and prov["inputs"]["problems"]["fingerprint"].startswith("sha256:")
    assert "rollout summary" in r.stderr


def test_same_seed_same_completions_other_seed_differs(tmp_path, problems_file, student_dir):
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", tmp_path / name,
                     *FAST, "--seed", seed).exit_code == 0
        runs[name] = rollouts(tmp_path / name).drop("model")
    assert runs["a"].equals(runs["b"])
    assert not runs["a"].equals(runs["c"])


def test_sampling_is_temperature_and_top_p_only(tmp_path, problems_file, student_dir):
    # The tiny random model is almost uniform over its 400 tokens, so 200 first tokens drawn for a
    # prompt at temperature 1 take ~150 distinct values; a hidden top-k (transformers' default 50,
    # or the model's own generation config, which here asks for top-k 5, top-p 0.5 and a
    # repetition penalty) would cap them at k. That config must change nothing.
    import shutil

    model = tmp_path / "model"
    shutil.copytree(student_dir, model)
    gen = json.loads((model / "generation_config.json").read_text())
    gen |= {"do_sample": True, "top_k": 5, "top_p": 0.5, "temperature": 0.3, "repetition_penalty": 1.5}
    (model / "generation_config.json").write_text(json.dumps(gen))
    args = ["--problems", problems_file, "--samples", "200", "--max-new-tokens", "1", "--part-size", "6", "--batch-size", "6"]
    for name, m in (("plain", student_dir), ("defaults", model)):
        r = paced("rollout", *args, "--model", m, "--out", tmp_path / name)
        assert r.exit_code == 0, r.stderr
    plain, defaults = rollouts(tmp_path / "plain"), rollouts(tmp_path / "defaults")
    assert plain["completion_token_ids"].to_list() == defaults["completion_token_ids"].to_list()
    distinct = plain.group_by("problem_id").agg(pl.col("completion_token_ids").list.first().n_unique())
    assert distinct["completion_token_ids"].min() > 80, distinct


def test_top_k_limits_each_draw_to_the_k_most_likely_tokens(tmp_path, problems_file, student_dir):
    # Same near-uniform model as above: without --top-k ~150 distinct first tokens per prompt.
    args = ["--problems", problems_file, "--model", student_dir, "--samples", "200", "--max-new-tokens", "1",
            "--part-size", "6", "--batch-size", "6"]
    assert paced("rollout", *args, "--out", tmp_path / "k5", "--top-k", "5").exit_code == 0
    firsts = rollouts(tmp_path / "k5").group_by("problem_id").agg(pl.col("completion_token_ids").list.first().n_unique())
    assert firsts["completion_token_ids"].max() <= 5 and firsts["completion_token_ids"].min() >= 3, firsts
    assert job_record(tmp_path / "k5")["options"]["top_k"] == 5
    # top-k 1 at temperature 1 is greedy decoding.
    common = ["--problems", problems_file, "--model", student_dir, *FAST]
    assert paced("rollout", *common, "--out", tmp_path / "k1", "--top-k", "1").exit_code == 0
    assert paced("rollout", *common, "--out", tmp_path / "greedy", "--temperature", "0").exit_code == 0
    assert rollouts(tmp_path / "k1")["completion_token_ids"].to_list() == rollouts(tmp_path / "greedy")["completion_token_ids"].to_list()
    # Off (the default) is not in the job's key, so jobs made before --top-k existed resume.
    assert paced("rollout", *common, "--out", tmp_path / "off").exit_code == 0
    assert "top_k" not in job_record(tmp_path / "off")["options"]


def test_greedy_gives_k_identical_samples(tmp_path, problems_file, student_dir):
    assert paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", tmp_path / "g",
                 *FAST, "--temperature", "0").exit_code == 0
    df = rollouts(tmp_path / "g")
    assert df.group_by("problem_id").agg(pl.col("completion").n_unique())["completion"].to_list() == [1] * 6


def test_prompts_use_the_chat_template_or_the_raw_text(tokenizer, raw_model_dir):
    from stages import models, prompts

    row = {"prompt": "What is 1 + 2?", "reference": "1 + 2 = 3"}
    chat = tokenizer.decode(prompts.encode_prompts(tokenizer, [row], suffix=" Think.")[0])
    assert chat == "<|im_start|>user\nWhat is 1 + 2? Think.<|im_end|>\n<|im_start|>assistant\n"
    with_ref = tokenizer.decode(prompts.encode_prompts(tokenizer, [row], context="reference", system_prompt="Be brief.")[0])
    assert with_ref.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 1 + 2?")
    assert "reference solution written by an expert:\n1 + 2 = 3" in with_ref
    raw_tok = models.load_tokenizer(str(raw_model_dir))
    assert raw_tok.decode(prompts.encode_prompts(raw_tok, [row])[0]) == "What is 1 + 2?"


def test_rerun_of_a_complete_job_does_nothing(tmp_path, problems_file, student_dir):
    out = tmp_path / "r"
    assert paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST)
    assert r.exit_code == 0 and "already complete" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_changed_options_refuse_to_mix_and_overwrite_starts_over(tmp_path, problems_file, student_dir):
    out = tmp_path / "r"
    assert paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST).exit_code == 0
    r = paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST, "--temperature", "0.5")
    assert r.exit_code == 2
    assert "temperature: 1.0 -> 0.5" in r.stderr and "--overwrite" in r.stderr
    r = paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST,
              "--temperature", "0.5", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert job_record(out)["options"]["temperature"] == 0.5


def test_bad_input_exits_2_before_loading_anything(tmp_path, problems_file, student_dir):
    no_ref = tmp_path / "noref.parquet"
    make_problems().with_columns(reference=pl.lit(None, pl.String)).write_parquet(no_ref)
    cases = [
        (["--problems", no_ref, "--context", "reference"], "--context reference: 6 problem(s)"),
        (["--problems", problems_file, "--samples", "0"], "--samples 0"),
        (["--problems", problems_file, "--top-p", "0"], "--top-p 0.0"),
        (["--problems", problems_file, "--top-k", "-1"], "--top-k -1: must be 0 (off)"),
        (["--problems", problems_file, "--backend", "tgi"], "--backend tgi"),
        (["--problems", problems_file, "--max-new-tokens", "5000"], "exceed the model's context of 1024"),
        (["--problems", tmp_path / "missing.parquet"], "no such file"),
    ]
    for args, needle in cases:
        out = tmp_path / "out"
        r = paced("rollout", "--model", student_dir, "--out", out, *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
        assert not out.exists()
    r = paced("rollout", "--problems", problems_file, "--model", tmp_path / "nomodel", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "no such directory" in r.stderr


def test_model_directory_without_weights_or_tokenizer(tmp_path, problems_file, student_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(student_dir, broken)
    (broken / "model.safetensors").unlink()
    (broken / "tokenizer.json").unlink()
    (broken / "tokenizer_config.json").unlink()
    r = paced("rollout", "--problems", problems_file, "--model", broken, "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert "*.safetensors weights" in r.stderr and "a tokenizer" in r.stderr


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path, student_dir):
    problems = tmp_path / "problems.parquet"
    make_problems(16).write_parquet(problems)
    args = ["--problems", problems, "--model", student_dir, "--samples", "2", "--max-new-tokens", "48",
            "--part-size", "1", "--batch-size", "1", "--seed", "3"]
    ref = paced_subprocess("rollout", *args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    kill_when(out / "part-00001.parquet", "rollout", *args, "--out", out)
    done_before = len(list(out.glob("part-*.parquet")))
    assert not (out / "_manifest.parquet").exists() and done_before < 16

    rerun = paced_subprocess("rollout", *args, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done_before} / {16 - done_before}" in rerun.stderr  # resumed parts / generated now
    a, b = rollouts(tmp_path / "ref"), rollouts(out)
    assert a.equals(b)
    assert b.select(pl.struct("problem_id", "sample_index").n_unique()).item() == 32
    assert not list(out.glob(".*tmp*"))


def test_greedy_and_sampled_rollouts_print_no_transformers_warning(tmp_path, problems_file, student_dir):
    """Greedy decoding leaves every sampling flag unset: transformers would otherwise warn that
    they are ignored ("generation flags are not valid"), on every run of the quickstart."""
    for temperature in ("0", "1.0"):
        r = paced_subprocess("rollout", "--problems", problems_file, "--model", student_dir, "--out", tmp_path / temperature,
                             "--samples", "2", "--max-new-tokens", "4", "--temperature", temperature)
        assert r.returncode == 0, r.stderr
        assert "generation flags" not in r.stderr and "may be ignored" not in r.stderr, r.stderr


# A verifier that calls about half of the tiny random model's answers right, deterministically.
COIN = "import hashlib\ndef coin(completion, problem):\n    return hashlib.sha256(completion.encode()).digest()[0] % 2 == 0\n"


def test_min_samples_draws_the_rest_only_for_unsettled_problems(tmp_path, student_dir, monkeypatch):
    """--samples 6 --min-samples 3: every problem gets the first 3 samples of a plain --samples 6
    run; exactly the problems with 0 < c < 3 among them get samples 3..5, the plain run's; score
    and weight use each problem's own count; a kill in the second phase, rerun, gives the
    uninterrupted artifact."""
    from stages.options import key_options
    from stages.rollout import RolloutConfig

    (tmp_path / "coin.py").write_text(COIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    problems = tmp_path / "problems.parquet"
    make_problems(12).write_parquet(problems)
    base = ["--problems", problems, "--model", student_dir, "--max-new-tokens", "12", "--part-size", "4",
            "--batch-size", "4", "--seed", "5"]
    assert paced("rollout", *base, "--samples", "6", "--out", tmp_path / "k6").exit_code == 0
    adaptive = [*base, "--samples", "6", "--min-samples", "3", "--verifier", "coin:coin"]
    r = paced("rollout", *adaptive, "--out", tmp_path / "ad")
    assert r.exit_code == 0, r.stderr
    k6, ad = rollouts(tmp_path / "k6").drop("model"), rollouts(tmp_path / "ad").drop("model")
    assert paced("score", "--rollouts", tmp_path / "k6", "--problems", problems, "--out", tmp_path / "s6",
                 "--verifier", "coin:coin").exit_code == 0
    c = (pl.read_parquet(tmp_path / "s6" / "part-*.parquet").filter(pl.col("sample_index") < 3)
         .group_by("problem_id").agg(c=pl.col("correct").sum()))
    mixed = set(c.filter((pl.col("c") > 0) & (pl.col("c") < 3))["problem_id"])
    assert 0 < len(mixed) < 12  # both kinds present at this seed
    # Every adaptive sample is the plain run's sample of the same problem and index.
    assert ad.equals(k6.filter((pl.col("sample_index") < 3) | pl.col("problem_id").is_in(sorted(mixed))))
    counts = dict(ad.group_by("problem_id").len().iter_rows())
    assert counts == {p: 6 if p in mixed else 3 for p in counts}
    saved = 1 - (3 * 12 + 3 * len(mixed)) / 72
    assert f"{3 * 12 + 3 * len(mixed)} of 72 ({saved:.1%} saved)" in r.stderr
    assert f"3, then 6 for {len(mixed)} (0 < c < 3)" in r.stderr
    # score and weight: each problem's own count.
    assert paced("score", "--rollouts", tmp_path / "ad", "--problems", problems, "--out", tmp_path / "sa",
                 "--verifier", "coin:coin").exit_code == 0
    assert paced("weight", "--scores", tmp_path / "sa", "--out", tmp_path / "w.parquet").exit_code == 0
    w = pl.read_parquet(tmp_path / "w.parquet")
    assert dict(w.select("problem_id", "num_samples").iter_rows()) == counts
    # A plain rollout's job key has none of the adaptive options (jobs made before them resume).
    plain = RolloutConfig(problems=problems, model=str(student_dir), out=tmp_path / "x")
    assert not {"min_samples", "verifier", "timeout", "workers"} & set(key_options(plain))
    assert {"min_samples"} <= set(key_options(RolloutConfig(problems=problems, model="m", out=tmp_path / "x",
                                                             samples=6, min_samples=3)))

    # Killed when its first part of further samples lands, rerun: the uninterrupted artifact.
    out = tmp_path / "killed"
    kill_when(out / "part-00003.parquet", "rollout", *adaptive, "--out", out, "--part-size", "1")
    assert not (out / "_manifest.parquet").exists()
    ref = paced("rollout", *adaptive, "--out", tmp_path / "ref", "--part-size", "1")
    assert ref.exit_code == 0, ref.stderr
    rerun = paced_subprocess("rollout", *adaptive, "--out", out, "--part-size", "1")
    assert rerun.returncode == 0, rerun.stderr
    assert rollouts(out).equals(rollouts(tmp_path / "ref"))


def test_min_samples_bad_options_exit_2(tmp_path, problems_file, student_dir):
    base = ["rollout", "--problems", problems_file, "--model", student_dir, "--out", tmp_path / "o"]
    for extra, needle in [(["--samples", "4", "--min-samples", "4"], "--min-samples 4: must be from 1 to --samples - 1 = 3"),
                          (["--samples", "4", "--min-samples", "0"], "--min-samples 0"),
                          (["--verifier", "exact"], "apply with --min-samples only"),
                          (["--samples", "4", "--min-samples", "2", "--timeout", "0"], "--timeout 0")]:
        r = paced(*base, *extra)
        assert r.exit_code == 2 and needle in r.stderr, (extra, r.stderr)
        assert not (tmp_path / "o").exists()


def test_sampled_hf_jobs_carry_the_sampling_scheme_in_their_key(tmp_path, problems_file, student_dir):
    """A sampled job made by an earlier hf sampler (one generator per part) is not resumed by this
    one: the scheme is in the key of sampled hf jobs; greedy jobs, whose output it does not
    change, and vLLM jobs, whose seeding did not change, keep their keys."""
    from stages import backends
    from stages.backends import hf
    from stages.backends.generation import job_options
    from stages.rollout import RolloutConfig

    def options(**kw):
        return job_options(RolloutConfig(problems=problems_file, model=str(student_dir), out=tmp_path / "x", **kw), {})

    assert options()["sampling"] == hf.SAMPLING
    assert "sampling" not in options(temperature=0.0)
    assert backends.get("vllm").SAMPLING is None
    assert paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", tmp_path / "r", *FAST).exit_code == 0
    assert job_record(tmp_path / "r")["options"]["sampling"] == hf.SAMPLING
