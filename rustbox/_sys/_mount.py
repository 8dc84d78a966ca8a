"""``mount(2)``, ``umount2(2)`` and ``pivot_root(2)``.

Errors name the target path, because "mount: EPERM" alone is useless when a
sandbox root is assembled from a dozen mounts.
"""

from __future__ import annotations

import ctypes
import os

from rustbox._sys._libc import check, libc, raw_syscall, syscall_nr

__all__ = [
    "MNT_DETACH",
    "MS_BIND",
    "MS_NOATIME",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_RELATIME",
    "MS_REMOUNT",
    "MS_SLAVE",
    "MS_STRICTATIME",
    "mount",
    "pivot_root",
    "umount2",
]

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

_mount = libc["mount"]
_mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_mount.restype = ctypes.c_int

_umount2 = libc["umount2"]
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_umount2.restype = ctypes.c_int


def _enc(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    """Mount (or remount/bind/change propagation of) *target*.

    ``None`` passes ``NULL``, as propagation changes and remounts require.
    """
    result = _mount(_enc(source), os.fsencode(target), _enc(fstype), flags, _enc(data))
    check(result, "mount", f"target={target}")


def umount2(target: str, flags: int = 0) -> None:
    """Unmount *target*; pass ``MNT_DETACH`` for a lazy unmount."""
    check(_umount2(os.fsencode(target), flags), "umount2", f"target={target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """Make *new_root* the root mount; the old root moves to *put_old*.

    glibc has no wrapper, hence the raw syscall.
    """
    new = ctypes.create_string_buffer(os.fsencode(new_root))
    old = ctypes.create_string_buffer(os.fsencode(put_old))
    result = raw_syscall(syscall_nr("pivot_root"), ctypes.addressof(new), ctypes.addressof(old))
    check(result, "pivot_root", f"new_root={new_root} put_old={put_old}")
