"""User-facing errors.

Every problem a user can fix (bad config key, missing file, checksum mismatch, corrupt data) is
raised as :class:`DiaError` with a one-line message naming the culprit and what to do. Entry points
print it as a single line and exit non-zero, without a traceback.
"""

from __future__ import annotations


class DiaError(Exception):
    """An error caused by input the user can correct; its message is shown as one line."""
