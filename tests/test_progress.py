"""Progress in a job's log: one line per update at a bounded rate, never carriage returns."""

from __future__ import annotations

import pytest

import dia.progress

# capsys's stderr is not a terminal, like a Snakemake job's log


def test_each_update_is_its_own_line_with_step_total_and_loss(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dia.progress, "LOG_INTERVAL", 0.0)
    with dia.progress.progress(5, "dia", initial=1) as bar:
        for _ in range(4):
            bar.update(1)
            bar.set_postfix(loss="1.2345")
    text = capsys.readouterr().err
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 5 and all(line.startswith("dia:") for line in lines)
    assert "1/5" in lines[0] and "5/5" in lines[-1] and "loss=1.2345" in lines[-1]


def test_lines_are_rate_limited(capsys: pytest.CaptureFixture[str]) -> None:
    """Thousands of fast updates within one interval, each setting the loss as the training
    loops do, give the first and the final line only."""
    with dia.progress.progress(10_000, "diffusion") as bar:
        for step in range(10_000):
            bar.update(1)
            bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) <= 3 and "10000/10000" in lines[-1]
