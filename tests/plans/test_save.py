"""Saving plans: the umask's permissions, exact modes for key files, and temps of interrupted saves cleaned up."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from opara_plan import load_plan, save_plan
from opara_plan.atomic import atomic_write, remove_stale_temps


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_saved_plan_gets_the_umask_permissions(tiny_plan, tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "m.plan"
    save_plan(tiny_plan, path)
    assert _mode(path) == expected
    save_plan(tiny_plan, path)  # replacing keeps to the umask too
    assert _mode(path) == expected
    assert load_plan(path) == tiny_plan


def test_an_explicit_mode_is_set_exactly(tmp_path, umask):
    umask(0o000)
    atomic_write(tmp_path / "key.pem", b"secret", mode=0o600)
    assert _mode(tmp_path / "key.pem") == 0o600
    umask(0o077)
    atomic_write(tmp_path / "key.pub", b"public", mode=0o644)
    assert _mode(tmp_path / "key.pub") == 0o644
    assert (tmp_path / "key.pem").read_bytes() == b"secret"


def _host() -> str:
    import re

    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temps_of_dead_writers_are_removed_by_the_next_save(tiny_plan, tmp_path):
    path = tmp_path / "m.plan"
    stale = tmp_path / f".m.plan.{_host()}.{_dead_pid()}.0123456789abcdef.tmp"
    stale.write_bytes(b"half a plan")
    save_plan(tiny_plan, path)
    assert sorted(os.listdir(tmp_path)) == ["m.plan"]


def test_live_writers_and_other_files_are_left_alone(tiny_plan, tmp_path):
    path = tmp_path / "m.plan"
    keep = [
        f".m.plan.{_host()}.{os.getpid()}.0123456789abcdef.tmp",  # this process: another thread's save
        f".m.plan.{_host()}.{os.getppid()}.0123456789abcdef.tmp",  # a live process
        f".m.plan.some-other-host.{_dead_pid()}.0123456789abcdef.tmp",  # a writer on another host sharing the folder
        f".other.plan.{_host()}.{_dead_pid()}.0123456789abcdef.tmp",  # another target's temp
        ".m.plan.abcd1234.tmp",  # an older oparac's temp: nothing says whose
        "m.plan.bak",
    ]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    save_plan(tiny_plan, path)
    assert sorted(os.listdir(tmp_path)) == sorted(keep + ["m.plan"])


def test_remove_stale_temps_reports_what_it_removed(tmp_path):
    target = tmp_path / "cache.msgpack"
    stale = [tmp_path / f".cache.msgpack.{_host()}.{_dead_pid()}.{i:016x}.tmp" for i in range(3)]
    for p in stale:
        p.write_bytes(b"")
    assert sorted(remove_stale_temps(target)) == sorted(stale)
    assert remove_stale_temps(target) == []
    assert remove_stale_temps(tmp_path / "missing-folder" / "x") == []


def test_an_interrupted_write_leaves_a_temp_the_next_save_removes(tiny_plan, tmp_path):
    """A writer killed between writing its temp and the rename (here: SIGKILL in a child) leaves its temp;
    the next save of the same plan removes it."""
    path = tmp_path / "m.plan"
    code = (
        "import os, signal, opara_plan.atomic as a\n"
        "os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"a.atomic_write({str(path)!r}, b'partial')\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".tmp")]) == 1
    save_plan(tiny_plan, path)
    assert os.listdir(tmp_path) == ["m.plan"]


def test_a_failed_write_removes_its_own_temp(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "x.bin", b"data")
    assert os.listdir(tmp_path) == []
