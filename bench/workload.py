"""The synthetic workload the distillation sections share: a BPE tokenizer with a realistic
vocabulary, a student and a teacher of one architecture on it, problems, and teacher sequences.

A few hundred tokens (the test fixtures' vocabulary) would hide the cost that dominates real
distillation, the [positions, vocabulary] output layer, so the tokenizer here is byte-level
BPE trained on generated text to 32,000 tokens (Llama-2's and Mistral's size; Qwen's is
151,936) in the full run, 8,000 in `--quick`. The text is sentences of pseudo-words drawn with
Zipf frequencies, with some arithmetic, so BPE learns whole frequent words and pieces of rare
ones, as it does on real text.

Models come from `stages/tiny_model.build` (Qwen2 architecture, untied embeddings, head
dimension 64). A random teacher is almost uniform over the vocabulary (entropy ~ log V), which
no trained model is, and which would make the top-k measurements meaningless; so the teacher's
output layer is scaled until its mean next-token entropy on the bench sequences is
`TEACHER_ENTROPY` nats (trained LMs on their own samples are typically 0.3-2 nats). Timings
do not depend on this; storage and truncation figures do, and the table says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from stages import tiny_model

TEACHER_ENTROPY = 1.5  # nats per token, mean over the bench's response positions


@dataclass(frozen=True)
class Size:
    name: str
    vocab: int
    student: tuple[int, int, int]  # hidden, layers, heads
    teacher: tuple[int, int, int]
    batch: int                      # sequences per optimizer step (one micro-batch)
    response: int                   # response tokens per sequence (EOS included)
    steps: int                      # timed optimizer steps per distill / TRL run
    runs: int                       # repetitions per figure, after a warm-up
    corpus: int                     # sentences of BPE training text
    sequences: int                  # problems (one teacher response each) in the workload


FULL = Size("full", 32_000, (256, 4, 4), (512, 10, 8), batch=8, response=224, steps=2, runs=3, corpus=30_000, sequences=32)
QUICK = Size("quick", 8_000, (128, 2, 2), (256, 4, 4), batch=4, response=96, steps=2, runs=2, corpus=8_000, sequences=16)


def main(ctx) -> "Workload":
    """The workload of sections distill, storage and floor for this invocation."""
    return build(QUICK if ctx.quick else FULL, ctx.work)


@dataclass(frozen=True)
class Workload:
    size: Size
    dir: Path
    student: Path
    teacher: Path
    problems: Path       # problems.parquet: problem_id, prompt, answer, reference (null)
    sequences: Path      # rollouts.parquet: one teacher response per problem, `response` tokens
    vocab: int           # len(tokenizer) = the models' output rows
    student_params: int
    teacher_params: int
    prompt_tokens: float  # mean prompt length with the chat template
    teacher_entropy: float

    def describe(self) -> str:
        s = self.size
        return (
            f"byte-level BPE vocabulary {self.vocab:,}; student Qwen2 {self.student_params / 1e6:.1f} M parameters "
            f"(hidden {s.student[0]}, {s.student[1]} layers), teacher Qwen2 {self.teacher_params / 1e6:.1f} M "
            f"(hidden {s.teacher[0]}, {s.teacher[1]} layers), untied embeddings, float32 on CPU; "
            f"sequences of {self.prompt_tokens:.0f} prompt + {s.response} response tokens"
        )


class TextGen:
    """Sentences of pseudo-words with Zipf frequencies: text that BPE tokenizes like prose."""

    ONSETS = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "br", "ch", "st", "th", "tr", "pl", "gr", "sh", "qu"]
    VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
    CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "x"]

    def __init__(self, seed: int = 0, lexicon: int = 40_000):
        self.rng = np.random.default_rng(seed)
        r = self.rng
        words = []
        for _ in range(lexicon):
            n = int(r.integers(1, 4))
            words.append("".join(self.ONSETS[r.integers(len(self.ONSETS))] + self.VOWELS[r.integers(len(self.VOWELS))]
                                 + self.CODAS[r.integers(len(self.CODAS))] for _ in range(n)))
        self.words = list(dict.fromkeys(words))
        p = 1.0 / np.arange(1, len(self.words) + 1) ** 1.05
        self.p = p / p.sum()

    def sentences(self, n: int, words: tuple[int, int] = (4, 25)) -> list[str]:
        r = self.rng
        lens = r.integers(words[0], words[1], size=n)
        draws = r.choice(len(self.words), size=int(lens.sum()), p=self.p)
        out, i = [], 0
        for length in lens:
            s = " ".join(self.words[j] for j in draws[i : i + length])
            i += length
            if r.random() < 0.3:
                a, b = int(r.integers(0, 10_000)), int(r.integers(0, 1_000))
                s += f" {a} + {b} = \\boxed{{{a + b}}}"
            out.append(s.capitalize() + str(r.choice([".", "?", "!", ":"])))
        return out


def build_tokenizer(vocab: int, sentences: list[str]):
    """tiny_model's byte-level BPE and ChatML template, trained to `vocab` tokens on `sentences`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=tiny_model.SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = tiny_model.CHAT_TEMPLATE
    return fast


