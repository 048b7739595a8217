"""Run several `paced` commands in one process: the same commands, parsed and validated as the
`paced` command line does, but Python, torch and transformers are imported once.

Each line of FILE (or stdin) is one command's arguments as a shell would split them, without the
leading `paced`; blank lines and lines starting with # are skipped. The commands run in order;
the first that fails stops the batch, and this script exits with its exit code (2 for bad
input, as `paced`). Every command is resumable as on its own, so a batch rerun after an
interruption picks up where it stopped.

    printf '%s\\n' "eval --model m1 --problems t.parquet --out e1" \\
                  "eval --model m2 --problems t.parquet --out e2" | python examples/paced_many.py

examples/reproduce.sh evaluates every budget of a seed this way: a tiny model's greedy
evaluation takes about 3 s, and starting `paced` about 8 s more (importing torch and a model
class), so 19 evaluations in one process take a third of the time.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", type=Path, help="one command per line (default: stdin)")
    args = ap.parse_args()
    text = args.file.read_text() if args.file is not None else sys.stdin.read()
    commands = [shlex.split(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    from paced_cli import app, exit_code

    for i, argv in enumerate(commands, 1):
        try:
            app(argv, prog_name="paced")
        except SystemExit as e:  # typer ends every command with sys.exit(code)
            code = exit_code(e)
            if code != 0:
                print(f"paced_many.py: command {i} of {len(commands)} failed (exit {code}): paced {shlex.join(argv)}",
                      file=sys.stderr)
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
