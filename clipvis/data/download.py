"""Resumable, checksum-verified downloads (standard library only).

`download(remote, dest)` streams to `dest.part`, resuming with an HTTP Range request when a part
file is left from an earlier attempt (a server that ignores Range is answered by starting over),
verifies the checksum and renames the part onto `dest`. An archive is then unpacked into its own
folder and removed; a marker file records that it was unpacked, so a second call does nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from clipvis.data.registry import Benchmark, RemoteFile
from clipvis.errors import InputError
from clipvis.files import write_text

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read per step
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class _Interrupted(Exception):
    """The transfer stopped early; what arrived is kept in the part file."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def extracted_marker(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.extracted")


def is_complete(remote: RemoteFile, dest: str | Path) -> bool:
    """Whether `dest` was already downloaded (and, for an archive, unpacked)."""
    dest = Path(dest)
    return extracted_marker(dest).exists() if remote.is_archive else dest.is_file()


def download(remote: RemoteFile, dest: str | Path, attempts: int = 3, timeout: float = 60.0) -> Path:
    """Fetch `remote` to `dest` (resuming up to `attempts` times), verify it, unpack an archive.

    Returns `dest`, or its folder for an archive. Raises InputError when the file cannot be fetched
    (the message says where to put it by hand) or its checksum does not match (the part is deleted).
    """
    dest = Path(dest)
    if is_complete(remote, dest):
        return dest.parent if remote.is_archive else dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.is_file():  # an archive already renamed in place only needs unpacking
        part = part_path(dest)
        for attempt in range(1, attempts + 1):
            try:
                _fetch(remote, part, timeout)
                break
            except _Interrupted as e:
                log.warning("%s: %s (attempt %d of %d)", remote.url, e, attempt, attempts)
                if attempt == attempts:
                    raise InputError(remote.url, "", f"{e}; run again to resume from {part}") from None
        _verify(remote, part)
        part.replace(dest)
    if not remote.is_archive:
        return dest
    _extract(dest, dest.parent)
    write_text(extracted_marker(dest), f"{remote.url}\n")
    dest.unlink()
    return dest.parent


def _fetch(remote: RemoteFile, part: Path, timeout: float) -> None:
    """Append the missing bytes of `remote` to `part` (restarting if the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset >= remote.size:
        return
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the part is complete (checked next)
            return
        raise _unreachable(remote, part, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _unreachable(remote, part, str(getattr(e, "reason", e))) from None
    with response:
        if offset and response.status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink()
                raise _Interrupted(f"server resumed at byte {start} instead of {offset}; starting over")
        elif offset:
            log.info("%s: server ignored the Range request; downloading from the start", remote.url)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else remote.size
        received = _stream(response, part, offset, expected, remote.url)
    if expected is not None and received < expected:
        raise _Interrupted(f"connection closed after {received} of {expected} bytes")


def _stream(response, part: Path, offset: int, total: int | None, url: str) -> int:
    """Write the response body to `part` from `offset`; returns the part's size at the end."""
    received = offset
    with part.open("ab" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                 disable=None) as bar:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.IncompleteRead, OSError) as e:
                raise _Interrupted(f"connection lost after {received} bytes ({e.__class__.__name__})") from None
            if not chunk:
                return received
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))


def _range_start(content_range: str) -> int | None:
    match = _CONTENT_RANGE.match(content_range)
    return int(match.group(1)) if match else None


def _unreachable(remote: RemoteFile, part: Path, reason: str) -> InputError:
    dest = part.with_name(part.name.removesuffix(".part"))
    return InputError(remote.url, "", f"cannot download ({reason}); fetch it yourself and put it at {dest}")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(remote: RemoteFile, part: Path) -> None:
    algorithm, expected = ("sha256", remote.sha256) if remote.sha256 else ("md5", remote.md5)
    actual = file_digest(part, algorithm)
    if actual != expected.lower():
        part.unlink()
        raise InputError(remote.url, algorithm, f"checksum mismatch for {part.name.removesuffix('.part')}: "
                                                f"expected {expected}, got {actual}; the download was deleted")


def _extract(archive: Path, into: Path) -> None:
    log.info("unpacking %s into %s", archive, into)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)  # zipfile drops absolute paths and '..' from member names
    else:
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")  # refuses members that would land outside `into`


def download_public(benchmarks: list[Benchmark], root: Path) -> list[InputError]:
    """Download every public file of the benchmarks (each once); returns the errors of those that failed."""
    failures = []
    for remote in dict.fromkeys(remote for benchmark in benchmarks for remote in benchmark.downloads):
        try:
            download(remote, root / remote.relative_path)
        except InputError as error:
            failures.append(error)
    return failures
