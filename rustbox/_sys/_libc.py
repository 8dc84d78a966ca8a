"""The one handle on libc, plus the raw ``syscall(2)`` escape hatch.

Everything in :mod:`rustbox._sys` goes through here so that errno is captured
the same way everywhere: ctypes copies the C ``errno`` into a thread-local
slot right after each foreign call (``use_errno=True``), and :func:`check`
turns a ``-1`` result into a :class:`~rustbox._errors.SyscallError`.

Only the standard library is used: this code runs in forked, single-threaded
helper processes where importing anything heavy is a liability.
"""

from __future__ import annotations

import ctypes
import errno
import platform

from rustbox._errors import SyscallError

__all__ = ["SYS", "check", "libc", "machine", "raw_syscall", "syscall_nr"]


def _load_libc() -> ctypes.CDLL:
    """Load glibc by soname; fall back to the symbols already in the process."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - non-glibc host
        return ctypes.CDLL(None, use_errno=True)


libc: ctypes.CDLL = _load_libc()

# A private function pointer, so that setting restype here cannot clash with
# anyone else who fetches ``libc.syscall``.
_syscall = libc["syscall"]
_syscall.restype = ctypes.c_long

# Syscall numbers that glibc may not wrap (or wraps only in newer versions).
# Since Linux 5.1 (number 424) new syscalls share one number on every
# architecture, so only the older entries differ between the tables.
_SYS_X86_64: dict[str, int] = {
    "pivot_root": 155,
    "pidfd_open": 434,
    "pidfd_send_signal": 424,
    "close_range": 436,
    "seccomp": 317,
    "capget": 125,
    "capset": 126,
    "setns": 308,
    "unshare": 272,
}

# aarch64 uses the asm-generic table.
_SYS_AARCH64: dict[str, int] = {
    "pivot_root": 41,
    "pidfd_open": 434,
    "pidfd_send_signal": 424,
    "close_range": 436,
    "seccomp": 277,
    "capget": 90,
    "capset": 91,
    "setns": 268,
    "unshare": 97,
}

_SYS_BY_MACHINE: dict[str, dict[str, int]] = {
    "x86_64": _SYS_X86_64,
    "aarch64": _SYS_AARCH64,
}


def machine() -> str:
    """Name the syscall ABI this process uses, as ``platform.machine()`` spells it.

    A 32-bit Python on a 64-bit kernel reports the kernel's machine but makes
    32-bit syscalls, so it is marked as such and matches no table.
    """
    name = platform.machine()
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return f"{name} (32-bit userland)"
    return name


SYS: dict[str, int] = dict(_SYS_BY_MACHINE.get(machine(), {}))
"""Syscall numbers for this machine; empty when the machine is unknown."""


def syscall_nr(name: str) -> int:
    """Return this machine's number for *name*.

    An unknown machine surfaces as ``ENOSYS`` from the named call, which is
    what the caller would see from a kernel lacking the syscall.
    """
    try:
        return SYS[name]
    except KeyError:
        raise SyscallError(name, errno.ENOSYS, f"no syscall number for {machine()}") from None


def raw_syscall(nr: int, *args: int) -> int:
    """Call ``syscall(nr, *args)`` with every argument passed as a C long.

    Returns the raw result (``-1`` with errno set on failure); pass it through
    :func:`check` to raise.
    """
    return int(_syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))


def check(result: int, name: str, detail: str = "") -> int:
    """Raise :class:`SyscallError` if *result* is ``-1``, else return it."""
    if result == -1:
        raise SyscallError(name, ctypes.get_errno(), detail)
    return result
