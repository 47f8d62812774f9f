"""scripts/bench_step.py --official: the official CSI and DIA steps timed beside ours."""

from __future__ import annotations

import re

from tests.parity.conftest import official_folder
from tests.test_bench_step import bench


def test_the_benchmark_times_the_official_steps_beside_ours() -> None:
    folder = official_folder("shijianjian__DIA")
    out = bench("--width", "64", "--image-size", "28", "--official", str(folder))
    assert re.search(r"^fp32 official csi +[\d.]+ ms/step +ours \(csi\) x[\d.]+$", out, re.M)
    assert re.search(r"^fp32 official dia +[\d.]+ ms/step +ours \(dia_online\) x", out, re.M)
