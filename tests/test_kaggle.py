"""Kaggle credentials and downloads: fake env dicts, a tmp home and a fake KaggleApi, no network.

The real ``kaggle`` package is never imported here (it authenticates on import); a fake module
stands in for ``kaggle.api.kaggle_api_extended`` and raises the exceptions kaggle 2.2.5 raises.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import types
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import urllib3

from dia.data.kaggle import check_kaggle_credentials, find_kaggle_credentials, kaggle_download
from dia.errors import DiaError

ROOT = Path(__file__).resolve().parents[1]
USER = "alice"
SECRET = "s3cr3t-kaggle-key-5f0e"
BASIC_AUTH = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
LINUX_ONLY = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="kaggle uses XDG folders on Linux only"
)
NOT_FOUND = (
    "Kaggle credentials not found (needed to download {names}): create an API token at "
    "https://www.kaggle.com/settings (API section) and export KAGGLE_API_TOKEN=<token> or save "
    "it as ~/.kaggle/access_token, or save a legacy key as {json} with chmod 600 (or export "
    "KAGGLE_USERNAME and KAGGLE_KEY); or set datasets.{name}.local_path to a local copy of the "
    "archive"
)
SARS = "plameneduardo/sarscov2-ctscan-dataset"
APTOS = "aptos2019-blindness-detection"


def _put(root: Path, files: dict[str, str | dict]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


class _Tripwire(types.ModuleType):
    """Stands in for an unimported module: any use of it fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"{self.__name__}.{name} used before credentials were checked")


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network access attempted")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No socket can be opened and the kaggle modules cannot be used."""
    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, _no_network)
    for name in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended", "kagglesdk"):
        monkeypatch.setitem(sys.modules, name, _Tripwire(name))


