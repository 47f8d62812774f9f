"""Importing modules of an official repository, with run-time shims for today's environment.

The official DIA and CSI code was written for torch 1.x and imports packages that no longer
install or only matter on multi-GPU runs. Each shim below is a stand-in module placed in
``sys.modules`` while the official code is imported, never an edit of its files:

- ``diffdist`` (``diffdist.functional.all_gather``): multi-GPU gathering, unused on one device;
- ``tensorboardX`` (``SummaryWriter``): the official logger;
- ``apex``, ``torchlars``: multi-GPU synchronisation and the CUDA-only LARS extension, which
  the adapter replaces;
- ``cv2``, ``kornia``: used only by the blur ablation's layers; the real packages are used when
  installed, else any use names the package to install.

Repositories share top-level package names (``models``, ``training``, ``utils`` ...), so each
import runs with that repository alone on ``sys.path`` and its modules are removed from
``sys.modules`` afterwards; the returned module objects stay usable.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dia.errors import DiaError
from dia.official.repos import OfficialRepo, verify

ENV_VAR = "DIA_OFFICIAL_REPOS"


class _Unavailable(types.ModuleType):
    """A module whose every attribute names the package that would provide it."""

    def __init__(self, name: str, install: str) -> None:
        super().__init__(name)
        self._install = install

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise DiaError(
            f"the official code uses {self.__name__}.{attr}; install {self._install} to run it"
        )


def _all_gather(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("diffdist shim: all_gather is multi-GPU only and is not used on one device")


class _SummaryWriter:
    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __getattr__(self, _attr: str) -> Any:
        return lambda *args, **kwargs: None


def _shims() -> dict[str, types.ModuleType]:
    functional = types.ModuleType("diffdist.functional")
    functional.all_gather = _all_gather  # type: ignore[attr-defined]
    diffdist = types.ModuleType("diffdist")
    diffdist.functional = functional  # type: ignore[attr-defined]
    tensorboard = types.ModuleType("tensorboardX")
    tensorboard.SummaryWriter = _SummaryWriter  # type: ignore[attr-defined]
    shims: dict[str, types.ModuleType] = {
        "diffdist": diffdist,
        "diffdist.functional": functional,
        "tensorboardX": tensorboard,
        "apex": _Unavailable("apex", "NVIDIA apex (multi-GPU only)"),
        "torchlars": _Unavailable("torchlars", "torchlars (CUDA build)"),
    }
    for name, package in (("cv2", "opencv-python-headless"), ("kornia", "kornia")):
        if importlib.util.find_spec(name) is None:
            shims[name] = _Unavailable(name, package)
    return shims


SHIMMED = ("diffdist", "tensorboardX", "apex", "torchlars", "cv2", "kornia")


def snapshot(repo: OfficialRepo, root: str | os.PathLike[str] | None = None) -> Path:
    """The verified folder of ``repo`` under ``root`` (default: ``$DIA_OFFICIAL_REPOS``).

    ``root`` holds ``<owner>__<name>`` folders, or ``<owner>__<name>.json`` files written by the
    ``fetch_official`` rule for a checkout used in place.
    """
    root = root or os.environ.get(ENV_VAR)
    if not root:
        raise DiaError(f"{ENV_VAR} is not set: point it at a folder of official repositories")
    folder = Path(root) / repo.key
    if not folder.is_dir():
        record = Path(root) / f"{repo.key}.json"
        if not record.is_file():
            raise DiaError(
                f"official repository {repo.key} not found in {root}: extract commit "
                f"{repo.commit[:12]} there as {repo.key}/, or run the fetch_official rule"
            )
        folder = Path(json.loads(record.read_text())["path"])
    return verify(folder, repo)


@contextmanager
def _isolated(folder: Path) -> Iterator[None]:
    tops = {p.stem for p in folder.iterdir() if p.suffix == ".py" or p.is_dir()}

    def ours(name: str) -> bool:
        return name.split(".", 1)[0] in tops or name.split(".", 1)[0] in SHIMMED

    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(_shims())
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def import_official(folder: Path, *modules: str) -> dict[str, types.ModuleType]:
    """Import ``modules`` (dotted names) from the repository checked out at ``folder``."""
    out = {}
    with _isolated(Path(folder)):
        for name in modules:
            try:
                out[name] = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                raise DiaError(
                    f"official module {name} in {folder} needs {exc.name!r}, which is neither "
                    f"installed nor shimmed (shims: {', '.join(SHIMMED)}); install it or add a "
                    f"shim in dia.official.imports"
                ) from exc
    return out
