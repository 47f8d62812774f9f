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
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dia.errors import DiaError, out_of_space

_CHUNK = 1 << 20
_ZIP_LOCAL_HEADER = 30  # bytes before a zip member's name and extra field
TEMP_SUFFIX = ".dia-tmp"  # the temporary files of atomic writes, and only those, end so


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
            free = shutil.disk_usage(dest.parent).free
            raise DiaError(
                f"no space left on the device writing {dest}: it needs more than the {written} "
                f"bytes written before it failed, {free} bytes are free there; free some space "
                f"(or point the results elsewhere) and re-run, finished outputs are kept"
            ) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _disk_full(exc: Exception, directory: Path) -> bool:
    """A failed write on a full file system: the error says so, or (torch's writer reports only
    "file write failed") the file system has less than a mebibyte left."""
    return out_of_space(exc) is not None or shutil.disk_usage(directory).free < _CHUNK


def sweep_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that killed atomic writes left under ``root``; return them.

    Only safe while no job writes under ``root``: the workflow calls it once before its jobs
    start, holding its lock on the working directory.
    """
    root = Path(root)
    stale = [p for p in root.rglob(f".*{TEMP_SUFFIX}") if p.is_file()] if root.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
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
    """Array ``name`` of an uncompressed ``.npz`` (``np.savez``), memory-mapped read-only.

    ``np.load`` cannot map a member of a zip, so this finds the member's bytes in the file and
    maps them: indexing the result reads only the rows it selects, so a job that trains on the
    normals never holds the test images in memory. A compressed member is loaded whole.
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
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset)
