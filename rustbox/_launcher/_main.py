"""The launcher: a single-threaded zygote that forks one proxy per run.

The supervisor lives in a multi-threaded event loop process, where running
Python after ``fork()`` can deadlock. So it starts this helper once (with
``posix_spawn``); every module a proxy needs is imported here, and each run
costs one ``fork()`` of this small process instead of an interpreter start.

It keeps a few proxies forked ahead of demand ("warm"): each already sits in
its own PID, mount, network, IPC and UTS namespaces, so a run handed to it
skips the fork and the namespace set-up (go-judge pre-forks for the same
reason). A warm proxy serves exactly one run; the launcher forks a
replacement while that run proceeds.

Protocol on fd 3 (a SOCK_SEQPACKET socket to the supervisor): each datagram
is a pickled ``("run", run_id)`` carrying six fds (spec memfd, control
socket, stdin, stdout, stderr, the uid lock). The launcher passes them to a warm proxy and
sends ``("spawned", pid)`` with a pidfd of the proxy on the run's control
socket. End of file on fd 3 means the supervisor is gone: the launcher exits,
and PDEATHSIG takes every proxy with it.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import selectors
import signal
import socket
import sys
from typing import NoReturn

from rustbox import _sys
from rustbox._sandbox import _proxy
from rustbox._sandbox._spec import BaseTree

SUPERVISOR_FD = 3
_FDS_PER_RUN = 6


class _Warm:
    """A proxy waiting for its run, and the launcher's ends of it."""

    def __init__(self, pid: int, pidfd: int, channel: socket.socket) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel

    def close(self) -> None:
        self.channel.close()
        os.close(self.pidfd)


class Launcher:
    def __init__(self, sock: socket.socket, pool_size: int, base: BaseTree) -> None:
        self.sock = sock
        self.pool_size = pool_size
        self.base = base
        self.pidfd = _sys.pidfd_open(os.getpid())
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()
        self.warm: list[_Warm] = []

    def _private_fds(self) -> list[int]:
        """Every fd a new proxy must not keep (it keeps only the launcher pidfd)."""
        fds = [self.sock.fileno(), self.own_pidns, self.wake_r, self.wake_w]
        fds.append(self.selector.fileno())
        for warm in self.warm:
            fds += [warm.pidfd, warm.channel.fileno()]
        return fds

    def spawn_warm(self, also_close: list[int] | None = None) -> _Warm:
        """Fork a proxy as PID 1 of a new PID namespace."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        private = [*self._private_fds(), ours.fileno(), *(also_close or [])]
        _sys.unshare(_sys.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            _sys.setns(self.own_pidns, _sys.CLONE_NEWPID)
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for fd in private:
                    os.close(fd)
                _proxy.warm_main(theirs.fileno(), self.pidfd, self.base)
            finally:
                os._exit(1)
        _sys.setns(self.own_pidns, _sys.CLONE_NEWPID)
        theirs.close()
        return _Warm(pid, _sys.pidfd_open(pid), ours)

    def _take_warm(self, request_fds: list[int]) -> _Warm:
        while self.warm:
            warm = self.warm.pop()
            if not _readable(warm.pidfd):
                return warm
            warm.close()  # died while waiting (e.g. its namespaces were refused)
        return self.spawn_warm(also_close=request_fds)

    def handle(self) -> bool:
        """Serve one request; False once the supervisor is gone."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, 16)
        except (InterruptedError, BlockingIOError):
            return True
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            request = pickle.loads(data)
            if request[0] != "run" or len(fds) != _FDS_PER_RUN:
                return True  # not from our supervisor; drop it
            self._start(fds)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _start(self, fds: list[int]) -> None:
        control = socket.socket(fileno=os.dup(fds[1]))
        try:
            try:
                warm = self._take_warm([*fds, control.fileno()])
            except OSError as exc:
                control.send(pickle.dumps(("error", f"launcher could not fork a proxy: {exc}")))
                return
            try:
                socket.send_fds(warm.channel, [b"run"], fds)
                socket.send_fds(control, [pickle.dumps(("spawned", warm.pid))], [warm.pidfd])
            except OSError:
                # Nobody can control this proxy any more: stop it.
                try:
                    _sys.pidfd_send_signal(warm.pidfd, signal.SIGKILL)
                except OSError:
                    pass
            finally:
                warm.close()
        finally:
            control.close()

    def top_up(self) -> None:
        if len(self.warm) < self.pool_size:
            try:
                self.warm.append(self.spawn_warm())
            except OSError:
                pass  # try again on the next request; a run will fork its own

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
            # Requests first; top the warm pool up only when nothing is waiting.
            timeout = 0 if len(self.warm) < self.pool_size else None
            events = self.selector.select(timeout)
            if not events:
                self.top_up()
                continue
            for key, _ in events:
                if key.fileobj is self.sock:
                    if not self.handle():
                        return
                else:
                    self.reap()


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def main(argv: list[str]) -> NoReturn:
    expected_parent, pool_size = int(argv[1]), int(argv[2])
    base = pickle.loads(bytes.fromhex(argv[3]))
    assert isinstance(base, BaseTree)
    _sys.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != expected_parent:
        os._exit(0)  # the supervisor died before PDEATHSIG was armed
    # Whatever the caller's process let its children inherit stops here.
    _sys.close_range(SUPERVISOR_FD + 1)
    try:
        Launcher(socket.socket(fileno=SUPERVISOR_FD), pool_size, base).serve()
    finally:
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
