"""UidPool: flock'd uid slots in a tmp lock dir."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rustbox._errors import RustboxError
from rustbox._host import UidLease, UidPool, UidPoolExhausted

_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def lock_dir(tmp_path: Path) -> str:
    return str(tmp_path / "locks" / "uids")


@pytest.fixture
def holder(lock_dir: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding uid 60001's lock."""
    Path(lock_dir).mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, f"{lock_dir}/60001.lock"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_two_leases_in_one_process_differ(lock_dir: str) -> None:
    pool = UidPool(first=60000, count=3, lock_dir=lock_dir)
    a, b = pool.acquire(), pool.acquire()
    assert a.uid != b.uid
    assert (a.gid, b.gid) == (a.uid, b.uid)
    assert pool.in_use() == sorted([a.uid, b.uid])
    a.release()
    b.release()
    assert pool.in_use() == []


def test_two_pools_in_one_process_never_share(lock_dir: str) -> None:
    """flock is per open file description: a second pool object must not reuse a uid."""
    leases = [UidPool(60000, 4, lock_dir).acquire() for _ in range(4)]
    try:
        assert sorted(lease.uid for lease in leases) == [60000, 60001, 60002, 60003]
    finally:
        for lease in leases:
            lease.release()


def test_lock_dir_and_files_are_private(lock_dir: str) -> None:
    lease = UidPool(60000, 2, lock_dir).acquire()
    lease.release()
    assert stat.S_IMODE(Path(lock_dir).stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(lock_dir, f"{lease.uid}.lock").stat().st_mode) == 0o600


def test_release_frees_and_is_idempotent(lock_dir: str) -> None:
    pool = UidPool(60000, 1, lock_dir)
    lease = pool.acquire()
    assert not pool.is_free(lease.uid)
    assert lease.held
    lease.release()
    lease.release()
    assert not lease.held
    assert pool.is_free(lease.uid)
    assert os.path.exists(f"{lock_dir}/{lease.uid}.lock")
    with pool.acquire() as again:
        assert again.uid == lease.uid
    assert pool.is_free(lease.uid)


def test_rotating_start(lock_dir: str) -> None:
    pool = UidPool(60000, 3, lock_dir)
    uids = []
    for _ in range(4):
        lease = pool.acquire()
        uids.append(lease.uid)
        lease.release()
    assert uids == [60000, 60001, 60002, 60000]


def test_exhaustion(lock_dir: str) -> None:
    pool = UidPool(first=61000, count=2, lock_dir=lock_dir)
    leases = [pool.acquire(), pool.acquire()]
    with pytest.raises(UidPoolExhausted) as info:
        pool.acquire()
    assert isinstance(info.value, RustboxError)
    message = str(info.value)
    assert "61000..61001" in message
    assert lock_dir in message
    for lease in leases:
        lease.release()
    pool.acquire().release()


def test_probe_does_not_keep_or_create(lock_dir: str) -> None:
    pool = UidPool(60000, 2, lock_dir)
    assert pool.is_free(60000)
    assert pool.in_use() == []
    assert not os.path.exists(lock_dir)
    pool.acquire().release()
    assert pool.is_free(60000)
    assert pool.is_free(60000)  # a probe leaves no lock behind


def test_try_acquire(lock_dir: str) -> None:
    pool = UidPool(60000, 2, lock_dir)
    lease = pool.try_acquire(60001)
    assert isinstance(lease, UidLease)
    assert lease.uid == 60001
    assert pool.try_acquire(60001) is None
    assert pool.acquire().uid == 60000
    lease.release()
    with pytest.raises(ValueError, match="outside"):
        pool.try_acquire(0)


def test_lock_held_by_another_process_is_skipped(
    lock_dir: str, holder: subprocess.Popen[str]
) -> None:
    pool = UidPool(60000, 3, lock_dir)
    assert pool.in_use() == [60001]
    assert not pool.is_free(60001)
    leases = [pool.acquire(), pool.acquire()]
    assert [lease.uid for lease in leases] == [60000, 60002]
    with pytest.raises(UidPoolExhausted):
        pool.acquire()
    for lease in leases:
        lease.release()


def test_killed_holder_frees_its_uid(lock_dir: str, holder: subprocess.Popen[str]) -> None:
    pool = UidPool(60001, 1, lock_dir)
    with pytest.raises(UidPoolExhausted):
        pool.acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert pool.is_free(60001)
    lease = pool.acquire()
    assert lease.uid == 60001
    lease.release()


def test_forked_child_keeps_the_lease_until_it_exits(lock_dir: str) -> None:
    """A lease inherited across fork is held while any copy of the fd is open."""
    pool = UidPool(60000, 1, lock_dir)
    lease = pool.acquire()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        lease.release()
        assert not pool.is_free(60000)
    finally:
        os.close(w)
        os.waitpid(pid, 0)
    assert pool.is_free(60000)


@pytest.mark.parametrize(("first", "count"), [(0, 10), (60000, 0), (2**32 - 5, 10)])
def test_bad_range(first: int, count: int) -> None:
    with pytest.raises(ValueError, match="uid pool"):
        UidPool(first, count)
