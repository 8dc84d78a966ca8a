"""``prctl(2)`` and the handful of process attributes the launcher sets.

Errors are named ``prctl(PR_...)`` so a failure says which option broke.
"""

from __future__ import annotations

import ctypes

from rustbox._sys._libc import check, libc

__all__ = [
    "PR_CAPBSET_DROP",
    "PR_CAPBSET_READ",
    "PR_CAP_AMBIENT",
    "PR_CAP_AMBIENT_CLEAR_ALL",
    "PR_CAP_AMBIENT_IS_SET",
    "PR_CAP_AMBIENT_LOWER",
    "PR_CAP_AMBIENT_RAISE",
    "PR_GET_DUMPABLE",
    "PR_GET_NO_NEW_PRIVS",
    "PR_GET_PDEATHSIG",
    "PR_GET_SECCOMP",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "PR_SET_SECCOMP",
    "prctl",
    "set_child_subreaper",
    "set_dumpable",
    "set_no_new_privs",
    "set_pdeathsig",
]

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47

# Sub-operations (arg2) of PR_CAP_AMBIENT.
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

_OPTION_NAMES: dict[int, str] = {
    PR_SET_PDEATHSIG: "PR_SET_PDEATHSIG",
    PR_GET_PDEATHSIG: "PR_GET_PDEATHSIG",
    PR_GET_DUMPABLE: "PR_GET_DUMPABLE",
    PR_SET_DUMPABLE: "PR_SET_DUMPABLE",
    PR_GET_SECCOMP: "PR_GET_SECCOMP",
    PR_SET_SECCOMP: "PR_SET_SECCOMP",
    PR_CAPBSET_READ: "PR_CAPBSET_READ",
    PR_CAPBSET_DROP: "PR_CAPBSET_DROP",
    PR_SET_CHILD_SUBREAPER: "PR_SET_CHILD_SUBREAPER",
    PR_SET_NO_NEW_PRIVS: "PR_SET_NO_NEW_PRIVS",
    PR_GET_NO_NEW_PRIVS: "PR_GET_NO_NEW_PRIVS",
    PR_CAP_AMBIENT: "PR_CAP_AMBIENT",
}

_prctl = libc["prctl"]
_prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_prctl.restype = ctypes.c_int


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call ``prctl(2)``; return its (non-negative) result or raise."""
    name = f"prctl({_OPTION_NAMES.get(option, str(option))})"
    return check(_prctl(option, arg2, arg3, arg4, arg5), name)


def set_pdeathsig(sig: int) -> None:
    """Deliver *sig* to us when the parent thread dies.

    The parent may already be gone by the time this runs; callers should
    compare ``os.getppid()`` with the expected pid afterwards.
    """
    prctl(PR_SET_PDEATHSIG, sig)


def set_no_new_privs() -> None:
    """Make ``execve`` unable to grant privileges (setuid, file caps).

    Irreversible; also a precondition for an unprivileged seccomp filter.
    """
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_dumpable(flag: bool) -> None:
    """Toggle core dumps and ``ptrace``/``/proc/<pid>`` access by same-uid peers."""
    prctl(PR_SET_DUMPABLE, 1 if flag else 0)


def set_child_subreaper() -> None:
    """Adopt orphaned descendants so that none escape our ``wait``."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
