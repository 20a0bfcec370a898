"""Atomic, locked file output and strict JSON/YAML input.

- `atomic_path` writes beside the target and renames onto it once the data is on disk (fsync): a killed
  or failing writer leaves the old file or none, never a half-written one. The temporary file's name
  carries the writer's process id, and temporaries of writers that are gone are deleted by the next
  write into that folder.
- `output_lock` holds an exclusive lock on an output (a folder or a file) for one process: a second
  writer fails at once with a message instead of interleaving. The lock goes with its process, so a
  killed run never leaves a stale lock.
- `read_json` / `read_yaml` turn every way a file can be unreadable into an InputError naming it; YAML
  with a key given twice is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from clipvis.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)
TMP_SUFFIX = ".tmp"
LOCK_NAME = ".clipvis.lock"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the `.NAME.PID.<random>.tmp` files of `folder` whose writing process no longer exists."""
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        parts = tmp.name.rsplit(".", 3)  # [".NAME", PID, random, "tmp"]
        if len(parts) == 4 and parts[1].isdigit() and not _process_exists(int(parts[1])):
            tmp.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Lock the output folder `out` (or, for a file, `.NAME.lock` beside it) for this process.

    The lock file holds the owner's pid and is deleted on release; folders made for it and left empty
    (the run failed before writing) are removed too, so a refused run leaves nothing behind.
    """
    out = Path(out)
    lock_path = out.with_name(f".{out.name}.lock") if out.suffix and not out.is_dir() else out / LOCK_NAME
    made = [folder for folder in (lock_path.parent, *lock_path.parent.parents) if not folder.exists()]
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = _acquire(lock_path, out)
    try:
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # before unlocking: a waiting opener then sees a stale inode
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                folder.rmdir()


def _acquire(lock_path: Path, out: Path):
    """The open, exclusively locked lock file; InputError naming the holder when another process has it."""
    while True:
        lock = open(lock_path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise InputError(out, "", f"another clipvis run is writing here ({holder}); wait for it to end "
                                      "or choose another output") from None
        try:
            if os.stat(lock_path).st_ino == os.fstat(lock.fileno()).st_ino:
                lock.seek(0)
                lock.truncate()
                return lock
        except FileNotFoundError:
            pass
        lock.close()  # the holder deleted the file as we opened it: take the new one


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    write_text(path, json.dumps(obj, indent=indent))


def write_yaml(path: str | Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; missing, unreadable, a folder or binary is an InputError naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "", "not UTF-8 text (a binary file?)") from None
    except OSError as error:
        raise InputError(path, "", os_problem(error)) from None


def os_problem(error: OSError) -> str:
    """A short reason for an OSError, e.g. 'file not found', 'permission denied'."""
    known = {errno.ENOENT: "file not found", errno.EACCES: "cannot read or write it (permission denied)",
             errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "a part of the path is a file, not a folder",
             errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only"}
    return known.get(error.errno, error.strerror or type(error).__name__)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is an InputError naming it."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"line {e.lineno} column {e.colno}", f"malformed JSON ({e.msg})") from None
    except RecursionError:
        raise InputError(path, "", "JSON nested too deeply") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing, unreadable or malformed file, or a repeated key, is an InputError."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InputError(path, where, f"malformed YAML ({getattr(e, 'problem', e)})") from None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def relative_file_name(name: str, source: str | Path, field: str) -> str:
    """A file name read from `source` (an annotation file), checked to stay inside the folder it is
    relative to: absolute names and names with '..' are refused, so that no annotation file makes us
    open files elsewhere."""
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise InputError(source, field, f"{name!r} is not a path inside the image folder")
    return name
