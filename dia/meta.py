"""Provenance written beside every artefact."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("dia", "torch", "torchvision", "denoising-diffusion-pytorch", "numpy", "snakemake")


def git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when it has local changes; None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty.strip() else "")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def peak_memory_mb(device: str) -> dict[str, float]:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": rss_kb / 1024}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def build_meta(
    *,
    stage: str,
    config: dict[str, Any],
    seed: int | None,
    device: str,
    started: float,
    inputs: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to tell how an artefact was made."""
    return {
        "stage": stage,
        "config": config,
        "seed": seed,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "packages": _versions(),
        "device": device,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "inputs": inputs or {},
        "wall_time_s": round(time.time() - started, 3),
        **peak_memory_mb(device),
        **(extra or {}),
    }


def pick_device(requested: str = "auto") -> str:
    """``auto`` takes the GPU when there is one; explicit names are used as given."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested
