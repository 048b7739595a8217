"""The student's weighted loss on a micro-batch: the decoder's forward, then the output layer
fused with the loss, `chunk_size` response tokens at a time (stages/training/losses.py).
"""

from __future__ import annotations

from typing import Any

from stages.training import losses

# Token positions per float32 [positions, vocabulary] loss chunk: distill's --chunk-size default, and
# what snr's gradients use.
CHUNK_SIZE = 1024


def micro_batch_loss(model, batch: dict[str, Any], coef, *, loss: str, mu: float, chunk_size: int, autocast):
    """sum_s coef_s * sum_t loss_{s,t} for a micro-batch, and the same for fkl and rkl (detached).

    coef_s = w_i / (N * T_i) for the problem i of sequence s: one scalar per problem.

    The output layer runs inside `losses.fused_head_losses`, `chunk_size` response tokens at a
    time, on the hidden states of the tokens that count only: the [tokens, vocab] logits (5 GB
    in float32 for 8k tokens of Qwen's 151,936-token vocabulary) and their gradient never exist
    whole.
    """
    import torch

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    mask = batch["mask"]
    with autocast():
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention"]).last_hidden_state
    # A plain nn.Linear (tied or not) is fused. Anything else, e.g. a LoRA-wrapped or quantised
    # head, or one with hooks (accelerate offloading), computes its output its own way, which
    # F.linear on `.weight` would silently skip: those fall back to materialised logits.
    fused = type(head) is torch.nn.Linear and not (head._forward_hooks or head._forward_pre_hooks)
    if fused:
        seq, resp = mask.nonzero(as_tuple=True)  # [N] each, row-major like token_losses' rows
        with autocast():
            terms = losses.fused_head_losses(
                hidden[seq, batch["gather"][seq, resp]], head.weight, head.bias,
                batch["topk_ids"][seq, resp], batch["topk_lp"][seq, resp], batch["tail"][seq, resp],
                loss=loss, mu=mu, chunk_size=chunk_size,
            )
        rows = seq * mask.shape[1] + resp
        terms = {name: v.new_zeros(mask.numel()).index_copy(0, rows, v).view(mask.shape) for name, v in terms.items()}
    else:
        with autocast():
            idx = batch["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            logits = head(torch.gather(hidden, 1, idx))  # [B, R, V]: response positions only
        terms = losses.token_losses(
            logits, batch["topk_ids"], batch["topk_lp"], batch["tail"], mask, loss=loss, mu=mu, chunk_size=chunk_size
        )
    drawn = batch.get("has_draws")
    if drawn is not None and bool(drawn.any()):
        shift = batch["fkl_shift"]
        # Drawn teacher tokens (stages/training/data.py): the bucket forward KL plus a constant
        # per token is the unbiased estimate of the KL's value (the gradient is unchanged);
        # they give no estimate of the reverse KL, logged as NaN.
        terms["fkl"] = terms["fkl"] + shift
        if loss == "fkl":
            terms["loss"] = terms["loss"] + shift
        terms["rkl"] = torch.full_like(terms["rkl"], float("nan"))
    out = {}
    for name in ("loss", "fkl", "rkl"):
        sums, _ = losses.sequence_sums(terms[name], mask)
        out[name] = (sums * coef).sum()
    return out


def loss_module(model, *, loss: str, mu: float, chunk_size: int, autocast):
    """The student behind one forward that returns the weighted loss terms of a micro-batch.

    DDP, FSDP and DeepSpeed hook a module's forward; `micro_batch_loss` calls the decoder and the
    output layer separately (the fused, chunked head), so under a launcher the whole loss runs
    inside this module's forward and accelerate wraps this module.
    """
    import torch

    class _LossModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            # FSDP's transformer auto-wrap policy reads the layer classes from here.
            self._no_split_modules = list(getattr(model, "_no_split_modules", None) or [])

        def forward(self, batch, coef):
            return micro_batch_loss(self.model, batch, coef, loss=loss, mu=mu, chunk_size=chunk_size, autocast=autocast)

    return _LossModule()
