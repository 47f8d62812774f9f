"""Importing modules of an official repository, with run-time shims for today's environment.

The official DIA and CSI code was written for torch 1.x and imports packages that no longer
install or only matter on multi-GPU runs. Each shim below is a stand-in module placed in
``sys.modules`` while the official code is imported, never an edit of its files:

- ``diffdist`` (``diffdist.functional.all_gather``): multi-GPU gathering, unused on one device;
- ``tensorboardX`` (``SummaryWriter``): the official logger;
- ``apex``, ``torchlars``: multi-GPU synchronisation and the CUDA-only LARS extension, which
  the adapter replaces;
- ``cv2``, ``kornia``: used only by the blur ablation's layers and the baselines' image readers
  and plots; the real packages are used when installed, else any use names the package to install;
- ``faiss`` (``IndexFlatL2``): the exact k-nearest-neighbour search of Transformaly and
  Mean-Shift, computed here in float64 with the same squared L2 distances (the real package is
  used when installed);
- ``easydict`` (``EasyDict``): UniAD's config dictionaries (the real package when installed).

Some official code also calls what today's libraries removed, at run time rather than at import:
:func:`legacy_runtime` restores those while it runs (``np.int``/``np.float``/``np.bool``,
``yaml.load`` without a loader, and ``.cuda()`` on a machine without CUDA, which then stays on
the CPU).

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

import numpy as np

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


class _IndexFlatL2:
    """faiss.IndexFlatL2: exact squared-L2 nearest neighbours of the added vectors."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._bank = np.empty((0, dim))

    @property
    def ntotal(self) -> int:
        return len(self._bank)

    def add(self, vectors: np.ndarray) -> None:
        self._bank = np.concatenate([self._bank, np.asarray(vectors, dtype=np.float64)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=np.float64)
        dist = (
            (queries**2).sum(1)[:, None] - 2 * queries @ self._bank.T + (self._bank**2).sum(1)
        ).clip(min=0)
        index = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(dist, index, 1).astype(np.float32), index.astype(np.int64)


class _EasyDict(dict):
    """easydict.EasyDict: a dict whose keys are also attributes, recursively."""

    def __init__(self, data: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        for key, value in {**(data or {}), **kwargs}.items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, dict) and not isinstance(value, _EasyDict):
            value = _EasyDict(value)
        elif isinstance(value, list | tuple):
            value = type(value)(_EasyDict(v) if isinstance(v, dict) else v for v in value)
        super().__setitem__(key, value)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


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
    if importlib.util.find_spec("faiss") is None:
        shims["faiss"] = types.ModuleType("faiss")
        shims["faiss"].IndexFlatL2 = _IndexFlatL2  # type: ignore[attr-defined]
    if importlib.util.find_spec("easydict") is None:
        shims["easydict"] = types.ModuleType("easydict")
        shims["easydict"].EasyDict = _EasyDict  # type: ignore[attr-defined]
    return shims


SHIMMED = ("diffdist", "tensorboardX", "apex", "torchlars", "cv2", "kornia", "faiss", "easydict")


@contextmanager
def legacy_runtime() -> Iterator[None]:
    """Run official code that calls what today's numpy, PyYAML and CPU-only torch removed.

    Restores ``np.int``, ``np.float`` and ``np.bool`` where numpy removed them (the builtins
    they aliased), lets
    ``yaml.load`` default to the full loader, and, only where CUDA is unavailable, makes
    ``Tensor.cuda()`` and ``Module.cuda()`` return their receiver so hard-coded GPU calls stay
    on the CPU. Everything is put back on exit.
    """
    import torch
    import yaml

    patches: list[tuple[Any, str, Any]] = [
        (np, name, alias)
        for name, alias in (("int", int), ("float", float), ("bool", bool))
        if name not in np.__dict__  # numpy 2 has np.bool (np.bool_) again
    ]
    patches.append((yaml, "load", _yaml_load(yaml.load)))
    if not torch.cuda.is_available():
        patches += [
            (torch.Tensor, "cuda", lambda self, *_a, **_k: self),
            (torch.nn.Module, "cuda", lambda self, *_a, **_k: self),
        ]
    missing = object()
    saved = [(owner, name, owner.__dict__.get(name, missing)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            if value is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def _yaml_load(load: Any) -> Any:
    import yaml

    def legacy_load(stream: Any, Loader: Any = yaml.FullLoader) -> Any:  # noqa: N803
        return load(stream, Loader=Loader)

    return legacy_load


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
    # no __pycache__ in the snapshot: it would change its content digest
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        yield
    finally:
        sys.dont_write_bytecode = bytecode
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
