"""Atomic file writes: a temp file beside the target, fsync, rename; temps left behind by dead writers are removed."""
from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path


def atomic_write(path, data: bytes, *, mode: int | None = None) -> None:
    """Replace path with data: readers see the old file or the new one, never part of one.

    mode None gives the file 0o666 less the umask, as open() does: the temp is created with that mode and the
    kernel applies the umask (reading the umask would mean setting it, which races with other threads). An
    explicit mode (0o600 for a private key) is set exactly, before any data is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp, fd = _create_temp(path, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def remove_stale_temps(path) -> list[Path]:
    """Remove the temps of path left by writers of this host that are no longer running; return them.

    A temp is named .<name>.<host>.<pid>.<random>.tmp, so a live writer's temp (its process still exists, or it
    was made on another host sharing the folder) is never touched. Best effort: a temp that cannot be removed
    is left for a later save.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]{{1,10}})"
                         rf"\.[0-9a-f]{{16}}\.tmp")
    host, removed = _host(), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _running(pid):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _create_temp(path: Path, mode: int) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):
        tmp = path.parent / f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
        try:
            return tmp, os.open(tmp, flags, mode)
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temp file for {path}: 16 random names were all taken")


def _host() -> str:
    """This host's name as it can appear in a temp's name (no dots: they separate the name's parts)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, ValueError):
        return False  # no process can have this id
    return True


def _sync_folder(folder: Path) -> None:
    """fsync the folder so the rename itself survives a crash (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
