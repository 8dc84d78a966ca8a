"""The launcher: a single-threaded zygote that forks each slot's two processes.

The supervisor lives in a multi-threaded event loop process, where running
Python after ``fork()`` can deadlock. So it starts this helper once (with
``posix_spawn``); every module a proxy needs is imported here, and each slot
costs one ``fork()`` of this small process instead of an interpreter start.

A slot serves many runs one after the other: a proxy, PID 1 of its own PID
namespace (``rustbox/_sandbox/_proxy.py``), and a spawner that starts each
run's program inside it (``_spawner.py``). The launcher only forks them;
runs go straight from the supervisor to the proxy.

Protocol on fd 3 (a SOCK_SEQPACKET socket to the supervisor): each datagram
is a pickled ``("slot", uid, gid, rlimits)`` carrying two fds: the proxy's end of a
channel to the supervisor, and the uid's lock. The launcher forks the proxy
with them, then the spawner (with a socket to the proxy and a pidfd of it),
and sends ``("spawned", pid)`` with a pidfd of the proxy on that channel. End
of file on fd 3 means the supervisor is gone: the launcher exits, and
PDEATHSIG takes every proxy with it.
"""

from __future__ import annotations

import gc
import os
import pickle
import selectors
import signal
import socket
import sys
from typing import NoReturn

from rustbox import _sys
from rustbox._sandbox import _proxy, _spawner
from rustbox._sandbox._spec import BaseTree, Rlimits

SUPERVISOR_FD = 3
_FDS_PER_SLOT = 2


class Launcher:
    def __init__(self, sock: socket.socket, base: BaseTree) -> None:
        self.sock = sock
        self.base = base
        self.pidfd = _sys.pidfd_open(os.getpid())
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()

    def _private_fds(self) -> list[int]:
        """Every fd a new proxy must not keep (it keeps only the launcher pidfd)."""
        return [
            self.sock.fileno(),
            self.own_pidns,
            self.wake_r,
            self.wake_w,
            self.selector.fileno(),
        ]

    def fork_slot(self, channel_fd: int, lock_fd: int, uid: int, gid: int, rlimits: Rlimits) -> int:
        """Fork a slot's proxy (PID 1 of a new PID namespace) and its spawner;
        returns the proxy's pid. The proxy keeps the uid lock (inherited)."""
        to_spawner, to_proxy = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            _sys.unshare(_sys.CLONE_NEWPID)
            try:
                pid = os.fork()
            finally:
                if os.getpid() != 1:  # the parent; the child is PID 1 and must not setns
                    _sys.setns(self.own_pidns, _sys.CLONE_NEWPID)
            if pid == 0:
                try:
                    signal.set_wakeup_fd(-1)
                    for fd in [*self._private_fds(), to_proxy.fileno()]:
                        os.close(fd)
                    _proxy.slot_main(
                        channel_fd, to_spawner.detach(), self.pidfd, self.base, uid, gid
                    )
                finally:
                    os._exit(1)
            proxy_pidfd = _sys.pidfd_open(pid)
            try:
                spawner = os.fork()
                if spawner == 0:
                    try:
                        signal.set_wakeup_fd(-1)
                        # The uid lock too: whoever holds a copy could unlock the uid
                        # for everyone (flock belongs to the open file).
                        for fd in [*self._private_fds(), to_spawner.fileno(), channel_fd, lock_fd]:
                            os.close(fd)
                        _spawner.spawner_main(
                            to_proxy.detach(), proxy_pidfd, self.pidfd, self.base, rlimits
                        )
                    finally:
                        os._exit(1)
            except BaseException:
                _sys.pidfd_send_signal(proxy_pidfd, signal.SIGKILL)
                raise
            finally:
                os.close(proxy_pidfd)
            return pid
        finally:
            to_spawner.close()
            to_proxy.close()

    def handle(self) -> bool:
        """Serve one request; False once the supervisor is gone."""
        try:
            data, fds = _sys.recv_fds(self.sock, 4096, 8)
        except (InterruptedError, BlockingIOError):
            return True
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            request = pickle.loads(data)
            if request[0] != "slot" or len(fds) != _FDS_PER_SLOT:
                return True  # not from our supervisor; drop it
            channel_fd, lock_fd = fds  # the lock is inherited by the proxy, which keeps it
            try:
                pid = self.fork_slot(
                    channel_fd, lock_fd, int(request[1]), int(request[2]), request[3]
                )
            except OSError as exc:
                message = ("error", f"launcher could not fork a proxy: {exc}")
                _send_on(channel_fd, pickle.dumps(message), [])
                return True
            pidfd = _sys.pidfd_open(pid)
            try:
                _send_on(channel_fd, pickle.dumps(("spawned", pid)), [pidfd])
            except OSError:
                # Nobody can control this proxy any more: stop it.
                try:
                    _sys.pidfd_send_signal(pidfd, signal.SIGKILL)
                except OSError:
                    pass
            finally:
                os.close(pidfd)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def reap(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        gc.collect()
        gc.freeze()  # proxies share the heap copy-on-write; keep the collector off those pages
        self.sock.send(pickle.dumps(("ready", os.getpid())))
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.sock:
                    if not self.handle():
                        return
                else:
                    self.reap()


def _send_on(fd: int, data: bytes, fds: list[int]) -> None:
    """Send on a socket fd the caller keeps owning."""
    sock = socket.socket(fileno=fd)
    try:
        socket.send_fds(sock, [data], fds)
    finally:
        sock.detach()


def main(argv: list[str]) -> NoReturn:
    expected_parent = int(argv[1])
    base = pickle.loads(bytes.fromhex(argv[2]))
    assert isinstance(base, BaseTree)
    _sys.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != expected_parent:
        os._exit(0)  # the supervisor died before PDEATHSIG was armed
    # Whatever the caller's process let its children inherit stops here.
    _sys.close_range(SUPERVISOR_FD + 1)
    try:
        Launcher(socket.socket(fileno=SUPERVISOR_FD), base).serve()
    finally:
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
