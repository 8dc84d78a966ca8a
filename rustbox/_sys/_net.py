"""Bring the loopback interface up inside a fresh network namespace.

A new netns starts with ``lo`` down, so even ``127.0.0.1`` is unreachable.
Two ``ioctl``s on a throwaway socket are enough; no netlink library needed.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from rustbox._errors import SyscallError

__all__ = ["loopback_up"]

# <linux/sockios.h>, <net/if.h>
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

# struct ifreq: char ifr_name[16]; union { short ifr_flags; ... } (24 bytes on LP64).
_IFREQ = struct.Struct("16sH22x")


def loopback_up() -> None:
    """Set ``IFF_UP`` on ``lo`` in the current network namespace."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        raise SyscallError("socket", exc.errno or 0, "AF_INET SOCK_DGRAM") from None
    with sock:
        request = bytearray(_IFREQ.pack(b"lo", 0))
        try:
            fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
        except OSError as exc:
            raise SyscallError("ioctl(SIOCGIFFLAGS)", exc.errno or 0, "lo") from None
        _, flags = _IFREQ.unpack(request)
        if flags & _IFF_UP:
            return
        request = bytearray(_IFREQ.pack(b"lo", flags | _IFF_UP))
        try:
            fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, request)
        except OSError as exc:
            raise SyscallError("ioctl(SIOCSIFFLAGS)", exc.errno or 0, "lo") from None
