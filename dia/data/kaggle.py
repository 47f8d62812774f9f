"""Kaggle downloads (SARS-CoV-2 CT, Kermany OCT, APTOS 2019) through the pinned ``kaggle`` 2.2.5.

``import kaggle`` authenticates at import time: without credentials it prints its help and swallows
the exit, and with an access token it calls the network. So this module looks for credentials
itself, mirroring kaggle 2.2.5's sources, and imports the package only once they exist: a missing
or malformed token is reported as one line before any network call. Messages say where
credentials were found, never what they are.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import requests
import urllib3

from dia.errors import DiaError

_SETTINGS = "https://www.kaggle.com/settings"
_MARKER = ".kaggle-partial"  # kaggle's resume sidecar beside a partial download


def find_kaggle_credentials(
    env: Mapping[str, str] | None = None, home: Path | None = None
) -> str | None:
    """Where kaggle 2.2.5 will find credentials (e.g. ``~/.kaggle/kaggle.json``), or None.

    Sources, in kaggle's order: an access token (inside a Kaggle notebook the file named by
    ``KAGGLE_API_V1_TOKEN``; ``KAGGLE_API_TOKEN``, the token or a file holding it;
    ``~/.kaggle/access_token`` or ``access_token.txt``), then the legacy key (``username`` and
    ``key`` of ``kaggle.json`` in its config folder, each overridden by ``KAGGLE_USERNAME`` /
    ``KAGGLE_KEY``), then ``~/.kaggle/credentials.json`` from ``kaggle auth login``. A malformed
    ``kaggle.json`` does not count. Defaults: ``os.environ`` and ``Path.home()``.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else Path(home)
    return _scan(env, home)[0]


def check_kaggle_credentials(
    datasets: Sequence[str], env: Mapping[str, str] | None = None, home: Path | None = None
) -> None:
    """Raise :class:`DiaError` unless Kaggle credentials exist, without importing ``kaggle``.

    ``datasets`` (config keys) are named in the message, so a user sees which datasets need the
    token and can give them a ``local_path`` instead.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else Path(home)
    _require_credentials(datasets, env, home)


def kaggle_download(
    kind: Literal["dataset", "competition"], ref: str, dest: Path, *, dataset: str
) -> Path:
    """Download the archive of Kaggle ``kind`` ``ref`` as one zip at ``dest`` and return ``dest``.

    ``dataset`` is the config key named in messages. An existing ``dest`` is returned untouched.
    Kaggle writes into the folder ``<dest>.kaggle-part`` (``<slug>.zip`` for a dataset,
    ``<competition>.zip`` for a competition); the zip is moved onto ``dest`` only when complete
    and valid, so ``dest`` is absent or whole. The folder has a fixed name and survives a failure
    because kaggle 2.2.5 resumes from it: it retries a dropped transfer 5 times in-process with
    HTTP Range requests, and a later run appends to the partial file only when the server's
    ETag/Last-Modified and size match its ``.kaggle-partial`` marker (otherwise it restarts from
    zero); a complete file left by an interrupted run is reused without downloading again.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    if kind not in ("dataset", "competition"):
        raise ValueError(f"kind must be 'dataset' or 'competition', not {kind!r}")
    source = _require_credentials([dataset], os.environ, Path.home())
    folder = dest.with_name(f"{dest.name}.kaggle-part")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _fetch(kind, ref, folder, dataset, source)
    except BaseException:
        if not any(folder.iterdir()):
            folder.rmdir()  # nothing to resume from: leave no empty folder behind
        raise
    archives = [p for p in folder.iterdir() if not p.name.endswith(_MARKER)]
    if len(archives) != 1 or not zipfile.is_zipfile(archives[0]):
        shutil.rmtree(folder)
        raise DiaError(
            f"Kaggle {kind} {ref} for {dataset} did not arrive as one zip archive "
            f"({', '.join(p.name for p in archives) or 'no file'}); it was deleted: re-run to "
            f"download it again, or {_local_path_hint(dataset)}"
        )
    os.replace(archives[0], dest)
    shutil.rmtree(folder)
    return dest


def _fetch(kind: str, ref: str, folder: Path, dataset: str, source: str) -> None:
    """Let kaggle download into ``folder``; its failures become one-line :class:`DiaError`."""
    from kaggle.api.kaggle_api_extended import KaggleApi  # authenticates on import: only now

    try:
        api = KaggleApi()
        # VERBOSE=1 in the environment makes kagglesdk print request headers, Authorization too.
        api.args = [arg for arg in api.args if arg not in ("--verbose", "-v")]
        api.authenticate()
        if kind == "competition":
            api.competition_download_files(ref, path=str(folder), quiet=False)
        else:
            api.dataset_download_files(ref, path=str(folder), quiet=False)
    except (SystemExit, requests.HTTPError) as exc:
        raise DiaError(_refusal(exc, kind, ref, dataset, source)) from exc
    except (OSError, urllib3.exceptions.HTTPError, ValueError) as exc:
        raise DiaError(
            f"could not download Kaggle {kind} {ref} for {dataset} "
            f"({type(exc).__name__}: {_reason(exc)}): check the network and re-run (the "
            f"download resumes), or {_local_path_hint(dataset)}"
        ) from exc


