"""Gradients of the distillation loss at one parameter, one rollout (or one problem) at a time:
what `paced snr` measures, through distill's own collate and micro-batch loss."""

from __future__ import annotations

import difflib
from typing import Any, Iterator

from schemas import InputError
from stages.training import data as train_data, forward


def _autocast(device: str):
    import torch

    # float32 everywhere: the SNR compares small differences of gradients
    return lambda: torch.autocast(device.split(":")[0], enabled=False)


def _take_grad(param):
    """param.grad, handed over: autograd allocates a fresh one for the next backward."""
    g, param.grad = param.grad, None
    if g is None:
        raise InputError("--param: the distillation loss does not depend on this parameter; choose another")
    return g


def rollout_gradients(model, param, data: train_data.TrainData, name: str, *, loss: str, mu: float,
                      device: str) -> Iterator[Any]:
    """Yield, for each sequence (rollout) of problem `name`, the gradient of its mean token loss
    w.r.t. `param`, one at a time (one forward and backward pass each); the caller owns it.

    Coefficient 1 / T_s on the sequence's summed token loss makes it the mean token loss.
    """
    import torch

    for row in data.rows[name]:
        param.grad = None
        batch = train_data.collate(data, [row], device)
        coef = torch.full((1,), 1.0 / int(batch["mask"].sum()), dtype=torch.float32, device=device)
        terms = forward.micro_batch_loss(model, batch, coef, loss=loss, mu=mu, chunk_size=forward.CHUNK_SIZE, autocast=_autocast(device))
        terms["loss"].backward()
        yield _take_grad(param)


def problem_gradients(model, param, data: train_data.TrainData, names: list[str], *, loss: str, mu: float,
                      micro_batch_size: int, device: str) -> Iterator[tuple[str, Any]]:
    """Yield (problem, gradient of its mean token loss w.r.t. `param`), one problem at a time;
    the caller owns the tensor. The pooled estimator's g_i.

    Coefficient 1 / T_i on every sequence of problem i makes distill's weighted sum its mean
    token loss (distill uses w_i / (N T_i)).
    """
    import torch

    for name in names:
        param.grad = None
        rows = data.rows[name]
        for m in range(0, len(rows), micro_batch_size):
            chunk = rows[m : m + micro_batch_size]
            batch = train_data.collate(data, chunk, device)
            coef = torch.full((len(chunk),), 1.0 / data.tokens[name], dtype=torch.float32, device=device)
            terms = forward.micro_batch_loss(model, batch, coef, loss=loss, mu=mu, chunk_size=forward.CHUNK_SIZE, autocast=_autocast(device))
            terms["loss"].backward()
        yield name, _take_grad(param)


def parameter_names(student: str, trust_remote_code: bool) -> tuple[list[str], str]:
    """The student's parameter names (tied ones under each name) and its output embedding
    weight's name, from the config alone: the model is built on the meta device, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(student, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    return [n for n, _ in model.named_parameters(remove_duplicate=False)], _head_name(model)


def _head_name(model) -> str:
    head = model.get_output_embeddings()
    return next(f"{n}.weight" for n, m in model.named_modules() if m is head)


def check_param(name: str, names: list[str]) -> None:
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    examples = list(dict.fromkeys(close + [names[0], names[-1], *names[1:3]]))[:5]
    raise InputError(
        f"--param {name}: the student has no parameter of that name; valid names include "
        f"{', '.join(examples)} ({len(names)} in all, as listed by model.named_parameters()). "
        f"Leave --param out to use the output embedding weight"
    )
