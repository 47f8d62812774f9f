"""Progress bars that read well both in a terminal and in a job's log file.

In a terminal a bar redraws in place. A log file (every Snakemake job's stderr) would collect
those redraws as one endless line of carriage returns, so there a line is written at the first
update :data:`LOG_INTERVAL` seconds or more after the previous one: step/total, rate, elapsed
time, ETA and the loss where the loop sets one (``tail -f`` shows the job advancing).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines in a log


class _Lines:
    """A stream that turns tqdm's carriage-return redraws into separate lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for part in text.split("\r"):
            line = part.rstrip("\n")
            if line.strip():
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """A bar whose postfix (the loss, set at every step) waits for the next timed line instead
    of printing one of its own."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def progress(total: int | None, desc: str, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr: redrawn in a terminal, one line per ``LOG_INTERVAL`` in a log."""
    stream = sys.stderr
    if stream.isatty():
        return tqdm(total=total, desc=desc, file=stream, dynamic_ncols=True, **kwargs)
    kwargs.pop("leave", None)  # a log keeps every bar's final line, nested ones included
    return _LogBar(
        total=total,
        desc=desc,
        file=_Lines(stream),
        mininterval=LOG_INTERVAL,
        # no forced redraws from tqdm's monitor thread: each would add a line between the timed
        # ones (seen in a 30 s-per-step log as pairs of lines a few seconds apart)
        maxinterval=math.inf,
        ncols=100,
        ascii=True,
        **kwargs,
    )


@contextlib.contextmanager
def library_bars() -> Iterator[None]:
    """Split the redraws of a library's own tqdm bar (which we cannot configure, e.g. the
    diffusion package's sampling loop) into lines when stderr is a log."""
    if sys.stderr.isatty():
        yield
        return
    with contextlib.redirect_stderr(_Lines(sys.stderr)):  # type: ignore[type-var]
        yield
