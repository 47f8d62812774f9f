"""check_archive() / extract_archive(): round trips, malicious entries, corruption, resumption."""

from __future__ import annotations

import io
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from dia.data.archive import MARKER, check_archive, extract_archive
from dia.errors import DiaError

FILES = {
    "data/COVID/Covid (1).png": b"\x89PNG covid one",
    "data/COVID/Covid (2).png": b"\x89PNG covid two",
    "data/Non-COVID/Non-Covid (1).png": b"\x89PNG normal",
    "data/metadata.csv": b"name,label\nCovid (1).png,1\n",
    "README.txt": b"top level",
}


def make_zip(path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in dirs:
            zf.writestr(zipfile.ZipInfo(name), b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def tar_entry(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != MARKER
    }


def partial_of(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial"


def assert_nothing_written(dest: Path) -> None:
    assert not dest.exists()
    assert not partial_of(dest).exists()


def test_zip_round_trip(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "covid.zip", FILES, dirs=("data/", "data/empty dir/"))
    dest = tmp_path / "out" / "covid"
    assert extract_archive(archive, dest) == dest
    assert tree(dest) == FILES
    assert (dest / "data" / "empty dir").is_dir()
    assert (dest / MARKER).read_text() == f"covid.zip\n{archive.stat().st_size}\n"
    assert not partial_of(dest).exists()


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_tar_round_trip(tmp_path: Path, suffix: str) -> None:
    members = [(tar_entry("data", tarfile.DIRTYPE), b"")]
    members += [(tar_entry(name), data) for name, data in FILES.items()]
    archive = make_tar(tmp_path / f"cifar{suffix}", members)
    dest = tmp_path / "cifar"
    extract_archive(archive, dest)
    assert tree(dest) == FILES


def test_check_archive_returns_member_names(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", FILES, dirs=("data/",))
    assert check_archive(archive) == ["data/", *FILES]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.txt", r"'\.\.' path component"),
        ("/abs.txt", "absolute path"),
        ("a/../../x", r"'\.\.' path component"),
        ("a\\..\\..\\x", r"'\.\.' path component"),
        ("C:/Windows/x.txt", "absolute path"),
        ("\\abs.txt", "absolute path"),
    ],
)
def test_zip_unsafe_paths_rejected(tmp_path: Path, name: str, reason: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})
    dest = tmp_path / "out"
    pattern = rf"bad\.zip has an unsafe entry {re.escape(repr(name))} \({reason}\)"
    with pytest.raises(DiaError, match=pattern):
        extract_archive(archive, dest)
    assert_nothing_written(dest)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo("etc-passwd")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd")
    dest = tmp_path / "out"
    with pytest.raises(DiaError, match=r"link\.zip has an unsafe entry 'etc-passwd' \(symbolic"):
        extract_archive(archive, dest)
    assert_nothing_written(dest)


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        (tar_entry("link", tarfile.SYMTYPE, "/etc/passwd"), r"'link' \(symbolic link to '/etc"),
        (tar_entry("hard", tarfile.LNKTYPE, "ok.txt"), r"'hard' \(hard link to 'ok\.txt'\)"),
        (tar_entry("/abs.txt"), r"'/abs\.txt' \(absolute path\)"),
        (tar_entry("x/../../up.txt"), r"'x/\.\./\.\./up\.txt' \('\.\.' path component\)"),
        (tar_entry("pipe", tarfile.FIFOTYPE), r"'pipe' \(device, fifo or other special file\)"),
        (tar_entry("tty", tarfile.CHRTYPE), r"'tty' \(device, fifo or other special file\)"),
    ],
    ids=["symlink", "hardlink", "absolute", "dotdot", "fifo", "chardev"],
)
def test_tar_unsafe_entries_rejected(tmp_path: Path, entry: tarfile.TarInfo, pattern: str) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [(tar_entry("ok.txt"), b"fine"), (entry, b"")])
    dest = tmp_path / "out"
    with pytest.raises(DiaError, match=rf"bad\.tar\.gz has an unsafe entry {pattern}"):
        extract_archive(archive, dest)
    assert_nothing_written(dest)


