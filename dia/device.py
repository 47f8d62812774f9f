"""Which data a job keeps on its GPU: one rule for the prepared images and the dissolve cache."""

from __future__ import annotations

# Data goes to the GPU when it takes at most this share of the free memory: the rest is left to
# the network's weights, activations and the allocator's slack.
GPU_SHARE = 0.25


def fits_on(device: str | object, nbytes: int) -> bool:
    """Whether ``nbytes`` of data should live on ``device``: a CUDA device with room for it."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= GPU_SHARE * free
