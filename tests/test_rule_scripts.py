"""The shared start of the rule scripts (workflow/scripts/_dia.py): logs that keep every attempt."""

from __future__ import annotations

import errno
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dia.errors import DiaError
from tests.conftest import ROOT

_SPEC = importlib.util.spec_from_file_location("_dia", ROOT / "workflow" / "scripts" / "_dia.py")
_dia = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_dia)


def _job(log: Path) -> SimpleNamespace:
    return SimpleNamespace(log=[str(log)], rule="train")


def test_a_retry_keeps_the_failed_attempts_log(tmp_path: Path, capfd) -> None:
    """Snakemake deletes the log before a retry; the next attempt's log still starts with the
    failed one's output, each attempt under its header, and success drops the history file."""
    log = tmp_path / "seed0.log"

    def fails() -> None:
        print("epoch 1 of 3")
        raise DiaError("out of disk space in results/state")

    with pytest.raises(SystemExit):
        _dia.run(_job(log), fails)
    assert "[train] error: out of disk space" in capfd.readouterr().err
    log.unlink()  # what Snakemake does before it runs the job again
    _dia.run(_job(log), lambda: print("epoch 3 of 3"))
    lines = log.read_text().splitlines()
    assert [line.split(",")[0] for line in lines if line.startswith("=== attempt")] == [
        "=== attempt 1",
        "=== attempt 2",
    ]
    assert lines[1:3] == ["epoch 1 of 3", "error: out of disk space in results/state"]
    assert lines[-1] == "epoch 3 of 3"
    assert not log.with_name("seed0.log.attempts").exists()
    assert sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__


def test_a_killed_attempt_leaves_its_output_for_the_next(tmp_path: Path) -> None:
    """A job killed mid-way (no Python exception to catch) has its output in the history."""
    log = tmp_path / "job.log"
    history = tmp_path / "job.log.attempts"
    history.write_text("=== attempt 1, started 2026-01-01 00:00:00 ===\nstep 40/100\n")
    _dia.run(_job(log), lambda: print("step 100/100"))
    text = log.read_text()
    assert text.startswith("=== attempt 1") and "step 40/100\n=== attempt 2" in text


def test_an_unexpected_exception_ends_with_one_line_after_its_traceback(
    tmp_path: Path, capfd
) -> None:
    """The traceback goes to the rule's log (where Snakemake points the user), the console gets
    one line, and the job exits 1."""
    log = tmp_path / "train.log"

    def breaks() -> None:
        raise ValueError("AUROC/AUPRC need both normal and anomalous samples")

    with pytest.raises(SystemExit) as exited:
        _dia.run(_job(log), breaks)
    assert exited.value.code == 1
    text = log.read_text()
    assert "Traceback" in text and "ValueError: AUROC/AUPRC need both" in text
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("error: unexpected ValueError: AUROC/AUPRC need both")
    assert str(log) in last
    console = capfd.readouterr().err.strip().splitlines()
    assert console == [f"[train] {last}"]


def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path, capfd) -> None:
    log = tmp_path / "train.log"

    def fills() -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "results/x/model.pt")
        except OSError as exc:
            raise RuntimeError("file write failed") from exc

    with pytest.raises(SystemExit):
        _dia.run(_job(log), fills)
    console = capfd.readouterr().err.strip().splitlines()
    assert console == [
        "[train] error: no space left on the device writing results/x/model.pt; free some "
        "space and re-run"
    ]
