"""How a problem becomes the token ids a model sees.

With `--context none` the model sees the problem (plus `--prompt-suffix`). With `--context
reference` it also sees the problem's expert reference solution as privileged context, the
paper's Figure 2: the teacher is conditioned on the expert solution, the student is not, and
both score the same response tokens. The template is fixed and documented here and in the
README, so a teacher prompt can be reproduced exactly:

    {prompt}{suffix}

    Here is a reference solution written by an expert:
    {reference}

    Using the reference only as a guide, write your own complete solution.

The text goes through the model's chat template when the tokenizer has one (as a single user
turn, after an optional system prompt), else it is used raw. `--chat-template-kwargs JSON`
passes variables to that template, e.g. `'{"enable_thinking": false}'` for Qwen3, whose
template thinks by default; a model without a chat template refuses them.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import polars as pl

from schemas import InputError
from schemas.base import quote_rows

CONTEXTS = ("none", "reference")

REFERENCE_TEMPLATE = (
    "{prompt}\n\nHere is a reference solution written by an expert:\n{reference}\n\n"
    "Using the reference only as a guide, write your own complete solution."
)


def check_references(problems: pl.DataFrame, context: str, source: str) -> None:
    """`--context reference` needs a reference for every problem: name those without one."""
    if context != "reference":
        return
    missing = pl.col("reference").is_null() | (pl.col("reference").str.strip_chars() == "")
    n = problems.select(missing.sum()).item()
    if n:
        raise InputError(
            f"--context reference: {n} problem(s) in {source} have no 'reference' "
            f"(rows {quote_rows(problems, missing, ('problem_id',))}); fill the column or use "
            f"--context none"
        )


# Arguments of `apply_chat_template` (transformers 5) that paced sets itself or that change what
# it returns, and the template's `messages`: as template variables they clash with paced's (a
# TypeError) or make the prompt something else. (`tools`, `documents` and the like pass through.)
RESERVED_TEMPLATE_ARGS = frozenset({
    "conversation", "messages", "tokenize", "add_generation_prompt", "continue_final_message", "return_dict",
    "return_tensors", "return_assistant_tokens_mask",
})


def template_kwargs(text: str | None, flag: str = "--chat-template-kwargs") -> dict[str, Any]:
    """The chat template's variables from their JSON object (none when not given)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{flag} {text!r}: not valid JSON ({e.msg}); give an object, e.g. '{{\"enable_thinking\": false}}'") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} {text!r}: must be a JSON object of template variables, e.g. '{{\"enable_thinking\": false}}'")
    taken = sorted(set(value) & RESERVED_TEMPLATE_ARGS)
    if taken:
        raise InputError(
            f"{flag} {text!r}: {', '.join(repr(k) for k in taken)} {'is' if len(taken) == 1 else 'are'} not a template "
            f"variable but an argument paced sets itself when it renders a prompt (the messages, with the generation "
            f"prompt, as text); drop {'it' if len(taken) == 1 else 'them'}"
        )
    return value


def canonical_template_kwargs(text: str | None) -> str | None:
    """One spelling per set of variables (sorted keys, no spaces), so that a job's key and the
    check against the rollouts do not depend on how the JSON was typed. Raises InputError."""
    return None if text is None else json.dumps(template_kwargs(text), sort_keys=True, separators=(",", ":"))


def option_problems(config: Any) -> list[str]:
    """The problems of a config's prompt options (`--context`, `--chat-template-kwargs`), each with
    its fix; `chat_template_kwargs` is put in its one spelling, so a job's key does not depend on
    how the JSON was typed."""
    problems = []
    try:
        config.chat_template_kwargs = canonical_template_kwargs(config.chat_template_kwargs)
    except InputError as e:
        problems.append(str(e))
    if config.context not in CONTEXTS:
        problems.append(f"--context {config.context}: use one of {', '.join(CONTEXTS)}")
    return problems


def prompt_text(prompt: str, reference: str | None, *, context: str, suffix: str | None) -> str:
    text = prompt + (suffix or "")
    if context == "reference":
        return REFERENCE_TEMPLATE.format(prompt=text, reference=reference)
    return text


def encode_prompts(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    context: str = "none",
    system_prompt: str | None = None,
    suffix: str | None = None,
    chat_template_kwargs: str | None = None,
) -> list[list[int]]:
    """Token ids of each problem's prompt, ready for generation or teacher forcing.
    `chat_template_kwargs`: the JSON object of --chat-template-kwargs."""
    out = []
    templated = getattr(tokenizer, "chat_template", None) is not None
    variables = template_kwargs(chat_template_kwargs)
    if templated:
        import jinja2  # what transformers renders chat templates with
    if variables and not templated:
        raise InputError(
            f"--chat-template-kwargs {chat_template_kwargs}: the model's tokenizer has no chat template, so "
            f"there is nothing to pass them to; drop the option"
        )
    for row in rows:
        text = prompt_text(row["prompt"], row.get("reference"), context=context, suffix=suffix)
        if templated:
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
                {"role": "user", "content": text}
            ]
            try:
                rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **variables)
            except jinja2.TemplateError as e:  # the template's own raise_exception, or a broken template
                given = " with --system-prompt" if system_prompt else ""
                raise InputError(
                    f"the model's chat template fails on problem {row.get('problem_id')!r}{given} "
                    f"({type(e).__name__}: {e}); "
                    + ("this template takes no system message: drop --system-prompt (--prompt-suffix adds text to the user's)"
                       if system_prompt and "system" in str(e).lower() else
                       "fix the template (chat_template.jinja or tokenizer_config.json's chat_template) or the options it is given")
                ) from None
            ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        else:
            if system_prompt:
                text = system_prompt + "\n\n" + text
            ids = tokenizer(text)["input_ids"]
        out.append(list(ids))
    return out
