"""Resumable, checksummed HTTP downloads with the standard library only.

Dataset archives are large and clusters drop connections, so a download goes to ``<dest>.part``,
resumes from it with an HTTP Range request, and is renamed onto ``dest`` only once its size and
md5 are verified: ``dest`` is either absent or complete and correct. A dropped connection, a
timeout or a server error (5xx) is retried here, twice, after a pause; what a retry cannot change
(a missing file, a wrong checksum) fails at once, so the workflow never retries a download job.
"""

from __future__ import annotations

import os
import sys
import time
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from dia.errors import DiaError
from dia.io import file_digest
from dia.progress import progress

_CHUNK = 1 << 16
_RETRY_WAITS = (10.0, 60.0)  # seconds before the second and the third try
_LOCAL_PATH_HINT = (
    "check the network and re-run (the download resumes), or fetch the file by hand and point "
    "the dataset's local_path option (datasets.<name>.local_path) at it"
)


def download(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
    hint: str = _LOCAL_PATH_HINT,
) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already passes the given checks.

    ``size`` (bytes) and ``md5`` are verified when given; a partial ``.part`` file left by an
    interrupted run is resumed. Raises :class:`DiaError` on network errors (ending with ``hint``)
    and checksum mismatch.
    """
    dest = Path(dest)
    if dest.exists() and _verified(dest, md5, size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    for wait in (*_RETRY_WAITS, None):
        try:
            expected = _fetch(url, part, size, timeout, dest.name)
            break
        except (URLError, HTTPException, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", None) or exc
            if wait is None or not _transient(exc):
                raise DiaError(f"could not download {url}: {reason}; {hint}") from exc
            print(
                f"download of {url} failed ({reason}); trying again in {wait:g} s", file=sys.stderr
            )
            time.sleep(wait)
    _check_part(part, url, size if size is not None else expected, md5, dest)
    os.replace(part, dest)
    return dest


def _transient(exc: Exception) -> bool:
    """Whether trying again may succeed: anything but an HTTP error the client caused (4xx),
    except a timeout (408) or a rate limit (429)."""
    return not (isinstance(exc, HTTPError) and 400 <= exc.code < 500 and exc.code not in (408, 429))


def _verified(path: Path, md5: str | None, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return md5 is None or file_digest(path, "md5") == md5


def _fetch(url: str, part: Path, size: int | None, timeout: float, name: str) -> int | None:
    """Fill ``part`` from ``url``, resuming when possible; return the announced total size."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if offset and offset == size:
        return size
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # The server cannot serve the requested tail: the .part is not a prefix we can trust.
        part.unlink()
        return _fetch(url, part, size, timeout, name)
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored Range and sends the whole file: restart cleanly
        elif offset and _range_start(response) != offset:
            response.close()
            part.unlink()
            return _fetch(url, part, size, timeout, name)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size
        with (
            open(part, "ab" if offset else "wb") as f,
            progress(
                total, name, initial=offset, unit="B", unit_scale=True, unit_divisor=1024
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    received = part.stat().st_size
    if total is not None and received < total:
        raise ConnectionError(f"the transfer stopped at {received} of {total} bytes")
    return total


def _range_start(response: HTTPResponse) -> int | None:
    """First byte offset of a 206 response (``Content-Range: bytes START-END/TOTAL``)."""
    value = response.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    start = spec.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _check_part(part: Path, url: str, size: int | None, md5: str | None, dest: Path) -> None:
    actual_size = part.stat().st_size
    if size is not None and actual_size < size:
        raise DiaError(
            f"download of {url} stopped at {actual_size} of {size} bytes ({part}); "
            f"re-run to resume it"
        )
    if size is not None and actual_size > size:
        part.unlink()
        raise DiaError(
            f"{dest.name} from {url} has {actual_size} bytes, expected {size}; the partial file "
            f"was deleted, re-run to download it again"
        )
    if md5 is not None:
        actual = file_digest(part, "md5")
        if actual != md5:
            part.unlink()
            raise DiaError(
                f"{dest.name} from {url} has md5 {actual}, expected {md5}; the download was "
                f"deleted: re-run to download it again, or if this persists fetch the file by "
                f"hand and set the dataset's local_path option"
            )
