"""Resumable training state: bound to what made it, and read back as plain data only.

A job that trains keeps its resumable state in its own state directory
(``results/state/...``). Before training, the stage *claims* that directory with the
fingerprint of everything that determines the result: the stage's resolved config, its seed and
the identity of its inputs. A directory claimed with another fingerprint (a config key changed
since the job was killed, an input was rebuilt) or with none (an older version of the pipeline)
is emptied, with one log line naming what differs, so a rerun never continues another
configuration's training. State files are loaded with ``torch.load(weights_only=True)``: they
hold tensors and plain Python values only, and a file that is unreadable, or that would need
code to run to be read, is deleted with one log line and training starts from the beginning.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.errors import DiaError, one_line
from dia.io import read_json, write_json

# Bumped whenever the layout of a state file changes, so that older state is never resumed.
STATE_FORMAT = 2
FINGERPRINT = "fingerprint.json"
_SHOWN_DIFFERENCES = 3
# What reading a truncated, corrupt or code-carrying state file raises (torch's zip reader raises
# RuntimeError); an OSError or MemoryError is the machine's, not the file's, and fails the job
# instead of costing its training.
_UNREADABLE = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, TypeError)


def file_stamp(path: str | os.PathLike[str] | None, *, marker: str | None = None) -> str:
    """An input file's identity for a fingerprint: size and modification time, the same test
    Snakemake's own rerun trigger applies (a rebuilt input always has a new one); reading a
    multi-gigabyte cache through a hash at every job start would cost more than it protects.
    A folder input is stamped by its ``marker`` file, written last: the folder's own time moves
    whenever an entry in it changes."""
    if path is None:
        return ""
    path = Path(path)
    stat = (path / marker if marker else path).stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.loads(json.dumps(value, default=str))}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in keys]
    more = len(shown) - _SHOWN_DIFFERENCES
    return "; ".join(shown[:_SHOWN_DIFFERENCES]) + (f" and {more} more" if more > 0 else "")


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def claim_state_dir(state_dir: Path, fingerprint: Mapping[str, Any]) -> None:
    """Make ``state_dir`` hold only state made under ``fingerprint``: keep it when it was claimed
    with the same one, else empty it (one log line saying why), then record ``fingerprint``."""
    wanted = _flatten({**fingerprint, "state_format": STATE_FORMAT})
    record = state_dir / FINGERPRINT
    if record.exists():
        try:
            recorded = read_json(record)
        except (OSError, ValueError):
            recorded = {"(unreadable fingerprint)": True}
        if recorded == wanted:
            return
        reason = f"it was made by another configuration ({_differences(recorded, wanted)})"
    elif state_dir.exists() and any(state_dir.iterdir()):
        reason = "it records no configuration (made by an older version of the pipeline)"
    else:
        reason = ""
    if reason:
        _note(f"discarding the resumable state in {state_dir}: {reason}; training from the start")
        # the fingerprint goes first: a kill mid-way leaves state without one, discarded again
        record.unlink(missing_ok=True)
        try:
            shutil.rmtree(state_dir)
        except OSError as exc:
            raise DiaError(
                f"cannot remove the stale state in {state_dir} ({exc}); remove it by hand, then "
                f"re-run"
            ) from exc
    write_json(record, wanted)


def load_state(path: Path) -> dict[str, Any] | None:
    """The state saved in ``path``, or None when there is none or it cannot be trusted.

    A truncated, corrupt or code-carrying file (anything ``weights_only`` refuses) is deleted
    with one log line: the job then trains from the beginning instead of failing at every retry.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a state dictionary")
    except _UNREADABLE as exc:
        _note(f"discarding unreadable state file {path} ({one_line(exc)}); training from the start")
        path.unlink(missing_ok=True)
        return None
    return state


def global_rng_state() -> list[Any]:
    """Python's, NumPy's and torch's global generator states (and every GPU's, where there are
    GPUs) as plain values and tensors (the official code draws from these), for a state file
    that loads with ``weights_only``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]
    cuda = [torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return [random.getstate(), numpy_state, torch.get_rng_state(), *cuda]


def set_global_rng_state(saved: list[Any]) -> None:
    """Restore what :func:`global_rng_state` returned; GPU states only where there are GPUs."""
    python_state, (name, keys, pos, has_gauss, cached), torch_state, *cuda = saved
    random.setstate(python_state)
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[0])
