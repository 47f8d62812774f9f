"""download(): against a local HTTP server only (127.0.0.1), with and without Range support."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from dia.data import download as download_module
from dia.data.download import download
from dia.errors import DiaError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _no_pause_between_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "_RETRY_WAITS", (0.0, 0.0))


class _Handler(BaseHTTPRequestHandler):
    supports_range = True
    cut_responses = 0  # how many first responses drop mid-transfer
    requests: list[str | None]
    sent: list[int]

    def do_GET(self) -> None:
        if self.path != "/data.npz":
            self.requests.append("404")
            self.send_error(404)
            return
        header = self.headers.get("Range")
        self.requests.append(header)
        start = 0
        if header and self.supports_range:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(PAYLOAD):
                self.send_error(416)
                return
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if len(self.sent) < self.cut_responses:
            body = body[: len(body) // 2]  # connection drops mid-transfer
        self.sent.append(len(body))  # before writing: the client may finish before we return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[True, False], ids=["range", "no-range"])
def server(request: pytest.FixtureRequest) -> Iterator[type[_Handler]]:
    handler = type("Handler", (_Handler,), {"supports_range": request.param})
    handler.requests, handler.sent = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}/data.npz"
    yield handler
    httpd.shutdown()
    httpd.server_close()


def test_full_download(server, tmp_path):
    dest = tmp_path / "sub" / "data.npz"
    assert download(server.url, dest, md5=MD5, size=len(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_suffix(".npz.part").exists()
    assert server.requests == [None]


def test_resume_from_partial(server, tmp_path):
    dest = tmp_path / "data.npz"
    dest.with_suffix(".npz.part").write_bytes(PAYLOAD[:100_000])
    download(server.url, dest, md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == ["bytes=100000-"]
    assert server.sent == [len(PAYLOAD) - 100_000 if server.supports_range else len(PAYLOAD)]


@pytest.mark.parametrize("server", [False], indirect=True, ids=["no-range"])
def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "data.npz"
    dest.with_suffix(".npz.part").write_bytes(b"garbage that is not a prefix")
    download(server.url, dest, md5=MD5)
    assert dest.read_bytes() == PAYLOAD


def test_oversized_part_is_discarded(server, tmp_path):
    dest = tmp_path / "data.npz"
    dest.with_suffix(".npz.part").write_bytes(PAYLOAD + b"extra")
    download(server.url, dest, md5=MD5, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [None]


def test_a_dropped_connection_is_resumed_in_the_same_run(server, tmp_path):
    server.cut_responses = 1
    dest = tmp_path / "data.npz"
    download(server.url, dest, md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    resumed = f"bytes={len(PAYLOAD) // 2}-"
    assert server.requests == [None, resumed]


def test_three_dropped_connections_leave_the_part_for_a_rerun(server, tmp_path):
    server.cut_responses = 3
    dest = tmp_path / "data.npz"
    with pytest.raises(DiaError, match=r"stopped at .* re-run"):
        download(server.url, dest, md5=MD5)
    assert len(server.requests) == 3
    assert not dest.exists() and dest.with_suffix(".npz.part").exists()
    download(server.url, dest, md5=MD5)
    assert dest.read_bytes() == PAYLOAD


def test_md5_mismatch_deletes_part_and_leaves_no_dest(server, tmp_path):
    dest = tmp_path / "data.npz"
    wrong = "0" * 32
    with pytest.raises(DiaError) as excinfo:
        download(server.url, dest, md5=wrong)
    message = str(excinfo.value)
    assert "data.npz" in message and wrong in message and MD5 in message
    assert "re-run" in message
    assert not dest.exists()
    assert not dest.with_suffix(".npz.part").exists()


def test_existing_correct_file_is_untouched(server, tmp_path):
    dest = tmp_path / "data.npz"
    dest.write_bytes(PAYLOAD)
    os.utime(dest, (1_000_000, 1_000_000))
    download(server.url, dest, md5=MD5, size=len(PAYLOAD))
    assert server.requests == []
    assert dest.stat().st_mtime == 1_000_000


def test_existing_wrong_file_is_replaced(server, tmp_path):
    dest = tmp_path / "data.npz"
    dest.write_bytes(b"stale")
    download(server.url, dest, md5=MD5)
    assert dest.read_bytes() == PAYLOAD


def test_http_error_names_url_and_local_path_without_retrying(server, tmp_path):
    url = server.url.replace("data.npz", "missing.npz")
    with pytest.raises(DiaError, match=r"missing\.npz.*local_path"):
        download(url, tmp_path / "data.npz", md5=MD5)
    assert not (tmp_path / "data.npz").exists()
    assert server.requests == ["404"]  # asked once: a retry cannot find a missing file


def test_connection_refused_names_url(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = httpd.server_address[1]
    httpd.server_close()
    url = f"http://127.0.0.1:{port}/data.npz"
    with pytest.raises(DiaError, match=f"127.0.0.1:{port}.*local_path"):
        download(url, tmp_path / "data.npz", timeout=5)
