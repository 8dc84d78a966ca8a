"""The supervisor's side of the launcher: start it, ask it for slots, stop it."""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import sys

import anyio

from rustbox import _sys
from rustbox._errors import LauncherDied
from rustbox._sandbox._spec import BaseTree, Rlimits

# The launcher imports only what a proxy needs: a bare package object stands in
# for rustbox/__init__.py, which would pull in anyio and structlog. A smaller
# heap makes every fork, and every copy-on-write fault after it, cheaper.
_BOOT = (
    "import sys, types, importlib.util; sys.path[:0] = {path!r}; "
    "pkg = types.ModuleType('rustbox'); "
    "pkg.__path__ = list(importlib.util.find_spec('rustbox').submodule_search_locations); "
    "sys.modules['rustbox'] = pkg; "
    "from rustbox._launcher._main import main; main(sys.argv)"
)
_LAUNCHER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


class LauncherClient:
    """One launcher process and the socket to it.

    It must be started from the event loop thread: PDEATHSIG fires when the
    *thread* that forked a child exits, and anyio's worker threads do exit.
    """

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._sock = sock
        self._send_lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def start(cls, base: BaseTree, timeout: float = 30.0) -> LauncherClient:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            child_end = theirs.fileno()
            if child_end == 3:  # dup2(3, 3) would keep CLOEXEC set
                child_end = os.dup(child_end)
            code = _BOOT.format(path=[p for p in sys.path if p])
            pid = os.posix_spawn(
                sys.executable,
                [
                    sys.executable,
                    "-I",
                    "-c",
                    code,
                    str(os.getpid()),
                    pickle.dumps(base).hex(),
                ],
                _LAUNCHER_ENV,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, child_end, 3),
                ],
            )
            if child_end != theirs.fileno():
                os.close(child_end)
        finally:
            theirs.close()
        pidfd = _sys.pidfd_open(pid)
        ours.setblocking(False)
        client = cls(pid, pidfd, ours)
        try:
            with anyio.fail_after(timeout):
                await anyio.wait_readable(ours)
            message = ours.recv(4096)
            if not message or pickle.loads(message)[0] != "ready":
                raise LauncherDied("the launcher exited during start-up")
        except BaseException:
            await client.aclose()
            raise
        return client

    @property
    def alive(self) -> bool:
        if self._closed:
            return False
        return not select.select([self._pidfd], [], [], 0)[0]

    async def fork_slot(
        self, uid: int, gid: int, rlimits: Rlimits, channel_fd: int, lock_fd: int
    ) -> None:
        """Ask for a slot on ``channel_fd`` (both fds are duplicated into its proxy)."""
        data = pickle.dumps(("slot", uid, gid, rlimits))
        fds = [channel_fd, lock_fd]
        async with self._send_lock:
            while True:
                if self._closed:
                    raise LauncherDied("the launcher was stopped")
                try:
                    socket.send_fds(self._sock, [data], fds)
                    return
                except BlockingIOError:
                    await anyio.wait_writable(self._sock)
                except OSError as exc:
                    raise LauncherDied(f"the launcher is gone: {exc}") from exc

    async def aclose(self, timeout: float = 5.0) -> None:
        """Close the socket (the launcher then exits) and reap it."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            anyio.notify_closing(self._sock)
            self._sock.close()
            with anyio.move_on_after(timeout) as scope:
                await anyio.wait_readable(self._pidfd)
            if scope.cancelled_caught:
                try:
                    _sys.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                except OSError:
                    pass
                await anyio.wait_readable(self._pidfd)
            os.close(self._pidfd)
            os.waitpid(self.pid, 0)
