"""Shared start of every rule script.

Puts this checkout on ``sys.path`` (conda jobs drop PYTHONPATH and the env files never install the
project, so this is how ``dia`` is found with and without ``--use-conda``), sends all output to the
rule's log, and turns a :class:`dia.errors.DiaError` into one line on the console and in the log
with exit status 1 instead of a traceback.
"""

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dia.errors import DiaError  # noqa: E402


def optional_input(snakemake, name: str) -> Path | None:
    """A named input that only some jobs of a rule have (dissolve cache, official repository)."""
    path = snakemake.input.get(name)
    return Path(path) if path else None


def run(snakemake, main: Callable[[], None]) -> None:
    console = sys.__stderr__
    with open(snakemake.log[0], "w", buffering=1) as log:
        sys.stdout = sys.stderr = log
        try:
            main()
        except DiaError as exc:
            message = f"error: {exc}"
            print(message, file=log)
            print(f"[{snakemake.rule}] {message}", file=console)
            sys.exit(1)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
