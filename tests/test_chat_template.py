"""--chat-template-kwargs: variables for the model's chat template (Qwen3's enable_thinking), on
rollout, eval and teacher-logits; part of a job's identity, recorded, inherited by teacher-logits
from the rollouts and checked against them."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from stages import tiny_model
from tests.conftest import job_record, paced

# The tiny chat template with Qwen3's switch: `enable_thinking=False` opens the assistant turn with
# an empty thinking block, as Qwen3's own template does.
THINKING_TEMPLATE = tiny_model.CHAT_TEMPLATE.replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}",
)
NO_THINKING = '{"enable_thinking": false}'
FAST = ["--samples", "2", "--max-new-tokens", "6", "--part-size", "3", "--batch-size", "3"]


def with_thinking_template(model_dir, dest):
    """A copy of a tiny model whose tokenizer's chat template reads enable_thinking."""
    from transformers import AutoTokenizer

    shutil.copytree(model_dir, dest)
    tok = AutoTokenizer.from_pretrained(dest)
    tok.chat_template = THINKING_TEMPLATE
    tok.save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def thinking_models(tmp_path_factory, student_dir, teacher_dir):
    d = tmp_path_factory.mktemp("thinking")
    return with_thinking_template(student_dir, d / "student"), with_thinking_template(teacher_dir, d / "teacher")


def test_the_variables_reach_the_template(thinking_models):
    from stages import models, prompts

    tok = models.load_tokenizer(str(thinking_models[0]))
    row = {"prompt": "What is 1 + 2?"}
    off = tok.decode(prompts.encode_prompts(tok, [row], chat_template_kwargs=NO_THINKING)[0])
    assert off == "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    for on in (None, '{"enable_thinking": true}'):
        assert tok.decode(prompts.encode_prompts(tok, [row], chat_template_kwargs=on)[0]).endswith("<|im_start|>assistant\n")
    assert prompts.canonical_template_kwargs('{ "b" : 1, "enable_thinking": false }') == '{"b":1,"enable_thinking":false}'


def test_rollout_eval_and_teacher_logits_use_record_and_check_them(tmp_path, problems_file, thinking_models):
    student, teacher = thinking_models
    rollout = ["rollout", "--problems", problems_file, "--model", student, *FAST]
    r = paced(*rollout, "--out", tmp_path / "ro", "--chat-template-kwargs", NO_THINKING)
    assert r.exit_code == 0, r.stderr
    job = job_record(tmp_path / "ro")
    assert job["options"]["chat_template_kwargs"] == '{"enable_thinking":false}'
    # Another spelling of the same variables is the same job.
    r = paced(*rollout, "--out", tmp_path / "ro", "--chat-template-kwargs", '{ "enable_thinking" : false }')
    assert r.exit_code == 0 and "already complete" in r.stderr
    # Without them: not in the job's key, so jobs made before the option resume.
    assert paced(*rollout, "--out", tmp_path / "plain").exit_code == 0
    assert "chat_template_kwargs" not in job_record(tmp_path / "plain")["options"]

    # teacher-logits inherits them: the stored student prompt is the one the responses followed.
    tl = ["teacher-logits", "--problems", problems_file, "--sequences", tmp_path / "ro", "--teacher", teacher, "--top-k", "4"]
    r = paced(*tl, "--out", tmp_path / "tl")
    assert r.exit_code == 0, r.stderr
    from stages import models

    tok = models.load_tokenizer(str(student))
    prompts_seen = pl.read_parquet(f"{tmp_path / 'tl'}/part-*.parquet")["prompt_token_ids"].to_list()
    assert all(tok.decode(p).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") for p in prompts_seen)
    tl_job = job_record(tmp_path / "tl")
    assert tl_job["options"]["chat_template_kwargs"] == '{"enable_thinking":false}'
    # Repeating them is fine; contradicting them is refused before the teacher loads.
    assert paced(*tl, "--out", tmp_path / "tl", "--chat-template-kwargs", NO_THINKING).exit_code == 0
    r = paced(*tl, "--out", tmp_path / "tl2", "--chat-template-kwargs", '{"enable_thinking": true}')
    assert r.exit_code == 2
    assert "were sampled with {\"enable_thinking\":false}" in r.stderr and not (tmp_path / "tl2").exists()
    # Rollouts sampled without them give a plain prompt.
    assert paced("teacher-logits", "--problems", problems_file, "--sequences", tmp_path / "plain", "--teacher", teacher,
                 "--top-k", "4", "--out", tmp_path / "tl3").exit_code == 0
    plain = pl.read_parquet(f"{tmp_path / 'tl3'}/part-*.parquet")["prompt_token_ids"].to_list()
    assert all(tok.decode(p).endswith("<|im_start|>assistant\n") for p in plain)

    r = paced("eval", "--problems", problems_file, "--model", student, "--out", tmp_path / "ev", "--samples", "1",
              "--temperature", "0", "--max-new-tokens", "4", "--verifier", "exact", "--workers", "1",
              "--chat-template-kwargs", NO_THINKING)
    assert r.exit_code == 0, r.stderr
    assert job_record(tmp_path / "ev" / "results")["options"]["chat_template_kwargs"] == '{"enable_thinking":false}'


@pytest.mark.parametrize("command", ["rollout", "eval", "teacher-logits"])
@pytest.mark.parametrize("value, message", [
    ("{enable_thinking: false}", "not valid JSON"),
    ('["enable_thinking"]', "must be a JSON object"),
])
def test_bad_variables_exit_2(tmp_path, problems_file, student_dir, command, value, message):
    args = {"rollout": ["--model", student_dir], "eval": ["--model", student_dir],
            "teacher-logits": ["--sequences", problems_file, "--teacher", student_dir]}[command]
    r = paced(command, "--problems", problems_file, *args, "--out", tmp_path / "o", "--chat-template-kwargs", value)
    assert r.exit_code == 2 and f"--chat-template-kwargs {value!r}: {message}" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_a_model_without_a_chat_template_refuses_them(tmp_path, problems_file, raw_model_dir):
    r = paced("rollout", "--problems", problems_file, "--model", raw_model_dir, "--out", tmp_path / "o", *FAST,
              "--chat-template-kwargs", NO_THINKING)
    assert r.exit_code == 2 and "has no chat template" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
