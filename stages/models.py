"""Loading models and tokenizers, safely, from a local directory or a hub name.

Safe by default: `trust_remote_code` only when the user passes --trust-remote-code, weights
only from safetensors (`use_safetensors=True`: a pickle checkpoint is refused). A local
directory is checked file by file *before* anything is loaded, and the error lists what is
missing and how to get it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from schemas import InputError

# A hub id: "name" or "org/name" with the characters the hub allows.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def check_model(name: str, option: str, *, need_weights: bool = True) -> None:
    """Refuse a model argument that cannot load, before loading anything."""
    p = Path(name)
    if p.exists():
        if not p.is_dir():
            raise InputError(f"{option} {name}: is a file; give the model's directory (with config.json)")
        missing = []
        if not (p / "config.json").is_file():
            missing.append("config.json")
        if need_weights:
            weights = list(p.glob("*.safetensors")) + list(p.glob("*.safetensors.index.json"))
            if not weights:
                pickles = [f.name for f in p.glob("*.bin")] + [f.name for f in p.glob("*.pt")]
                hint = (
                    f" (found pickle weights {', '.join(pickles)}: paced loads only safetensors; "
                    f"convert them with `model.save_pretrained(dir, safe_serialization=True)`)"
                    if pickles
                    else ""
                )
                missing.append("*.safetensors weights" + hint)
        if not any((p / f).exists() for f in _TOKENIZER_FILES):
            missing.append("a tokenizer (tokenizer.json or tokenizer_config.json; save it with `tokenizer.save_pretrained(dir)`)")
        if missing:
            raise InputError(f"{option} {name}: the model directory lacks {'; '.join(missing)}")
        damaged = [f"{f.name} {why}" for f in sorted(p.glob("*.json")) if (why := _json_problem(f))]
        if need_weights:
            damaged += [f"{f.name} {why}" for f in sorted(p.glob("*.safetensors")) if (why := _safetensors_problem(f))]
            damaged += _index_problems(p)
        if damaged:
            raise InputError(
                f"{option} {name}: {'; '.join(damaged)}; the model directory is damaged (an interrupted "
                f"download or copy?): download or save the model again (`model.save_pretrained(dir)`, "
                f"`tokenizer.save_pretrained(dir)`)"
            )
        return
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise InputError(
            f"{option} {name}: no such directory, and not a hub model id such as Qwen/Qwen3-1.7B; "
            f"check the path"
        )


def _json_problem(f: Path) -> str | None:
    """Why a model's JSON file (config, tokenizer, index) cannot be read, or None."""
    try:
        obj = json.loads(f.read_bytes())
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or not UTF-8
        return f"is not valid JSON ({e})"
    return None if isinstance(obj, dict) else f"holds a JSON {type(obj).__name__}, not an object"


# safetensors refuses a header above 100 MB (its MAX_HEADER_SIZE); so does this check.
_MAX_SAFETENSORS_HEADER = 100_000_000


def _safetensors_problem(f: Path) -> str | None:
    """Why a .safetensors file cannot load, from its header alone, or None.

    The format: an 8-byte little-endian header length n, n bytes of JSON mapping each tensor to
    its dtype, shape and [begin, end) byte offsets in the data that follows, which must cover
    the rest of the file exactly. Checks the same things safetensors does when it opens the
    file, without reading the tensors (a 16 GB checkpoint costs a few kilobytes here)."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0:
                return f"has {size} bytes, too few for a safetensors header (empty or truncated)"
            if n > min(size - 8, _MAX_SAFETENSORS_HEADER):
                return f"is not a safetensors file or is truncated (its header claims {n:,} bytes, the file has {size:,})"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        return f"is not a readable safetensors file ({e})"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a JSON object)"
    ends = []
    for key, tensor in header.items():
        if key == "__metadata__":
            continue
        try:
            ends.append(int(tensor["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            return f"is not a safetensors file (tensor {key!r} has no data_offsets in its header)"
    data = size - 8 - n
    if ends and max(ends) != data:
        return f"is truncated or corrupt (its tensors span {max(ends):,} bytes of data, the file holds {data:,})"
    return None


def _index_problems(p: Path) -> list[str]:
    """Shards that a sharded checkpoint's index names but the directory lacks."""
    out = []
    for index in sorted(p.glob("*.safetensors.index.json")):
        try:
            files = set((json.loads(index.read_bytes()).get("weight_map") or {}).values())
        except (OSError, ValueError, AttributeError):
            continue  # reported by the JSON check
        absent = sorted(str(x) for x in files if not (p / str(x)).is_file())
        if absent:
            out.append(f"{index.name} names {', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''}, which the directory lacks")
    return out


