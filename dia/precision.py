"""Mixed precision: one switch (``precision: fp32 | bf16``) per stage section.

``bf16`` runs the networks' matrix products and convolutions in bfloat16 under
:func:`torch.autocast` (on CUDA and on CPUs), with the weights, optimiser state, losses and
every result handed on (dissolved images, features, scores) in float32. ``fp32`` (the default,
as the official code) leaves everything in float32.
"""

from __future__ import annotations

import contextlib

import torch


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device``; a no-op for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
