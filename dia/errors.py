"""User-facing errors.

Every problem a user can fix (bad config key, missing file, checksum mismatch, corrupt data) is
raised as :class:`DiaError` with a one-line message naming the culprit and what to do. Entry points
print it as a single line and exit non-zero, without a traceback.
"""

from __future__ import annotations

import errno


class DiaError(Exception):
    """An error caused by input the user can correct; its message is shown as one line."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for an error that
    names a file and wraps a library's multi-line explanation."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def out_of_space(exc: BaseException) -> OSError | None:
    """The full-disk or exhausted-quota error ``exc`` is, or was raised from; None if none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        current = current.__cause__ or current.__context__
    return None