def write_problems(path: Path, ids: list[str], prompts: list[str]) -> None:
    import polars as pl

    pl.DataFrame(
        {"problem_id": ids, "prompt": prompts, "answer": ["0"] * len(ids), "reference": [None] * len(ids)},
        schema={"problem_id": pl.String, "prompt": pl.String, "answer": pl.String, "reference": pl.String},
    ).write_parquet(path)


def write_sequences(path: Path, ids: list[str], responses: list[list[int]], tokenizer, model: Path) -> None:
    """A rollouts artifact of given responses, written as any tool could (no paced metadata)."""
    import pyarrow.parquet as pq

    import schemas

    cols = {
        "problem_id": ids,
        "sample_index": [0] * len(ids),
        "completion": [tokenizer.decode(r, skip_special_tokens=True) for r in responses],
        "completion_token_ids": responses,
        "finish_reason": ["stop"] * len(ids),
        "model": [str(model)] * len(ids),
    }
    pq.write_table(schemas.table_from_columns(cols, schemas.ROLLOUTS), path)


def subset(sequences: Path, n: int, out: Path) -> Path:
    """The first n rows of a sequences file, schema kept."""
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(sequences).slice(0, n), out)
    return out


def token_stream(tokenizer, gen: TextGen, n: int) -> list[int]:
    """At least n token ids of generated prose (no special tokens)."""
    out: list[int] = []
    while len(out) < n:
        text = " ".join(gen.sentences(max(64, (n - len(out)) // 12)))
        out += tokenizer(text, add_special_tokens=False)["input_ids"]
    return out[:n]


@lru_cache(maxsize=None)
def build(size: Size, root: Path) -> Workload:
    """Tokenizer, student, teacher, `size.sequences` problems with one teacher response each."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    d = Path(root) / f"workload-{size.name}"
    sequences = size.sequences
    d.mkdir(parents=True, exist_ok=True)
    gen = TextGen(seed=0)
    tokenizer = build_tokenizer(size.vocab, gen.sentences(size.corpus))
    (h, layers, heads) = size.student
    student = tiny_model.build(d / "student", arch="qwen2", hidden=h, layers=layers, heads=heads, seed=0, tokenizer=tokenizer)
    (h, layers, heads) = size.teacher
    teacher = tiny_model.build(d / "teacher", arch="qwen2", hidden=h, layers=layers, heads=heads, seed=1, tokenizer=tokenizer)

    ids = [f"q{i:05d}" for i in range(sequences)]
    prompts = gen.sentences(sequences, words=(8, 14))
    stream = token_stream(tokenizer, gen, sequences * (size.response - 1))
    eos = tokenizer.eos_token_id
    responses = [stream[i * (size.response - 1) : (i + 1) * (size.response - 1)] + [eos] for i in range(sequences)]
    write_problems(d / "problems.parquet", ids, prompts)
    write_sequences(d / "sequences.parquet", ids, responses, tokenizer, teacher)

    from stages import prompts as P

    prompt_ids = P.encode_prompts(tokenizer, [{"prompt": p} for p in prompts])
    entropy = sharpen_teacher(teacher, prompt_ids[:4], responses[:4], TEACHER_ENTROPY)
    from transformers import AutoConfig, AutoModelForCausalLM

    def params(path: Path) -> int:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
        return sum(p.numel() for p in model.parameters())

    return Workload(
        size=size, dir=d, student=student, teacher=teacher, problems=d / "problems.parquet",
        sequences=d / "sequences.parquet", vocab=len(tokenizer), student_params=params(student),
        teacher_params=params(teacher), prompt_tokens=float(np.mean([len(p) for p in prompt_ids])),
        teacher_entropy=entropy,
    )


def sharpen_teacher(path: Path, prompt_ids: list[list[int]], responses: list[list[int]], target: float) -> float:
    """Scale the teacher's output layer so its mean entropy at the response positions is `target`."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.inference_mode():
        hidden = torch.cat([
            model.get_decoder()(input_ids=torch.tensor([p + r])).last_hidden_state[0, len(p) - 1 : len(p) + len(r) - 1]
            for p, r in zip(prompt_ids, responses)
        ])
        logits = model.get_output_embeddings()(hidden).float()

        def entropy(scale: float) -> float:
            lp = torch.log_softmax(logits * scale, -1)
            return float(-(lp.exp() * lp).sum(-1).mean())

        lo, hi = 0.0, 8.0  # log scale; entropy falls as the scale grows
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if entropy(float(np.exp(mid))) > target else (lo, mid)
        scale = float(np.exp((lo + hi) / 2))
        model.get_output_embeddings().weight.mul_(scale)
    model.save_pretrained(path)
    return entropy(scale)
