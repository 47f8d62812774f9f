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


def test_a_library_bar_is_split_into_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """A third-party tqdm bar (default file: sys.stderr at construction) inside
    ``library_bars`` writes lines, not one line of carriage returns."""
    from tqdm import tqdm

    with dia.progress.library_bars():
        for _ in tqdm(range(3), desc="sampling loop time step", mininterval=0.0):
            pass
    text = capsys.readouterr().err
    assert "\r" not in text
    assert len(text.splitlines()) >= 2 and "3/3" in text.splitlines()[-1]


def test_scores_and_features_write_progress(capsys: pytest.CaptureFixture[str]) -> None:
    """Scoring (the score stage and in-training evaluations) shows its progress in the log."""
    import torch

    from dia.config import ScoreConfig
    from dia.contrastive.resnet import ResNet18
    from dia.evaluation.score import extract_features

    model = ResNet18(width=8)
    cfg = ScoreConfig(samples=2, batch_size=4)
    extract_features(
        model, torch.rand(8, 3, 16, 16), shift="rotation", cfg=cfg, image_size=16, hue=0.1
    )
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("features:") and "4/4" in lines[-1]


def test_official_loops_advance_a_bar_per_batch_they_draw() -> None:
    """The official CSI/DIA epoch loop prints nothing: the loader it iterates counts for it."""
    from dia.official.contrastive import _Counted

    with dia.progress.progress(10, "dia (official)") as bar:
        loader = _Counted([1, 2, 3, 4], bar)
        assert len(loader) == 4
        for batch in loader:
            if batch == 3:  # the official loop breaks out after its batch budget
                break
        assert bar.n == 2
