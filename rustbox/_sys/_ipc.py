"""System V IPC objects of the caller's IPC namespace, and removing them.

Shared memory segments, semaphore sets and message queues outlive the
processes that made them. A slot keeps its IPC namespace between runs, so the
proxy removes every object a run left (``/proc/sysvipc`` lists them; the
files are opened before the proxy pivots away from the host's /proc, and list
the namespace of whoever opened them).
"""

from __future__ import annotations

import ctypes
import errno
import os

from rustbox._sys._libc import check, libc

__all__ = ["IPC_KINDS", "SysvIpc"]

IPC_RMID = 0
#: (kind, /proc/sysvipc file) in the order they are cleared.
IPC_KINDS = (
    ("shm", "/proc/sysvipc/shm"),
    ("sem", "/proc/sysvipc/sem"),
    ("msg", "/proc/sysvipc/msg"),
)

_shmctl = libc["shmctl"]
_shmctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_semctl = libc["semctl"]
_semctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
_msgctl = libc["msgctl"]
_msgctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class SysvIpc:
    """The three /proc/sysvipc listings of one IPC namespace, held open."""

    def __init__(self) -> None:
        self._fds: list[tuple[str, int]] = []
        try:
            for kind, path in IPC_KINDS:
                self._fds.append((kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        except BaseException:
            self.close()
            raise

    def ids(self) -> dict[str, list[int]]:
        """The ids of every object, by kind."""
        found: dict[str, list[int]] = {}
        for kind, fd in self._fds:
            lines = _read_all(fd).splitlines()[1:]  # a header line first
            found[kind] = [int(line.split()[1]) for line in lines if line.strip()]
        return found

    def remove_all(self) -> int:
        """Remove every object (IPC_RMID); returns how many there were."""
        removed = 0
        for kind, ids in self.ids().items():
            for ipc_id in ids:
                if kind == "shm":
                    result = _shmctl(ipc_id, IPC_RMID, None)
                elif kind == "sem":
                    result = _semctl(ipc_id, 0, IPC_RMID)
                else:
                    result = _msgctl(ipc_id, IPC_RMID, None)
                if result == -1 and ctypes.get_errno() in (errno.EINVAL, errno.EIDRM):
                    continue  # gone meanwhile
                check(result, f"{kind}ctl", f"id={ipc_id} IPC_RMID")
                removed += 1
        return removed

    def close(self) -> None:
        for _kind, fd in self._fds:
            os.close(fd)
        self._fds = []
