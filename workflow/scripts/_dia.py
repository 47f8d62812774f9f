"""Shared start of every rule script.

Puts this checkout on ``sys.path`` (conda jobs drop PYTHONPATH and the env files never install the
project, so this is how ``dia`` is found with and without ``--use-conda``), sends all output to the
rule's log, and ends every failure with one line, on the console and in the log, and exit status
1: a :class:`dia.errors.DiaError` (input the user can correct) as its message; a full disk as what
to free; any other exception (a bug or an environment fault) as its type and first line, with its
traceback in the log above that line.

Snakemake deletes a job's log before it retries the job, so every attempt is also written to
``<log>.attempts``; the next attempt starts its log with the earlier ones, each under an
``=== attempt N`` header, and a successful attempt removes that file.
"""

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dia.errors import DiaError, one_line, out_of_space  # noqa: E402


def optional_input(snakemake, name: str) -> Path | None:
    """A named input that only some jobs of a rule have (dissolve cache, official repository)."""
    path = snakemake.input.get(name)
    return Path(path) if path else None


ATTEMPT = "=== attempt"


class _Tee:
    """A text stream writing to several files (the log and its attempt history)."""

    def __init__(self, *files: TextIO) -> None:
        self.files = files

    def write(self, text: str) -> int:
        for f in self.files:
            f.write(text)
        return len(text)

    def flush(self) -> None:
        for f in self.files:
            f.flush()

    def __getattr__(self, name: str):
        return getattr(self.files[0], name)  # encoding, fileno, isatty: the log's


def _describe(exc: Exception, log_path: Path) -> str:
    """The one line a failure ends with."""
    if isinstance(exc, DiaError):
        return str(exc)
    full = out_of_space(exc)
    if full is not None:
        where = full.filename or "the results"
        return f"no space left on the device writing {where}; free some space and re-run"
    return (
        f"unexpected {type(exc).__name__}: {one_line(exc)} (a bug or an environment fault; "
        f"the traceback is in {log_path})"
    )


def run(snakemake, main: Callable[[], None]) -> None:
    console = sys.__stderr__
    log_path = Path(snakemake.log[0])
    history = log_path.with_name(log_path.name + ".attempts")
    earlier = history.read_text() if history.exists() else ""
    attempt = sum(line.startswith(ATTEMPT) for line in earlier.splitlines()) + 1
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(log_path, "w", buffering=1) as log, open(history, "a", buffering=1) as kept:
        log.write(earlier)
        stream = _Tee(log, kept)
        stream.write(f"{ATTEMPT} {attempt}, started {started} ===\n")
        sys.stdout = sys.stderr = stream
        try:
            main()
        except Exception as exc:
            if not isinstance(exc, DiaError):
                traceback.print_exc(file=stream)
            message = f"error: {_describe(exc, log_path)}"
            print(message, file=stream)
            print(f"[{snakemake.rule}] {message}", file=console)
            sys.exit(1)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    history.unlink()
