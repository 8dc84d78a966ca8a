"""``close_range(2)``: close (or mark close-on-exec) a whole range of fds at once.

One syscall instead of a loop over ``RLIMIT_NOFILE`` candidate numbers, and
nothing inherited by accident survives into the sandbox.
"""

from __future__ import annotations

from rustbox._sys._libc import check, raw_syscall, syscall_nr

__all__ = ["CLOSE_RANGE_CLOEXEC", "CLOSE_RANGE_UNSHARE", "close_range"]

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
