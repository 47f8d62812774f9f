"""scripts/bench_step.py at toy sizes: every line it promises (the official steps beside ours:
tests/parity/test_bench_official.py)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

TOY = ["--batch-size", "2", "--unet-dim", "8", "--unet-mults", "1", "2", "--steps", "1"]


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "scripts/bench_step.py", "--threads", "1", *TOY, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_benchmark_prints_each_step_its_ratio_and_the_floor() -> None:
    out = bench("--width", "8", "--image-size", "16")
    for name in ("csi", "dia_cache", "dia_online"):
        assert re.search(rf"^fp32 {name} +[\d.]+ ms/step +x[\d.]+ CSI$", out, re.M), out
    assert re.search(r"^fp32 the ResNet alone on 3 branches / 2: x[\d.]+", out, re.M), out
