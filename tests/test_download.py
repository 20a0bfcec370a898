"""The downloader against a local HTTP server that supports (or ignores) Range and can drop connections."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import zipfile

import pytest

from clipvis.data.registry import RemoteFile
from clipvis.data.download import download, extracted_marker, part_path
from clipvis.errors import InputError

PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        range_header = self.headers.get("Range")
        server.ranges.append(range_header)
        data = server.payload
        start = 0
        if range_header and server.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.drop_after.pop(0) if server.drop_after else None
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True  # the client sees the stream end before Content-Length

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A server for `server.payload`; set `honour_range` and `drop_after` (bytes per request) per test."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.honour_range, httpd.drop_after, httpd.ranges = PAYLOAD, True, [], []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/file.bin"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _remote(url: str, data: bytes, relative_path: str = "file.bin", **kwargs) -> RemoteFile:
    return RemoteFile(url, relative_path, sha256=hashlib.sha256(data).hexdigest(), **kwargs)


def test_complete_download_is_verified_and_renamed(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    assert download(_remote(server.url, PAYLOAD, size=len(PAYLOAD)), dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()
    assert server.ranges == [None]
    download(_remote(server.url, PAYLOAD), dest)  # already there: no second request
    assert server.ranges == [None]


def test_interrupted_download_resumes_from_the_part_file(server, tmp_path):
    dest = tmp_path / "file.bin"
    server.drop_after = [100_000]
    with pytest.raises(InputError, match="run again to resume"):
        download(_remote(server.url, PAYLOAD), dest, attempts=1)
    assert part_path(dest).read_bytes() == PAYLOAD[:100_000]
    assert not dest.exists()

    download(_remote(server.url, PAYLOAD), dest)
    assert server.ranges == [None, "bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()


def test_dropped_connection_is_resumed_within_one_call(server, tmp_path):
    dest = tmp_path / "file.bin"
    server.drop_after = [5_000, 70_000]
    download(_remote(server.url, PAYLOAD, size=len(PAYLOAD)), dest)
    assert server.ranges == [None, "bytes=5000-", "bytes=75000-"]
    assert dest.read_bytes() == PAYLOAD


def test_wrong_checksum_leaves_neither_file_nor_part(server, tmp_path):
    dest = tmp_path / "file.bin"
    wrong = "0" * 64
    with pytest.raises(InputError) as error:
        download(RemoteFile(server.url, "file.bin", sha256=wrong), dest)
    message = str(error.value)
    assert server.url in message and wrong in message and hashlib.sha256(PAYLOAD).hexdigest() in message
    assert not dest.exists() and not part_path(dest).exists()


def test_server_ignoring_range_restarts_from_the_beginning(server, tmp_path):
    dest = tmp_path / "file.bin"
    part_path(dest).write_bytes(b"\xff" * 1000)  # a stale part: appending to it would fail the checksum
    server.honour_range = False
    download(_remote(server.url, PAYLOAD), dest)
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD


def test_a_complete_part_is_verified_without_refetching(server, tmp_path):
    dest = tmp_path / "file.bin"
    part_path(dest).write_bytes(PAYLOAD)
    download(_remote(server.url, PAYLOAD), dest)  # size unknown: the server answers 416
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_unreachable_server_says_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "lvis" / "file.zip"
    url = f"http://127.0.0.1:{port}/file.zip"
    with pytest.raises(InputError) as error:
        download(_remote(url, b"x", relative_path="lvis/file.zip"), dest, timeout=5)
    message = str(error.value)
    assert "\n" not in message and url in message and str(dest) in message


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("suffix, pack", [(".zip", _zip), (".tar.gz", _tar_gz)])
def test_archive_is_unpacked_into_its_folder_once(server, tmp_path, suffix, pack):
    server.payload = pack({"annotations/a.json": b"{}", "train/1.jpg": b"jpeg"})
    dest = tmp_path / "coco" / f"pack{suffix}"
    remote = RemoteFile(server.url, f"coco/pack{suffix}", md5=hashlib.md5(server.payload).hexdigest())
    assert download(remote, dest) == dest.parent
    assert (dest.parent / "annotations" / "a.json").read_bytes() == b"{}"
    assert (dest.parent / "train" / "1.jpg").read_bytes() == b"jpeg"
    assert not dest.exists() and extracted_marker(dest).exists()
    download(remote, dest)
    assert server.ranges == [None]


def test_remote_file_needs_a_checksum():
    with pytest.raises(ValueError, match="checksum"):
        RemoteFile("http://example.org/a.zip", "a.zip")