CORRUPT = r"archive .*{}\.zip is corrupt or incomplete .*delete it and re-run to download it again"


def test_truncated_zip_is_corrupt(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "cut.zip", FILES)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    dest = tmp_path / "out"
    with pytest.raises(DiaError, match=CORRUPT.format("cut")):
        extract_archive(archive, dest)
    assert_nothing_written(dest)


def test_zip_crc_mismatch_is_corrupt(tmp_path: Path) -> None:
    payload = b"0123456789abcdef" * 64
    archive = tmp_path / "flip.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("good.bin", b"untouched")
        zf.writestr("dir/bad (1).bin", payload)
    data = bytearray(archive.read_bytes())
    data[data.index(payload) + 100] ^= 0xFF
    archive.write_bytes(bytes(data))
    dest = tmp_path / "out"
    with pytest.raises(DiaError, match=CORRUPT.format("flip") + r".*") as excinfo:
        extract_archive(archive, dest)
    assert "bad CRC in 'dir/bad (1).bin'" in str(excinfo.value)
    assert_nothing_written(dest)


def test_truncated_tar_gz_is_corrupt(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "cut.tar.gz", [(tar_entry(n), d * 500) for n, d in FILES.items()])
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DiaError, match=r"cut\.tar\.gz is corrupt or incomplete"):
        check_archive(archive)


def test_tar_gz_crc_mismatch_is_corrupt(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "crc.tar.gz", [(tar_entry("a.txt"), b"content")])
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF  # gzip trailer: CRC-32 of the uncompressed stream
    archive.write_bytes(bytes(data))
    dest = tmp_path / "out"
    with pytest.raises(DiaError, match=r"crc\.tar\.gz is corrupt or incomplete \(CRC check failed"):
        extract_archive(archive, dest)
    assert_nothing_written(dest)


def test_truncated_plain_tar_is_corrupt(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "cut.tar", [(tar_entry("big.bin"), b"x" * 10_000)])
    data = archive.read_bytes()
    archive.write_bytes(data[:5_000])
    with pytest.raises(DiaError, match=r"cut\.tar is corrupt or incomplete"):
        check_archive(archive)


def test_unsupported_suffix(tmp_path: Path) -> None:
    archive = tmp_path / "data.rar"
    archive.write_bytes(b"Rar!")
    with pytest.raises(DiaError, match=r"data\.rar: unsupported .*\.zip, \.tar, \.tar\.gz, \.tgz"):
        check_archive(archive)


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DiaError, match=r"archive .*gone\.zip not found; re-run to download it"):
        extract_archive(tmp_path / "gone.zip", tmp_path / "out")


def test_leftover_partial_is_replaced(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", FILES)
    dest = tmp_path / "out"
    leftover = partial_of(dest) / "data" / "COVID"
    leftover.mkdir(parents=True)
    (leftover / "half written.png").write_bytes(b"\x89PN")
    extract_archive(archive, dest)
    assert tree(dest) == FILES
    assert not partial_of(dest).exists()


def test_complete_dest_is_not_extracted_again(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", FILES)
    dest = extract_archive(archive, tmp_path / "out")
    (dest / "added later.txt").write_text("keep me")
    (dest / "README.txt").write_bytes(b"edited")
    assert extract_archive(archive, dest) == dest
    assert (dest / "added later.txt").read_text() == "keep me"
    assert (dest / "README.txt").read_bytes() == b"edited"


def test_dest_without_marker_is_extracted_again(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", FILES)
    dest = tmp_path / "out"
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "stale.png").write_bytes(b"old")
    extract_archive(archive, dest)
    assert tree(dest) == FILES


def test_marker_of_another_archive_triggers_extraction(tmp_path: Path) -> None:
    dest = extract_archive(make_zip(tmp_path / "a.zip", {"old.txt": b"old"}), tmp_path / "out")
    extract_archive(make_zip(tmp_path / "a.zip", FILES), dest)
    assert tree(dest) == FILES


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(tmp_path / "a.zip", FILES)
    dest = tmp_path / "out"

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(DiaError, match=r"could not extract .*a\.zip .*No space left on device"):
        extract_archive(archive, dest)
    assert_nothing_written(dest)
