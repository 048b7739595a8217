"""Build a tiny, randomly initialised chat model that loads like a real checkpoint: what the
tests, the benchmarks and the CPU examples run the real commands on.

    python examples/tiny_model.py --out runs/tiny-student --arch qwen2 --seed 0
    python -m stages.tiny_model --out runs/tiny-student --arch qwen2 --seed 0

A byte-level BPE tokenizer trained on the fly (so any text round-trips), a ChatML chat
template like Qwen's, and a Qwen2 or Llama model built from a config with head dimension 32
(vLLM's CPU attention refuses 16). Saved with `save_pretrained` as safetensors, so
transformers and vLLM load the directory as they would Qwen3-1.7B. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Enough text for BPE to learn digits, arithmetic and the words of our prompts.
CORPUS = [
    "What is 12 + 34? The answer is \\boxed{46}.",
    "Compute 7 - 3 step by step. 7 - 3 = 4, so the answer is \\boxed{4}.",
    "Let's think step by step and output the final answer within \\boxed{}.",
    "Here is a reference solution written by an expert: add the units digits, carry the one.",
    "Using the reference only as a guide, write your own complete solution.",
    "0123456789 + - * / = ( ) { } [ ] \\frac{1}{2} \\sqrt{2} x^2 answer problem solution",
] * 20


def build_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def random_model(
    vocab_size: int,
    *,
    arch: str = "qwen2",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    max_positions: int = 1024,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    sliding_window: int | None = None,
):
    """A tiny causal LM with random weights (seeded): the architecture every tiny model here has
    (MLP twice the hidden size, untied embeddings). `sliding_window` (qwen2 only): every layer
    attends to that many tokens, the current one included."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    if sliding_window is not None and arch != "qwen2":
        raise ValueError(f"sliding_window: arch {arch!r} has none here; use qwen2")
    if arch == "qwen2":
        window = {} if sliding_window is None else dict(use_sliding_window=True, sliding_window=sliding_window, max_window_layers=0)
        return Qwen2ForCausalLM(Qwen2Config(**common, **window))
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    raise ValueError(f"arch {arch!r}: use qwen2 or llama")


def build(
    out: str | Path,
    *,
    arch: str = "qwen2",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    chat: bool = True,
    max_positions: int = 1024,
    tokenizer=None,
    sliding_window: int | None = None,
) -> Path:
    """Write a tiny model (`random_model`) and its tokenizer to `out`; return the directory."""
    from transformers import GenerationConfig

    out = Path(out)
    tok = tokenizer if tokenizer is not None else build_tokenizer(chat)
    model = random_model(len(tok), arch=arch, hidden=hidden, layers=layers, heads=heads, seed=seed,
                         max_positions=max_positions, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         sliding_window=sliding_window)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# Beside a model the command line built: the options it was built with (a rerun leaves it).
MARKER = ".tiny_model.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="qwen2", choices=["qwen2", "llama"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    made = {k: v for k, v in vars(args).items() if k != "out"}
    marker = out / MARKER
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()  # an empty folder made for it: built into
    if out.exists():  # a rerun of the same build is left as it is; anything else is not ours to replace
        try:
            same = json.loads(marker.read_text()) == made
        except (OSError, ValueError):
            same = False
        if not same:
            ap.exit(2, f"--out {out}: exists and is not a tiny model built with these options; choose another --out "
                       f"or move it away\n")
        print(out)
        return
    # Built aside and renamed into place: a build killed midway leaves no half model at --out.
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        build(tmp, arch=args.arch, hidden=args.hidden, layers=args.layers, heads=args.heads, seed=args.seed)
        (tmp / MARKER).write_text(json.dumps(made))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(out)


if __name__ == "__main__":
    main()
