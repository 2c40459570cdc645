"""Safe folder and file saves: build in a temporary sibling, fsync, switch into place atomically.

Rules every folder save follows (``atomic_folder``):

- Only a folder that kalm-rag wrote (it holds the ``.kalm-rag`` marker, or, for folders saved
  before the marker existed, one of our manifests) or an empty folder is ever replaced; any
  other folder, and any plain file, is refused with an error unless ``overwrite=True``
  (a plain file is refused even then).
- Savers of one path are serialised by an inter-process lock (``.NAME.lock`` beside the
  target while a save runs); a second writer waits up to ``KALM_RAG_LOCK_TIMEOUT`` seconds (default 600), then
  fails with an error naming the path.
- The switch is a single atomic ``renameat2(RENAME_EXCHANGE)`` where the OS offers it; where it
  does not, the old folder is moved aside first, and a crash between the two renames is
  repaired by ``recover_folder`` (called by the next save or load of that path).
- Temporary folders left behind by killed saves are removed by the next save of that path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kalm_rag.errors import InvalidInputError

MARKER = ".kalm-rag"
#: Manifests that prove a folder was written by kalm-rag before the marker existed.
LEGACY_MANIFESTS = ("retriever.json", "kalm_rag.json", "vectorstore.json")
_LOCK_TIMEOUT_ENV = "KALM_RAG_LOCK_TIMEOUT"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class SaveConflictError(InvalidInputError):
    """Another writer holds or changed the save target."""


def fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        dir_fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_timeout() -> float:
    raw = os.environ.get(_LOCK_TIMEOUT_ENV, "600")
    try:
        return float(raw)
    except ValueError:
        raise InvalidInputError(f"{_LOCK_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None


@contextlib.contextmanager
def path_lock(lock_file: Path, what: Path, timeout: float | None = None) -> Iterator[None]:
    """An inter-process lock on ``lock_file`` (waits ``timeout`` seconds, then a clear error).

    POSIX: ``flock`` on the file, which the holder deletes before unlocking (so no lock files
    are left behind); a waiter that locked a file already deleted retries on the new one.
    Elsewhere: ``filelock``.
    """
    wait = lock_timeout() if timeout is None else timeout
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        from filelock import FileLock, Timeout

        lock = FileLock(str(lock_file), timeout=wait)
        try:
            lock.acquire()
        except Timeout:
            raise _busy(lock_file, what, wait) from None
        try:
            yield
        finally:
            lock.release()
        return
    fd = _flock(fcntl, lock_file, what, wait)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_file)
        os.close(fd)  # releases the lock


def _flock(fcntl: Any, lock_file: Path, what: Path, wait: float) -> int:
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise _busy(lock_file, what, wait) from None
                    time.sleep(0.02)
            held = os.fstat(fd)
            try:
                current = os.stat(lock_file)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder deleted this file as it unlocked: lock the new one


def _busy(lock_file: Path, what: Path, wait: float) -> SaveConflictError:
    return SaveConflictError(
        f"another process is saving to {what} (lock {lock_file} held for {wait:g} s); "
        f"try again when it has finished, or raise {_LOCK_TIMEOUT_ENV}"
    )


def save_lock(target: str | os.PathLike[str], timeout: float | None = None) -> Any:
    """The lock every writer of the folder ``target`` takes (a file beside it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return path_lock(target.parent / f".{target.name}.lock", target, timeout)


def is_ours(folder: Path) -> bool:
    """Whether ``folder`` was written by kalm-rag (marker, or a legacy manifest)."""
    return (folder / MARKER).is_file() or any((folder / name).is_file() for name in LEGACY_MANIFESTS)


def check_save_target(target: Path, *, overwrite: bool = False) -> None:
    """Refuse to replace a plain file, or a folder holding files kalm-rag did not write."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InvalidInputError(f"cannot save to {target}: it is a file, not a folder; choose another path")
    if not target.is_dir() or overwrite or is_ours(target):
        return
    entries = sorted(p.name for p in target.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise InvalidInputError(
            f"refusing to save into {target}: the folder holds files kalm-rag did not write ({shown}); "
            "choose a new or empty folder, or pass overwrite=True to replace it"
        )


def recover_folder(target: str | os.PathLike[str]) -> bool:
    """Finish a save that crashed between its two renames: put the old folder back.

    Returns True if a folder was restored. Safe to call at any time (it takes the save lock
    only when there is something to repair).
    """
    target = Path(target)
    if target.exists() or not target.parent.is_dir():
        return False
    if not any(target.parent.glob(f".{glob.escape(target.name)}.old-*/x")):
        return False
    with save_lock(target):
        return _recover_locked(target)


def _recover_locked(target: Path) -> bool:
    if target.exists():
        return False
    pattern = f".{glob.escape(target.name)}.old-*/x"
    candidates = sorted(target.parent.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not candidates:
        return False
    os.replace(candidates[-1], target)
    shutil.rmtree(candidates[-1].parent, ignore_errors=True)
    _fsync_dir(target.parent)
    return True


def _remove_leftovers(target: Path) -> None:
    """Temporary folders of killed saves (only ever called with the save lock held)."""
    name = glob.escape(target.name)
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for entry in target.parent.glob(pattern):
            shutil.rmtree(entry, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _switch(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):  # one atomic step: target is always a complete folder
        shutil.rmtree(tmp, ignore_errors=True)  # now the old contents
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "x")
    os.replace(tmp, target)  # a crash before this line is undone by recover_folder
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike[str], *, overwrite: bool = False, kind: str = "folder"
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` atomically.

    A crash at any point leaves either the old folder or the new one, never a mix. The whole
    save runs under the target's inter-process lock. ``kind`` is recorded in the marker.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with save_lock(target):
        _recover_locked(target)
        check_save_target(target, overwrite=overwrite)
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield tmp
            (tmp / MARKER).write_text(json.dumps({"writer": "kalm-rag", "kind": kind}) + "\n", "utf-8")
            fsync_tree(tmp)
            _switch(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed over it."""
    target = Path(target)
    if target.is_dir():
        raise InvalidInputError(f"cannot write the file {target}: it is a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
