"""Process file descriptors: signal a process without pid-reuse races.

Raw syscalls rather than glibc's wrappers, which older glibcs lack.
"""

from __future__ import annotations

from rustbox._sys._libc import check, raw_syscall, syscall_nr

__all__ = ["pidfd_open", "pidfd_send_signal"]


def pidfd_open(pid: int, flags: int = 0) -> int:
    """Return a new close-on-exec pidfd referring to *pid*."""
    return check(raw_syscall(syscall_nr("pidfd_open"), pid, flags), "pidfd_open", f"pid={pid}")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Send *sig* to the process behind *pidfd*.

    ``ESRCH`` (the process has already exited) is raised like any other
    error; the caller decides whether that is benign.
    """
    result = raw_syscall(syscall_nr("pidfd_send_signal"), pidfd, sig, 0, 0)
    check(result, "pidfd_send_signal", f"pidfd={pidfd} sig={sig}")
