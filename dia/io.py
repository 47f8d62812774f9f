"""Small file utilities: atomic writes, hashing, JSON and mapped arrays, shared by every stage."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import struct
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dia.errors import DiaError, out_of_space

_CHUNK = 1 << 20
_ZIP_LOCAL_HEADER = 30  # bytes before a zip member's name and extra field
TEMP_SUFFIX = ".dia-tmp"  # the temporary files of atomic writes, and only those, end so
STALE_AFTER = 3600.0  # seconds without a write after which such a file is a killed writer's


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``dest`` and move it onto ``dest`` only on success.

    A crash or an exception leaves ``dest`` untouched (never half-written) and removes the
    temporary file, so a Snakemake output is either complete or absent. A process killed with
    SIGKILL cannot clean up: the next write of ``dest`` (by the job that owns it) removes what
    such a writer left, and :func:`sweep_temps` removes the rest. The file is created with the
    user's umask, so results are as readable as anything else the user writes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*{TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
    tmp_path = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    tmp_path.open("x").close()
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except Exception as exc:
        if not isinstance(exc, DiaError) and _disk_full(exc, dest.parent):
            written = tmp_path.stat().st_size if tmp_path.exists() else 0
            free = _free_bytes(dest.parent)
            raise DiaError(
                f"no space left on the device writing {dest}: it needs more than the {written} "
                f"bytes written before it failed, {free} bytes are free there; free some space "
                f"(or point the results elsewhere) and re-run, finished outputs are kept"
            ) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _disk_full(exc: Exception, directory: Path) -> bool:
    """A failed write on a full file system: the error says so, or a write error without an
    errno (torch's writer reports only "file write failed") with less than a mebibyte left."""
    if out_of_space(exc) is not None:
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(directory).free < _CHUNK
    except OSError:
        return False


def _free_bytes(directory: Path) -> int | str:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return "an unknown number of"


def sweep_temps(
    root: str | os.PathLike[str], *, older_than: float = STALE_AFTER, skip_marked: str = ""
) -> list[Path]:
    """Remove the temporary files of atomic writes under ``root`` that nothing has written to for
    ``older_than`` seconds, i.e. a killed writer's; return them.

    A live write keeps its file fresh, so the jobs of another Snakemake instance in the same
    folder (disjoint targets, or ``--nolock``) keep theirs. Folders holding a file named
    ``skip_marked`` (extracted archives: thousands of images, none of them ours) are not walked.
    """
    deadline = time.time() - older_than
    stale = []
    for folder, dirs, files in os.walk(root):
        if skip_marked and skip_marked in files:
            dirs.clear()
            continue
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < deadline:
                        path.unlink()
                        stale.append(path)
    return stale


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so large archives do not load into memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()


def mapped_npz_array(path: str | os.PathLike[str], name: str) -> np.ndarray:
    """Array ``name`` of an uncompressed ``.npz`` (``np.savez``), memory-mapped copy-on-write.

    ``np.load`` cannot map a member of a zip, so this finds the member's bytes in the file and
    maps them: indexing the result reads only the rows it selects, so a job that trains on the
    normals never holds the test images in memory. The map is private (``mode="c"``): a write
    would stay in this process, never reach the file, and the array is writable, as
    ``torch.from_numpy`` expects. A compressed member is loaded whole.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        with np.load(path, allow_pickle=False) as data:
            return data[name]
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(_ZIP_LOCAL_HEADER)
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + _ZIP_LOCAL_HEADER + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: {name} holds Python objects and cannot be mapped")
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="c", shape=shape, order=order, offset=offset)