@pytest.fixture
def process_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """This process's environment without Kaggle settings, HOME pointing at ``home``."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name in ("XDG_CONFIG_HOME", "VERBOSE", "VERBOSE_OUTPUT"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    return home


# -- finding credentials --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "files", "expected"),
    [
        ({"KAGGLE_USERNAME": USER, "KAGGLE_KEY": SECRET}, {}, "KAGGLE_USERNAME/KAGGLE_KEY"),
        ({"KAGGLE_API_TOKEN": SECRET}, {}, "KAGGLE_API_TOKEN"),
        ({}, {".kaggle/access_token": f"{SECRET}\n"}, "~/.kaggle/access_token"),
        ({}, {".kaggle/access_token.txt": SECRET}, "~/.kaggle/access_token.txt"),
        ({}, {".kaggle/kaggle.json": {"username": USER, "key": SECRET}}, "~/.kaggle/kaggle.json"),
        pytest.param(
            {},
            {".config/kaggle/kaggle.json": {"username": USER, "key": SECRET}},
            "~/.config/kaggle/kaggle.json",
            marks=LINUX_ONLY,
        ),
        (
            {"KAGGLE_KEY": SECRET},
            {".kaggle/kaggle.json": {"username": USER}},
            "~/.kaggle/kaggle.json with KAGGLE_KEY",
        ),
        ({}, {".kaggle/credentials.json": {"refresh_token": SECRET}}, "~/.kaggle/credentials.json"),
        (  # an access token comes first, as in kaggle's authenticate()
            {"KAGGLE_API_TOKEN": SECRET},
            {".kaggle/kaggle.json": {"username": USER, "key": SECRET}},
            "KAGGLE_API_TOKEN",
        ),
    ],
    ids=[
        "env-pair",
        "token-env",
        "access_token",
        "access_token.txt",
        "kaggle.json",
        "xdg-kaggle.json",
        "kaggle.json+env-key",
        "oauth",
        "token-first",
    ],
)
def test_found_source(home, env, files, expected):
    _put(home, files)
    where = find_kaggle_credentials(env, home)
    assert where == expected
    assert SECRET not in where


def test_kaggle_config_dir(home, tmp_path):
    _put(home, {".kaggle/kaggle.json": {"username": USER, "key": SECRET}})
    config = tmp_path / "cfg"
    config.mkdir()
    env = {"KAGGLE_CONFIG_DIR": str(config)}
    assert find_kaggle_credentials(env, home) is None  # kaggle no longer reads ~/.kaggle then
    _put(config, {"kaggle.json": {"username": USER, "key": SECRET}})
    assert find_kaggle_credentials(env, home) == str(config / "kaggle.json")


@LINUX_ONLY
def test_xdg_config_home(home, tmp_path):
    _put(tmp_path / "xdg", {"kaggle/kaggle.json": {"username": USER, "key": SECRET}})
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert find_kaggle_credentials(env, home) == str(tmp_path / "xdg" / "kaggle" / "kaggle.json")
    (home / ".kaggle").mkdir()  # an existing ~/.kaggle wins over XDG
    assert find_kaggle_credentials(env, home) is None


def test_token_env_naming_a_file(home, tmp_path):
    token = tmp_path / "token"
    token.write_text(SECRET)
    assert find_kaggle_credentials({"KAGGLE_API_TOKEN": str(token)}, home) == (
        f"{token} (KAGGLE_API_TOKEN)"
    )
    token.write_text("")
    _put(home, {".kaggle/access_token": SECRET})
    # kaggle takes an empty token file as no token and looks no further
    assert find_kaggle_credentials({"KAGGLE_API_TOKEN": str(token)}, home) is None


def test_kaggle_notebook_token(home, tmp_path):
    token = tmp_path / "v1_token"
    token.write_text(SECRET)
    env = {
        "KAGGLE_KERNEL_RUN_TYPE": "Interactive",
        "KAGGLE_DATA_PROXY_URL": "http://proxy",
        "KAGGLE_API_V1_TOKEN": str(token),
    }
    assert find_kaggle_credentials(env, home) == f"{token} (KAGGLE_API_V1_TOKEN)"


@pytest.mark.parametrize(
    ("env", "files"),
    [
        ({}, {}),
        ({"KAGGLE_USERNAME": "", "KAGGLE_KEY": ""}, {}),
        ({"KAGGLE_USERNAME": USER}, {}),
        ({}, {".kaggle/access_token": "  \n"}),
        ({}, {".kaggle/credentials.json": {"username": USER}}),
    ],
    ids=["nothing", "empty-env", "username-only", "blank-token-file", "oauth-without-refresh"],
)
def test_not_found(home, env, files):
    _put(home, files)
    assert find_kaggle_credentials(env, home) is None


def test_defaults_are_process_env_and_home(process_env, monkeypatch):
    assert find_kaggle_credentials() is None
    _put(process_env, {".kaggle/kaggle.json": {"username": USER, "key": SECRET}})
    assert find_kaggle_credentials() == "~/.kaggle/kaggle.json"
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    assert find_kaggle_credentials() == "KAGGLE_API_TOKEN"


# -- checking credentials -------------------------------------------------------------------


@pytest.mark.usefixtures("offline")
def test_missing_credentials_guidance(home):
    with pytest.raises(DiaError) as err:
        check_kaggle_credentials(["sarscov2", "aptos2019"], {}, home)
    assert str(err.value) == NOT_FOUND.format(
        names="sarscov2, aptos2019", json="~/.kaggle/kaggle.json", name="<name>"
    )
    with pytest.raises(DiaError) as err:
        check_kaggle_credentials(["kermany"], {}, home)
    assert str(err.value) == NOT_FOUND.format(
        names="kermany", json="~/.kaggle/kaggle.json", name="kermany"
    )


@pytest.mark.usefixtures("offline")
def test_missing_credentials_names_kaggle_config_dir(home, tmp_path):
    with pytest.raises(DiaError, match=r"save a legacy key as .*/cfg/kaggle\.json with chmod 600"):
        check_kaggle_credentials(["sarscov2"], {"KAGGLE_CONFIG_DIR": str(tmp_path / "cfg")}, home)


def test_check_imports_no_kaggle(tmp_path):
    """In a fresh interpreter, a failed check leaves kaggle unimported (its import would
    authenticate and create its config folder under HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["HOME"] = str(tmp_path)
    code = (
        "import sys\n"
        "from dia.data.kaggle import check_kaggle_credentials\n"
        "from dia.errors import DiaError\n"
        "try:\n"
        "    check_kaggle_credentials(['sarscov2'])\n"
        "except DiaError:\n"
        "    print('raised')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kaggle', 'kagglesdk')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["raised", "[]"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    "content",
    ['{"username": "alice", "key": "' + SECRET, '["alice"]', '{"username": "alice"}', "\udcff"],
    ids=["truncated", "list", "no-key", "not-utf8"],
)
def test_malformed_kaggle_json(home, content):
    path = home / ".kaggle" / "kaggle.json"
    path.parent.mkdir()
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(DiaError) as err:
        check_kaggle_credentials(["sarscov2", "kermany"], {}, home)
    message = str(err.value)
    assert message.startswith(
        '~/.kaggle/kaggle.json is not JSON holding "username" and "key", so Kaggle cannot use it '
        "(needed to download sarscov2, kermany): "
    )
    assert "datasets.<name>.local_path" in message
    assert SECRET not in message
    assert "\n" not in message


def test_malformed_kaggle_json_with_env_pair_passes(home):
    _put(home, {".kaggle/kaggle.json": "{"})
    env = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": SECRET}
    assert check_kaggle_credentials(["sarscov2"], env, home) is None


def test_real_kaggle_without_network(tmp_path):
    """The pinned kaggle itself, sockets disabled: our calls fit its API, a connection failure
    is one line, and VERBOSE=1 does not make it print the Authorization header."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(tmp_path), VERBOSE="1", KAGGLE_USERNAME=USER, KAGGLE_KEY=SECRET)
    code = (
        "import socket, sys\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('sockets disabled by the test')\n"
        "socket.getaddrinfo = socket.create_connection = refuse\n"
        "from pathlib import Path\n"
        "from dia.data.kaggle import kaggle_download\n"
        "from dia.errors import DiaError\n"
        "try:\n"
        "    kaggle_download('competition', sys.argv[1], Path(sys.argv[2]), dataset='aptos2019')\n"
        "except DiaError as exc:\n"
        "    print('DiaError:', exc)\n"
    )
    dest = tmp_path / "raw" / "archive.zip"
    result = subprocess.run(
        [sys.executable, "-c", code, APTOS, str(dest)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"DiaError: could not download Kaggle competition {APTOS} for aptos2019 (ConnectionError: "
        in result.stdout
    )
    output = result.stdout + result.stderr
    assert "Authorization" not in output
    assert SECRET not in output and BASIC_AUTH not in output
    assert list(dest.parent.iterdir()) == []


# -- downloading ----------------------------------------------------------------------------


def _write_zip(folder: Path, name: str) -> None:
    with zipfile.ZipFile(folder / name, "w") as zf:
        zf.writestr("COVID/1.png", b"png")


@dataclass
class FakeKaggle:
    """What the fake KaggleApi does and what it was asked: ``action(folder, file_name)`` stands
    in for the transfer; kaggle names the file ``<slug>.zip`` or ``<competition>.zip``."""

    action: Callable[[Path, str], None] = _write_zip
    auth_error: BaseException | None = None
    calls: list[tuple] = field(default_factory=list)


@pytest.fixture
def fake_kaggle(monkeypatch: pytest.MonkeyPatch, process_env: Path) -> FakeKaggle:
    """Legacy credentials in the environment and a fake in place of the real kaggle module."""
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    state = FakeKaggle()

    class KaggleApi:
        def __init__(self) -> None:
            self.args = ["--verbose"]  # what kaggle sets when VERBOSE=1

        def authenticate(self) -> None:
            state.calls.append(("authenticate", list(self.args)))
            if state.auth_error is not None:
                raise state.auth_error

        def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False):
            state.calls.append(("dataset", dataset, Path(path), force, quiet, unzip))
            state.action(Path(path), dataset.split("/")[1] + ".zip")

        def competition_download_files(self, competition, path=None, force=False, quiet=True):
            state.calls.append(("competition", competition, Path(path), force, quiet))
            state.action(Path(path), competition + ".zip")

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = KaggleApi
    monkeypatch.setitem(sys.modules, "kaggle", types.ModuleType("kaggle"))
    monkeypatch.setitem(sys.modules, "kaggle.api", types.ModuleType("kaggle.api"))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, _no_network)
    return state


def _http_error(status: int) -> requests.HTTPError:
    """The error kagglesdk raises (``raise_for_status``), its request carrying our credentials."""
    request = requests.Request(
        "POST", "https://api.kaggle.com/v1/competitions.CompetitionApiService/DownloadDataFiles"
    )
    response = requests.Response()
    response.status_code = status
    response.reason = "Forbidden"
    response.request = request.prepare()
    response.request.prepare_auth((USER, SECRET))
    response.url = response.request.url
    try:
        response.raise_for_status()
    except requests.HTTPError as exc:
        assert BASIC_AUTH in exc.request.headers["Authorization"]
        return exc
    raise AssertionError(f"HTTP {status} is not an error")


def _no_secret(message: str) -> None:
    assert SECRET not in message
    assert BASIC_AUTH not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kind", "ref", "name"),
    [("dataset", SARS, "sarscov2-ctscan-dataset.zip"), ("competition", APTOS, f"{APTOS}.zip")],
)
def test_download_moves_complete_zip_onto_dest(fake_kaggle, tmp_path, capsys, kind, ref, name):
    dest = tmp_path / "raw" / "sarscov2" / "archive.zip"

    def transfer(folder: Path, file_name: str) -> None:
        assert file_name == name
        assert folder.parent == dest.parent and folder.is_dir()
        assert not dest.exists()
        _write_zip(folder, file_name)

    fake_kaggle.action = transfer
    assert kaggle_download(kind, ref, dest, dataset="sarscov2") == dest
    with zipfile.ZipFile(dest) as zf:
        assert zf.namelist() == ["COVID/1.png"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["archive.zip"]
    auth, (called_kind, called_ref, folder, force, quiet, *_) = fake_kaggle.calls
    assert auth == ("authenticate", [])  # VERBOSE's header dump is switched off
    assert (called_kind, called_ref, force, quiet) == (kind, ref, False, False)
    assert folder == dest.with_name("archive.zip.kaggle-part")
    _no_secret(capsys.readouterr().out)


@pytest.mark.usefixtures("offline")
def test_existing_dest_needs_neither_credentials_nor_kaggle(process_env, tmp_path):
    dest = tmp_path / "archive.zip"
    dest.write_bytes(b"kept")
    assert kaggle_download("competition", APTOS, dest, dataset="aptos2019") == dest
    assert dest.read_bytes() == b"kept"


@pytest.mark.usefixtures("offline")
def test_download_without_credentials_stops_before_kaggle(process_env, tmp_path):
    dest = tmp_path / "raw" / "archive.zip"
    with pytest.raises(DiaError) as err:
        kaggle_download("dataset", SARS, dest, dataset="sarscov2")
    assert str(err.value) == NOT_FOUND.format(
        names="sarscov2", json="~/.kaggle/kaggle.json", name="sarscov2"
    )
    assert not dest.parent.exists()


def test_competition_rules_not_accepted(fake_kaggle, tmp_path):
    def refuse(folder: Path, name: str) -> None:
        raise _http_error(403)

    fake_kaggle.action = refuse
    dest = tmp_path / "raw" / "archive.zip"
    with pytest.raises(DiaError) as err:
        kaggle_download("competition", APTOS, dest, dataset="aptos2019")
    message = str(err.value)
    assert message == (
        f"Kaggle refused the {APTOS} competition data for aptos2019 (HTTP 403): accept the rules "
        f"at https://www.kaggle.com/competitions/{APTOS}/rules with the Kaggle account of your "
        f"token (KAGGLE_USERNAME/KAGGLE_KEY), then re-run"
    )
    _no_secret(message)
    assert list(dest.parent.iterdir()) == []  # no dest, no empty download folder


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("dataset", 401, "rejected the credentials from KAGGLE_USERNAME/KAGGLE_KEY"),
        ("competition", 401, "rejected the credentials from KAGGLE_USERNAME/KAGGLE_KEY"),
        ("dataset", 403, f"https://www.kaggle.com/datasets/{SARS} opens for that account"),
        ("dataset", 404, "is not accessible with the credentials from KAGGLE_USERNAME/KAGGLE_KEY"),
        ("competition", 404, f"https://www.kaggle.com/competitions/{APTOS} opens"),
        ("dataset", 500, r"\(HTTP 500\): re-run later .*datasets\.sarscov2\.local_path"),
    ],
)
def test_http_errors(fake_kaggle, tmp_path, kind, status, expected):
    def fail(folder: Path, name: str) -> None:
        raise _http_error(status)

    fake_kaggle.action = fail
    dest = tmp_path / "archive.zip"
    with pytest.raises(DiaError, match=expected) as err:
        kaggle_download(kind, SARS if kind == "dataset" else APTOS, dest, dataset="sarscov2")
    _no_secret(str(err.value))
    assert not dest.exists()


def test_token_failing_kaggles_check(fake_kaggle, tmp_path):
    fake_kaggle.auth_error = SystemExit(1)  # kaggle's authenticate() exits when no token works
    with pytest.raises(DiaError, match=r"^Kaggle rejected the credentials from KAGGLE_USERNAME/"):
        kaggle_download("dataset", SARS, tmp_path / "raw" / "archive.zip", dataset="sarscov2")
    assert list((tmp_path / "raw").iterdir()) == []


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError(
            "Connection broken: https://storage.googleapis.com/a.zip?X-Goog-Signature=" + SECRET
        ),
        requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        ValueError("Downloaded file size (3) does not match expected size (9)"),
        OSError(28, "No space left on device"),
    ],
    ids=["connection", "chunked", "protocol", "size", "disk"],
)
def test_interrupted_download_leaves_no_dest_and_resumes(fake_kaggle, tmp_path, error):
    dest = tmp_path / "raw" / "archive.zip"

    def cut(folder: Path, name: str) -> None:
        (folder / name).write_bytes(b"PK\x03")
        (folder / f"{name}.kaggle-partial").write_text('{"validator": "etag", "size": 9}')
        raise error

    fake_kaggle.action = cut
    with pytest.raises(DiaError, match=r"re-run \(the download resumes\), or set datasets") as err:
        kaggle_download("dataset", SARS, dest, dataset="sarscov2")
    _no_secret(str(err.value))
    assert not dest.exists()

    def resume(folder: Path, name: str) -> None:
        assert (folder / name).read_bytes() == b"PK\x03"  # kaggle finds its partial file again
        (folder / f"{name}.kaggle-partial").unlink()
        _write_zip(folder, name)

    fake_kaggle.action = resume
    assert kaggle_download("dataset", SARS, dest, dataset="sarscov2") == dest
    assert zipfile.is_zipfile(dest)
    assert list(dest.parent.iterdir()) == [dest]


def test_download_that_is_not_a_zip_is_deleted(fake_kaggle, tmp_path):
    fake_kaggle.action = lambda folder, name: (folder / name).write_text("<html>oops</html>")
    dest = tmp_path / "raw" / "archive.zip"
    with pytest.raises(DiaError, match=r"did not arrive as one zip archive.*it was deleted"):
        kaggle_download("dataset", SARS, dest, dataset="sarscov2")
    assert list((tmp_path / "raw").iterdir()) == []
