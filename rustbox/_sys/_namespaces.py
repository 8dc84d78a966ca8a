"""Namespace entry points: ``unshare(2)``, ``setns(2)``, ``sethostname(2)``.

Python 3.11's :mod:`os` has none of these (``os.unshare``/``os.setns`` arrived
in 3.12), so they are called through libc.
"""

from __future__ import annotations

import ctypes
import os

from rustbox._sys._libc import check, libc

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWTIME",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "sethostname",
    "setns",
    "unshare",
]

# <linux/sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_unshare = libc["unshare"]
_unshare.argtypes = [ctypes.c_int]
_unshare.restype = ctypes.c_int

_setns = libc["setns"]
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int

_sethostname = libc["sethostname"]
_sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_sethostname.restype = ctypes.c_int


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces given by ``CLONE_NEW*`` flags.

    ``CLONE_NEWPID`` affects only children created afterwards.
    """
    check(_unshare(flags), "unshare", f"flags={flags:#x}")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace behind *fd*; *nstype* 0 accepts any kind."""
    check(_setns(fd, nstype), "setns", f"fd={fd} nstype={nstype:#x}")


def sethostname(name: str) -> None:
    """Set the hostname of the current UTS namespace."""
    raw = os.fsencode(name)
    check(_sethostname(raw, len(raw)), "sethostname", f"name={name!r}")
