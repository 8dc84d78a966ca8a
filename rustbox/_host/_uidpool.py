"""A pool of unprivileged uids, one per run, shared safely between processes.

Two runs must never share a uid: processes of one uid can signal and ptrace
each other and share files. Each uid has a lock file ``<lock_dir>/<uid>.lock``;
holding ``flock(LOCK_EX)`` on it is owning the uid. flock locks belong to the
open file description, so:

- two acquisitions in one process conflict like two processes do;
- the lock lives as long as any process holds a descriptor of it (a forked
  child keeps its parent's lease alive until it closes or execs: the fds are
  close-on-exec);
- a crashed holder's locks disappear with its fds, so there is nothing to
  sweep after a crash.

Lock files are never unlinked: unlinking races with another acquirer that has
the file open but not yet locked, and both would then "own" the uid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from typing import Final

import attrs

from rustbox._errors import RustboxError, SyscallError

__all__ = ["UidLease", "UidPool", "UidPoolExhausted"]

_LOCK_NAME: Final = re.compile(r"^(\d+)\.lock$")
_MAX_UID: Final = 2**32 - 2  # (uid_t)-1 means "unchanged" to setresuid


class UidPoolExhausted(RustboxError):
    """Every uid of the pool is held by a run (or leaked by a live process)."""

    def __init__(self, first: int, count: int, lock_dir: str) -> None:
        super().__init__(
            f"no free uid in {first}..{first + count - 1} ({count} uids): "
            f"every lock in {lock_dir} is held"
        )
        self.first = first
        self.count = count
        self.lock_dir = lock_dir


@attrs.define(eq=False)
class UidLease:
    """Ownership of one uid (and the gid of the same number) until released."""

    uid: int
    gid: int
    _fd: int = attrs.field(repr=False)

    def release(self) -> None:
        """Give the uid back (idempotent) by closing this lock descriptor.

        Copies of the descriptor inherited by forked children keep the lock
        until they close too, which is the safe direction.
        """
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def fileno(self) -> int:
        """The lock descriptor: a process holding a duplicate keeps the uid locked."""
        if self._fd < 0:
            raise ValueError("the lease was released")
        return self._fd

    def __enter__(self) -> UidLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _check_range(instance: UidPool, _attribute: object, _value: int) -> None:
    if instance.first < 1 or instance.count < 1 or instance.first + instance.count - 1 > _MAX_UID:
        raise ValueError(
            f"uid pool {instance.first}+{instance.count} must lie in 1..{_MAX_UID} (never root)"
        )


@attrs.define(eq=False)
class UidPool:
    """Hands out uids ``first .. first+count-1``, guarded by flock'd lock files."""

    first: int = 60000
    count: int = attrs.field(default=1000, validator=_check_range)
    lock_dir: str = "/run/rustbox/uids"
    # Where the next scan starts, so consecutive runs in one process do not
    # reuse a uid at once (a straggler of the previous run could still own files).
    _next: int = attrs.field(default=0, init=False, repr=False)

    def _path(self, uid: int) -> str:
        return f"{self.lock_dir}/{uid}.lock"

    def _open(self, uid: int, *, create: bool) -> int | None:
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        if create:
            flags |= os.O_CREAT
        try:
            return os.open(self._path(uid), flags, 0o600)
        except FileNotFoundError:
            if create:
                raise SyscallError("open", errno.ENOENT, self._path(uid)) from None
            return None
        except OSError as exc:
            raise SyscallError("open", exc.errno or errno.EIO, self._path(uid)) from exc

    @staticmethod
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _ensure_dir(self) -> None:
        try:
            os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise SyscallError("mkdir", exc.errno or errno.EIO, self.lock_dir) from exc

    def _lease(self, uid: int) -> UidLease | None:
        fd = self._open(uid, create=True)
        assert fd is not None
        if self._try_lock(fd):
            return UidLease(uid, uid, fd)
        os.close(fd)
        return None

    def acquire(self) -> UidLease:
        """Lock the first free uid, scanning from a rotating start."""
        self._ensure_dir()
        start = self._next
        for step in range(self.count):
            offset = (start + step) % self.count
            lease = self._lease(self.first + offset)
            if lease is not None:
                self._next = (offset + 1) % self.count
                return lease
        raise UidPoolExhausted(self.first, self.count, self.lock_dir)

    def try_acquire(self, uid: int) -> UidLease | None:
        """Lock this very uid if it is free, else None.

        For sweeping: a crashed run's leftovers (named after its uid) are safe
        to remove only while their uid's lock is ours. Any uid is accepted,
        not only this pool's range, since the lock dir may be shared.
        """
        if not 1 <= uid <= _MAX_UID:
            raise ValueError(f"uid {uid} is outside 1..{_MAX_UID}")
        self._ensure_dir()
        return self._lease(uid)

    def is_free(self, uid: int) -> bool:
        """Probe without keeping: True if nobody holds ``uid``'s lock right now."""
        fd = self._open(uid, create=False)
        if fd is None:
            return True
        try:
            return self._try_lock(fd)  # closing the fd drops the probe lock
        finally:
            os.close(fd)

    def in_use(self) -> list[int]:
        """Uids (of any pool sharing ``lock_dir``) whose lock is held by anyone."""
        try:
            names = [entry.name for entry in os.scandir(self.lock_dir)]
        except FileNotFoundError:
            return []
        uids = sorted(int(m.group(1)) for name in names if (m := _LOCK_NAME.match(name)))
        return [uid for uid in uids if not self.is_free(uid)]