def _refusal(
    exc: SystemExit | requests.HTTPError, kind: str, ref: str, dataset: str, source: str
) -> str:
    """One-line message for an authentication failure or an HTTP error status."""
    response = getattr(exc, "response", None)
    status = None if response is None else response.status_code
    if isinstance(exc, SystemExit) or status == 401:
        # kaggle exits when it finds no usable token (an access token failed its check).
        return (
            f"Kaggle rejected the credentials from {source} (needed to download {dataset}"
            f"{'' if status is None else f', HTTP {status}'}): create a new API token at "
            f"{_SETTINGS} (API section), replace the old one with it, and re-run"
        )
    if kind == "competition" and status == 403:
        return (
            f"Kaggle refused the {ref} competition data for {dataset} (HTTP 403): accept the "
            f"rules at https://www.kaggle.com/competitions/{ref}/rules with the Kaggle account of "
            f"your token ({source}), then re-run"
        )
    if status in (403, 404):
        return (
            f"Kaggle {kind} {ref} for {dataset} is not accessible with the credentials from "
            f"{source} (HTTP {status}): check that https://www.kaggle.com/{kind}s/{ref} opens "
            f"for that account, or {_local_path_hint(dataset)}"
        )
    return (
        f"could not download Kaggle {kind} {ref} for {dataset} (HTTP {status}): re-run later "
        f"(the download resumes), or {_local_path_hint(dataset)}"
    )


def _reason(exc: BaseException) -> str:
    """``exc`` on one line, without URL query strings (signed download URLs carry tokens)."""
    return re.sub(r"\?\S*", "", " ".join(str(exc).split()))


def _local_path_hint(dataset: str) -> str:
    return f"set datasets.{dataset}.local_path to a local copy of the archive"


def _require_credentials(datasets: Sequence[str], env: Mapping[str, str], home: Path) -> str:
    """Where the credentials are; raise :class:`DiaError` with what to do when there are none."""
    source, problem = _scan(env, home)
    if source is not None:
        return source
    names = ", ".join(datasets)
    local = _local_path_hint(datasets[0] if len(datasets) == 1 else "<name>")
    if problem is not None:
        raise DiaError(
            f"{problem}, so Kaggle cannot use it (needed to download {names}): replace it with a "
            f'fresh key from {_SETTINGS} (API section) holding "username" and "key", or export '
            f"KAGGLE_API_TOKEN=<token>; or {local}"
        )
    config = env.get("KAGGLE_CONFIG_DIR")  # else ~/.kaggle, which kaggle prefers once it exists
    kaggle_json = _shown(Path(config) / "kaggle.json", home) if config else "~/.kaggle/kaggle.json"
    raise DiaError(
        f"Kaggle credentials not found (needed to download {names}): create an API token at "
        f"{_SETTINGS} (API section) and export KAGGLE_API_TOKEN=<token> or save it as "
        f"~/.kaggle/access_token, or save a legacy key as {kaggle_json} with chmod 600 (or "
        f"export KAGGLE_USERNAME and KAGGLE_KEY); or {local}"
    )


def _scan(env: Mapping[str, str], home: Path) -> tuple[str | None, str | None]:
    """(where credentials are, what is wrong with an unusable kaggle.json), in kaggle's order."""
    legacy, problem = _legacy_key(env, home)
    return _access_token(env, home) or legacy or _oauth(home), problem


def _access_token(env: Mapping[str, str], home: Path) -> str | None:
    """Mirror of kagglesdk's ``get_access_token_from_env``."""
    if "KAGGLE_KERNEL_RUN_TYPE" in env and "KAGGLE_DATA_PROXY_URL" in env:
        path = env.get("KAGGLE_API_V1_TOKEN")
        if path and _holds_token(Path(path)):
            return f"{path} (KAGGLE_API_V1_TOKEN)"
    token = env.get("KAGGLE_API_TOKEN")
    if token:
        if not os.path.isfile(token):
            return "KAGGLE_API_TOKEN"
        # kaggle reads a path here as a token file and, if it is empty, looks no further.
        return f"{token} (KAGGLE_API_TOKEN)" if _holds_token(Path(token)) else None
    for name in ("access_token", "access_token.txt"):
        path = home / ".kaggle" / name
        if _holds_token(path):
            return _shown(path, home)
    return None


def _legacy_key(env: Mapping[str, str], home: Path) -> tuple[str | None, str | None]:
    """Mirror of ``KaggleApi._load_config``: kaggle.json's username and key, env overriding."""
    path = _config_dir(env, home) / "kaggle.json"
    shown = _shown(path, home)
    data = _read_json(path) if path.is_file() else {}
    in_file = {f for f in ("username", "key") if isinstance(data, dict) and data.get(f)}
    fields = (("username", "KAGGLE_USERNAME"), ("key", "KAGGLE_KEY"))
    if any(field not in in_file and not env.get(var) for field, var in fields):
        unusable = path.is_file()  # kaggle silently ignores it: say so
        return None, (f'{shown} is not JSON holding "username" and "key"' if unusable else None)
    in_env = [var for _, var in fields if env.get(var)]
    if len(in_env) == 2:
        return "KAGGLE_USERNAME/KAGGLE_KEY", None
    return (f"{shown} with {in_env[0]}" if in_env else shown), None


def _oauth(home: Path) -> str | None:
    """The refresh token that ``kaggle auth login`` stores."""
    path = home / ".kaggle" / "credentials.json"
    data = _read_json(path)
    return _shown(path, home) if isinstance(data, dict) and data.get("refresh_token") else None


def _config_dir(env: Mapping[str, str], home: Path) -> Path:
    """kaggle.json's folder, chosen as ``KaggleApi.config_dir`` does."""
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _read_json(path: Path) -> object:
    """Parsed ``path``, or None when it is unreadable or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _holds_token(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except (OSError, ValueError):
        return False


def _shown(path: Path, home: Path) -> str:
    """``path`` with ``home`` written as ``~``, as users type it."""
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)