def model_fingerprint(name: str) -> str:
    """A quick fingerprint of a model: its config, and size plus head and tail bytes of each
    weight file (hashing every byte of a 16 GB checkpoint on each resume would cost minutes).
    A hub id fingerprints as itself (its revision is resolved by the hub cache)."""
    p = Path(name)
    if not p.is_dir():
        return f"hub:{name}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.suffix not in (".json", ".safetensors", ".model", ".txt", ".jinja"):
            continue
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return "quick-sha256:" + h.hexdigest()


# model_digest reads this many blocks of each weight file, evenly spaced through it.
_DIGEST_BLOCKS, _DIGEST_BLOCK = 64, 64 << 10


def model_digest(name: str) -> str | None:
    """A stronger look at a model's weights than `model_fingerprint` (which keys jobs and reads
    each file's first and last MiB): 64 blocks of 64 KiB spread through every weight file, so a
    model replaced in place by one of the same size (another fine-tune, which changes every
    layer) is told apart: any changed stretch longer than the gaps between the blocks (1/63 of
    the file less 64 KiB) is seen. A job records it and refuses to resume with other weights.
    None for a hub id."""
    p = Path(name)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            for i in range(_DIGEST_BLOCKS):
                fh.seek(max(0, size - _DIGEST_BLOCK) * i // max(1, _DIGEST_BLOCKS - 1))
                h.update(fh.read(_DIGEST_BLOCK))
    return "sampled-sha256:" + h.hexdigest()


def device_problems(device: str) -> list[str]:
    """--device's problem with its fix, before any model loads: auto, cpu, cuda or cuda:N of a
    GPU torch can use here (or mps where torch has it)."""
    import torch

    m = re.fullmatch(r"(auto|cpu|cuda|mps)(?::(\d+))?", device)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        return [f"--device {device}: use auto, cpu, cuda or cuda:N"]
    kind, index = m.group(1), m.group(2)
    if kind == "mps" and not torch.backends.mps.is_available():
        return [f"--device {device}: this torch ({torch.__version__}) has no usable MPS device here; use --device cpu or auto"]
    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            return [f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU on this machine; use --device cpu or auto"]
        if index is not None and int(index) >= n:
            return [f"--device {device}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}"]
    return []


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


DTYPES = ("auto", "float32", "bfloat16", "float16")


def dtype_problems(dtype: str) -> list[str]:
    """--dtype's problem with its fix, before anything loads."""
    return [] if dtype in DTYPES else [f"--dtype {dtype}: use {', '.join(DTYPES[:-1])} or {DTYPES[-1]}"]


def resolve_dtype(dtype: str, device: str):
    import torch

    for problem in dtype_problems(dtype):
        raise InputError(problem)
    if dtype == "auto":
        # bf16 on GPUs (what these models are trained in); float32 on CPU, where bf16 matmuls
        # are emulated on many machines and sampling numerics matter more than speed.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _load_errors() -> tuple[type[BaseException], ...]:
    """What transformers raises for files it cannot load: damaged or missing ones, an unknown
    architecture, a config.json whose fields have the wrong types (huggingface_hub's strict
    dataclasses), a hub that cannot be reached."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub: no strict configs
        return (OSError, ValueError, KeyError, TypeError)
    return (OSError, ValueError, KeyError, TypeError, StrictDataclassError)


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except _load_errors() as e:  # damaged files, a config.json of wrong types, no hub
        raise InputError(f"model {name}: transformers could not load its tokenizer ({_load_failure(e)})") from e
    if tok.pad_token_id is None:
        # Generation pads finished rows; the end-of-sequence token is the usual stand-in.
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one on stderr
    device = resolve_device(device)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=resolve_dtype(dtype, device),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            output_loading_info=True,
        )
    except (RuntimeError, *_load_errors()) as e:  # damaged or mismatched files, unknown architecture
        if any(s in str(e).lower() for s in ("out of memory", "can't allocate", "cannot allocate")):
            raise  # the machine's limit, not the model's files
        raise InputError(f"model {name}: transformers could not load it ({_load_failure(e)})") from e
    _check_loaded(name, info)
    return model.to(device).eval()


def _check_loaded(name: str, info: dict[str, Any]) -> None:
    """transformers fills a weight the files lack with random values, and only warns: refuse
    that (a teacher or student with a random layer gives wrong results with exit 0). Weights the
    files hold that the model does not use are named on stderr, not refused: some checkpoints on
    the hub carry harmless extras (old rotary buffers)."""
    def shown(keys: Any) -> str:
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in keys)
        return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    missing, mismatched = info.get("missing_keys") or [], info.get("mismatched_keys") or []
    if missing or mismatched:
        what = ([f"missing from its weights files: {shown(missing)}"] if missing else []) + (
            [f"of another shape in its weights files: {shown(mismatched)}"] if mismatched else [])
        raise InputError(
            f"model {name}: its weights do not match its config.json ({'; '.join(what)}); transformers would "
            f"fill them with random values: restore the config it was saved with, or download the model again"
        )
    unused = info.get("unexpected_keys") or []
    if unused:
        from stages.common import console

        console.print(f"note: model {name}: its weights files hold {len(unused)} weight(s) the model does not use "
                      f"({shown(unused)}); if config.json is not the one it was saved with, results will be wrong")


def _load_failure(e: Exception) -> str:
    """What went wrong loading a model, and the fix, from transformers' error."""
    import transformers

    text = str(e).strip()
    first = text.splitlines()[0][:400] if text else ""
    low = text.lower()
    if "trust_remote_code" in low:
        fix = "it ships its own code: pass --trust-remote-code if you trust it"
    elif "does not appear to have a file named" in low and "safetensors" in low:
        fix = ("it has no safetensors weights here (paced loads only those): download them, or convert pickle weights "
               "with `model.save_pretrained(dir, safe_serialization=True)`")
    elif "connect" in low or "offline" in low or ("resolve" in low and "huggingface" in low):
        fix = ("it is neither a local directory nor in the local hub cache, and the hub cannot be reached: download it "
               "first or give its directory")
    elif "size mismatch" in low or "shape" in low or "mismatched_sizes" in low:
        fix = "its config.json does not match its weights (model.safetensors): restore the config it was saved with"
    elif "model type" in low or "architecture" in low:
        fix = f"transformers {transformers.__version__} does not know its architecture: upgrade transformers, or check config.json"
    else:
        fix = "its files may be damaged or incomplete: download or save it again"
    return f"{type(e).__name__}: {first}; {fix}"


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the generation config's (Qwen lists two) and the tokenizer's."""
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for source in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i not in ids:
                ids.append(int(i))
    if not ids:
        raise InputError("the model and tokenizer define no end-of-sequence token; set eos_token in the tokenizer")
    return ids


def max_context(model_dir: str) -> int | None:
    """The model's context length from its config, read without loading the model."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    return getattr(cfg, "max_position_embeddings", None)


def vocab_rows(name: str, trust_remote_code: bool = False) -> int | None:
    """The model's embedding rows (its config's vocab_size), read without loading the model; it
    may exceed the tokenizer's vocabulary (Qwen pads it). None when the config does not say."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    return getattr(cfg.get_text_config(), "vocab_size", None)


def tokenizer_signature(tokenizer: Any) -> dict[str, Any]:
    """What must agree between teacher and student tokenizers: vocabulary, special tokens and
    chat template. The model's embedding size is left out on purpose: Qwen pads its
    embedding matrix (151,936 or 152,064 rows) beyond the tokenizer's vocabulary."""
    vocab = tokenizer.get_vocab()
    body = json.dumps(sorted(vocab.items()), ensure_ascii=False)
    template = getattr(tokenizer, "chat_template", None) or ""
    return {
        "vocab_size": len(tokenizer),
        "vocab_sha256": hashlib.sha256(body.encode()).hexdigest(),
        # The tokens that shape what is trained: where a response ends and what opens a prompt.
        # (unk and pad differ between tokenizer classes of one vocabulary and never matter here.)
        "special_tokens": {k: str(getattr(tokenizer, k, None)) for k in ("bos_token", "eos_token")},
        "chat_template_sha256": hashlib.sha256(str(template).encode()).hexdigest(),
    }


def check_same_tokenizer(a: dict[str, Any], b: dict[str, Any], a_name: str, b_name: str) -> None:
    """Refuse two tokenizers that would make top-k ids mean different tokens."""
    problems = []
    if a["vocab_sha256"] != b["vocab_sha256"]:
        problems.append(f"vocabularies differ ({a['vocab_size']:,} vs {b['vocab_size']:,} tokens)")
    if a["special_tokens"] != b["special_tokens"]:
        diff = {k for k in set(a["special_tokens"]) | set(b["special_tokens"]) if a["special_tokens"].get(k) != b["special_tokens"].get(k)}
        problems.append("special tokens differ: " + ", ".join(
            f"{k} {a['special_tokens'].get(k)!r} vs {b['special_tokens'].get(k)!r}" for k in sorted(diff)))
    if a["chat_template_sha256"] != b["chat_template_sha256"]:
        problems.append("chat templates differ")
    if problems:
        raise InputError(
            f"{a_name} and {b_name} do not share a tokenizer: {'; '.join(problems)}. Distillation "
            f"on stored top-k ids needs the same tokenizer; use a teacher and student of one "
            f"model family (e.g. Qwen3-8B and Qwen3-1.7B)"
        )


def add_lora(model, r: int, alpha: float | None):
    """`model` with LoRA adapters of rank `r` (alpha default 2r) on every linear layer (peft)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)
