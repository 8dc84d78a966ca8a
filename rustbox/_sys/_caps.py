"""Capability sets: ``capget``/``capset``, the bounding set and the ambient set.

The 64-bit masks are assembled from the two 32-bit halves of the
``_LINUX_CAPABILITY_VERSION_3`` ABI.
"""

from __future__ import annotations

import ctypes
import errno
import functools
from typing import NamedTuple

from rustbox._errors import SyscallError
from rustbox._sys._libc import check, libc
from rustbox._sys._prctl import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    prctl,
)

__all__ = [
    "CapSets",
    "cap_last_cap",
    "capget",
    "capset",
    "clear_ambient",
    "drop_bounding_set",
]

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_MASK32 = 0xFFFFFFFF


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CapDataPair = _CapData * 2

_capget = libc["capget"]
_capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_capget.restype = ctypes.c_int

_capset = libc["capset"]
_capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_capset.restype = ctypes.c_int


class CapSets(NamedTuple):
    """The three per-thread capability sets, as 64-bit masks (bit n = cap n)."""

    effective: int
    permitted: int
    inheritable: int


def capget(pid: int = 0) -> CapSets:
    """Read the capability sets of *pid* (0 = the calling thread)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = _CapDataPair()
    check(_capget(ctypes.byref(header), data), "capget", f"pid={pid}")
    lo, hi = data
    return CapSets(
        effective=lo.effective | (hi.effective << 32),
        permitted=lo.permitted | (hi.permitted << 32),
        inheritable=lo.inheritable | (hi.inheritable << 32),
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability sets (each a 64-bit mask)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair(
        _CapData(effective & _MASK32, permitted & _MASK32, inheritable & _MASK32),
        _CapData(
            (effective >> 32) & _MASK32,
            (permitted >> 32) & _MASK32,
            (inheritable >> 32) & _MASK32,
        ),
    )
    detail = f"effective={effective:#x} permitted={permitted:#x} inheritable={inheritable:#x}"
    check(_capset(ctypes.byref(header), data), "capset", detail)


@functools.cache
def cap_last_cap() -> int:
    """Return the highest capability number the running kernel knows.

    Read from ``/proc/sys/kernel/cap_last_cap``; if ``/proc`` is unavailable
    (e.g. after ``pivot_root``), probe ``PR_CAPBSET_READ`` until ``EINVAL``.
    """
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pass
    cap = 0
    while True:
        try:
            prctl(PR_CAPBSET_READ, cap + 1)
        except SyscallError as exc:
            if exc.errno == errno.EINVAL:
                return cap
            raise
        cap += 1


def drop_bounding_set() -> None:
    """Drop every capability from the bounding set (needs ``CAP_SETPCAP``).

    After this, no ``execve`` can regain a capability, not even as root.
    """
    for cap in range(cap_last_cap() + 1):
        prctl(PR_CAPBSET_DROP, cap)


def clear_ambient() -> None:
    """Empty the ambient set, which would otherwise survive ``execve``."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
