"""Safe, atomic extraction of downloaded dataset archives (.zip, .tar, .tar.gz, .tgz).

Archives come from third parties, so every member is validated before anything is written: no
absolute paths, no ``..``, no links or device files, and intact data (zip CRCs, complete tar and
gzip streams). Extraction goes member by member into a hidden ``.<dest>.partial`` sibling that is
renamed onto ``dest`` only when complete, with a ``.extracted`` marker inside: ``dest`` is either
absent or a complete extraction of the archive.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from dia.errors import DiaError
from dia.io import atomic_path

MARKER = ".extracted"
_CHUNK = 1 << 20
_ZIP_SUFFIXES = (".zip",)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Errors raised while reading a damaged archive (gzip.BadGzipFile is an OSError).
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
# What to do about a bad archive the pipeline downloaded; a user's own archive gets its own advice.
DOWNLOAD_AGAIN = "delete it and re-run to download it again from the official source"


class _ArchiveError(Exception):
    """What is wrong with an archive; the public functions add what to do about it."""


def check_archive(archive: Path, remedy: str = DOWNLOAD_AGAIN) -> list[str]:
    """Validate every member of a .zip / .tar / .tar.gz / .tgz archive before anything is written.

    Returns the member names. Raises :class:`DiaError` naming the archive and the offending entry
    for absolute paths, ``..`` components, links, device files and other special entries, and for
    a corrupt or incomplete archive (zip and gzip CRCs are verified), ending with ``remedy``.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DiaError(f"archive {archive} not found; re-run to download it")
    kind = _kind(archive)
    try:
        if kind == "zip":
            return _check_zip(archive)
        return _check_tar(archive)
    except (*_READ_ERRORS, OSError) as exc:
        raise DiaError(f"{_corrupt(archive, str(exc))}; {remedy}") from exc
    except _ArchiveError as exc:
        raise DiaError(f"{exc}; {remedy}") from None


def extract_archive(archive: Path, dest: Path, remedy: str = DOWNLOAD_AGAIN) -> Path:
    """Extract ``archive`` into directory ``dest`` safely and atomically; return ``dest``.

    A ``dest`` holding the completion marker of this archive (same name and size) is returned as
    is; any other ``dest`` and any leftover ``.partial`` directory of an interrupted run are
    removed and the archive is extracted again. Nothing is written if :func:`check_archive` fails;
    a bad archive's error ends with ``remedy``.
    """
    archive, dest = Path(archive), Path(dest)
    if _complete(dest, archive):
        return dest
    check_archive(archive, remedy)
    partial = dest.parent / f".{dest.name}.partial"
    _remove(partial)
    _remove(dest)
    try:
        partial.mkdir(parents=True)
        try:
            if _kind(archive) == "zip":
                _extract_zip(archive, partial)
            else:
                _extract_tar(archive, partial)
        except _READ_ERRORS as exc:
            raise DiaError(f"{_corrupt(archive, str(exc))}; {remedy}") from exc
        except _ArchiveError as exc:
            raise DiaError(f"{exc}; {remedy}") from None
        except OSError as exc:
            raise DiaError(
                f"could not extract {archive} into {partial}: {exc}; check free disk space and "
                f"write permission, then re-run"
            ) from exc
        with atomic_path(partial / MARKER) as tmp:
            tmp.write_text(_stamp(archive))
        os.replace(partial, dest)
    except BaseException:
        _remove(partial)
        raise
    return dest


def _kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(_ZIP_SUFFIXES):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    supported = ", ".join(_ZIP_SUFFIXES + _TAR_SUFFIXES)
    raise DiaError(
        f"cannot extract {archive}: unsupported archive type; supported suffixes are {supported}"
    )


def _corrupt(archive: Path, detail: str) -> _ArchiveError:
    return _ArchiveError(f"archive {archive} is corrupt or incomplete ({detail})")


def _unsafe(archive: Path, name: str, reason: str) -> _ArchiveError:
    return _ArchiveError(
        f"archive {archive} has an unsafe entry {name!r} ({reason}); nothing was extracted"
    )


def _parts(archive: Path, name: str, is_dir: bool) -> tuple[str, ...]:
    """Path components of a member name, backslashes counting as separators; rejects escapes."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise _unsafe(archive, name, "absolute path")
    parts = tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p != ".")
    if ".." in parts:
        raise _unsafe(archive, name, "'..' path component")
    if not parts and not is_dir:
        raise _unsafe(archive, name, "file without a name")
    return parts


def _check_zip(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _parts(archive, info.filename, info.is_dir())
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _unsafe(archive, info.filename, "symbolic link")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _unsafe(archive, info.filename, "not a regular file or directory")
        try:
            bad = zf.testzip()
        except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
            raise DiaError(
                f"archive {archive} cannot be read by Python's zipfile ({exc}); extract it with "
                f"another tool and set the dataset's local_path to the extracted folder"
            ) from exc
        if bad is not None:
            raise _corrupt(archive, f"bad CRC in {bad!r}")
        return [info.filename for info in infos]


def _check_tar(archive: Path) -> list[str]:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _parts(archive, member.name, member.isdir())
            if member.issym() or member.islnk():
                kind = "symbolic link" if member.issym() else "hard link"
                raise _unsafe(archive, member.name, f"{kind} to {member.linkname!r}")
            if not (member.isreg() or member.isdir()):
                raise _unsafe(archive, member.name, "device, fifo or other special file")
        # Listing already reads up to the end-of-archive marker (tarfile fails on missing member
        # data); read on to the end so a gzip stream's CRC and length are verified too.
        while tar.fileobj.read(_CHUNK):
            pass
        return [member.name for member in members]


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = root.joinpath(*_parts(archive, info.filename, info.is_dir()))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            target = root.joinpath(*_parts(archive, member.name, member.isdir()))
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)


def _stamp(archive: Path) -> str:
    return f"{archive.name}\n{archive.stat().st_size}\n"


def _complete(dest: Path, archive: Path) -> bool:
    marker = dest / MARKER
    return archive.is_file() and marker.is_file() and marker.read_text() == _stamp(archive)


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree if present, never following links."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
