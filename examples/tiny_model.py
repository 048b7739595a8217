"""Build a tiny, randomly initialised chat model that loads like a real checkpoint.

    python examples/tiny_model.py --out runs/tiny-student --arch qwen2 --seed 0

The builder is `stages/tiny_model.py` (the tests and benchmarks import it from there); this
script runs it, and `import tiny_model` from examples/ gets the same functions.
"""

from __future__ import annotations

import sys
from pathlib import Path

# From a checkout without `pip install -e .`, the repository root holds the stages package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.tiny_model import CHAT_TEMPLATE, CORPUS, SPECIALS, build, build_tokenizer, main  # noqa: E402,F401

if __name__ == "__main__":
    main()
