"""File descriptors: closing ranges of them, and receiving them close-on-exec.

``close_range(2)`` is one syscall instead of a loop over ``RLIMIT_NOFILE``
candidate numbers, and nothing inherited by accident survives into the sandbox.
"""

from __future__ import annotations

import array
import errno
import os
import socket

from rustbox._sys._libc import check, raw_syscall, syscall_nr

__all__ = ["CLOSE_RANGE_CLOEXEC", "CLOSE_RANGE_UNSHARE", "close_range", "recv_fds"]

_INT = array.array("i")

# <linux/close_range.h>
CLOSE_RANGE_UNSHARE = 1 << 1
CLOSE_RANGE_CLOEXEC = 1 << 2

_UINT_MAX = 0xFFFFFFFF


def close_range(first: int, last: int = _UINT_MAX, flags: int = 0) -> None:
    """Close every fd in ``first..last`` (inclusive), or flag them with *flags*.

    Python file objects wrapping a closed fd are not told; close only fds
    nothing else in the process still owns.
    """
    result = raw_syscall(syscall_nr("close_range"), first, last, flags)
    check(result, "close_range", f"first={first} last={last} flags={flags:#x}")


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """One datagram and the fds it carries, every fd close-on-exec.

    ``socket.recv_fds`` ignores its ``flags`` (CPython passes none to
    ``recvmsg``), so fds it returns are inheritable: one reaching a program
    rustbox starts would hand it whatever the fd opens. Here ``recvmsg`` gets
    ``MSG_CMSG_CLOEXEC``, and a truncated set of fds raises rather than
    passing silently.
    """
    data, ancdata, msg_flags, _addr = sock.recvmsg(
        bufsize, socket.CMSG_SPACE(maxfds * _INT.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(cdata) - len(cdata) % _INT.itemsize
            fds += array.array("i", cdata[:usable]).tolist()
    if msg_flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        for fd in fds:
            os.close(fd)
        raise OSError(errno.EMSGSIZE, "recvmsg: message or descriptors truncated")
    return data, fds
