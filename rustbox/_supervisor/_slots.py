"""Slots as the supervisor sees them: proxies that serve one run at a time.

A slot is built once (namespaces, root, seal: ~10 ms) and then reused for up
to ``runs_per_slot`` runs, so a run pays only for its own /box, cgroup and
fork. The pool hands idle slots out last-in first-out (the most recently
used proxy is the most likely to be in cache) and builds new ones, up to the
supervisor's concurrency, when none is idle.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
from collections.abc import Awaitable, Callable

import anyio
import attrs

from rustbox import _sys
from rustbox._errors import LauncherDied
from rustbox._host import UidLease, UidPoolExhausted
from rustbox._sandbox._spec import Rlimits

RECV_MAX = 1 << 16


@attrs.define(eq=False)
class Slot:
    """One proxy, its channel, and the uid it holds for its whole life."""

    pid: int
    pidfd: int
    channel: socket.socket
    lease: UidLease
    rlimits: Rlimits  #: a slot serves only runs with exactly these rlimits
    #: (stage, detail) when the proxy could not build the slot
    failure: tuple[str, str] | None = None
    runs: int = 0
    #: the slot's set-up stages and controls, part of the evidence of each of its runs
    setup: tuple[tuple[str, float], ...] = ()
    controls: tuple[str, ...] = ()

    @property
    def alive(self) -> bool:
        return not select.select([self.pidfd], [], [], 0)[0]

    def kill(self) -> None:
        """SIGKILL the proxy: as PID 1 of the slot, it takes every process of it along."""
        try:
            _sys.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass


async def receive(channel: socket.socket) -> tuple[tuple[object, ...], list[int]]:
    """The next datagram as (message, fds); an empty message at end of file."""
    while True:
        await anyio.wait_readable(channel)
        try:
            data, fds = _sys.recv_fds(channel, RECV_MAX, 8)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            return (), []
        if not data:
            for fd in fds:
                os.close(fd)
            return (), []
        message = pickle.loads(data)
        assert isinstance(message, tuple)
        return message, fds


async def open_slot(
    fork: Callable[[int, int, Rlimits, int, int], Awaitable[None]],
    lease: UidLease,
    rlimits: Rlimits,
    timeout: float,
    retire: Callable[[Slot], None],
) -> Slot:
    """Have the launcher fork a slot for ``lease`` and wait until it is built.

    If no proxy was forked, this raises and the lease stays the caller's. Once
    one was, the slot is returned, with ``failure`` set if it could not build
    itself; if this is cancelled meanwhile, the proxy is killed and ``retire``d.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    # The launcher's ("spawned", pid) and the proxy's own first word race on the
    # channel: the proxy may be ready before the launcher got to send.
    early: tuple[object, ...] | None = None
    message: tuple[object, ...] = ()
    fds: list[int] = []
    try:
        try:
            await fork(lease.uid, lease.gid, rlimits, theirs.fileno(), lease.fileno())
        finally:
            theirs.close()
        with anyio.fail_after(timeout):
            while True:
                message, fds = await receive(ours)
                if message and message[0] in ("ready", "failed"):
                    early = message
                    continue
                break
        if not message or message[0] != "spawned":
            for fd in fds:
                os.close(fd)
            raise LauncherDied(str(message[1]) if message else "the launcher is gone")
    except BaseException:
        anyio.notify_closing(ours)
        ours.close()
        raise
    assert isinstance(message[1], int)
    slot = Slot(message[1], fds[0], ours, lease, rlimits)
    failure: tuple[str, str] | None = None
    if early is None:
        message, fds = (), []
        try:
            with anyio.move_on_after(timeout) as scope:
                message, fds = await receive(ours)
        except BaseException:
            slot.kill()
            retire(slot)
            raise
        for fd in fds:
            os.close(fd)
        if scope.cancelled_caught:
            failure = ("slot", f"the proxy did not build its sandbox within {timeout:g}s")
    else:
        message = early
    if failure is not None:
        pass
    elif not message:
        failure = ("slot", "the proxy died while building its sandbox")
    elif message[0] == "failed":
        failure = (str(message[1]), str(message[2]))
    elif message[0] != "ready":
        failure = ("slot", f"unexpected message from the proxy: {message[0]!r}")
    if failure is not None:
        slot.kill()
        slot.failure = failure
    else:
        setup, controls = message[1], message[2]
        assert isinstance(setup, list | tuple) and isinstance(controls, list | tuple)
        slot.setup = tuple((str(name), float(ms)) for name, ms in setup)
        slot.controls = tuple(str(control) for control in controls)
    return slot


class WakeUp:
    """Wakes whoever waits for a change; the event is made only when awaited
    (a run notifies on every release, and nobody waits most of the time)."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None


class SlotPool:
    """Idle slots, and how many exist: never more than ``size`` at once.

    A slot carries one set of rlimits (its spawner holds them, irreversibly),
    so a run takes an idle slot with its own rlimits; when there is none and
    the pool is full, the longest-idle slot of other rlimits makes way.
    """

    def __init__(
        self,
        size: int,
        opener: Callable[[Rlimits], Awaitable[Slot]],
        retire: Callable[[Slot], None],
    ) -> None:
        self._size = size
        self._opener = opener
        self._retire = retire
        self._idle: list[Slot] = []  # most recently used last
        self._count = 0
        self._changed = WakeUp()
        self._closed = False

    def _notify(self) -> None:
        self._changed.notify()

    async def take(self, rlimits: Rlimits) -> Slot:
        """An idle slot for ``rlimits``, a new one if there is room (made, if need
        be, by retiring an idle slot of other rlimits), else the next one back."""
        while True:
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i].rlimits == rlimits:
                    slot = self._idle.pop(i)
                    if slot.alive:
                        return slot
                    self.discard(slot)  # died idle (its launcher did): look again
                    break
            if self._count >= self._size and self._idle:
                self.discard(self._idle.pop(0))
            if self._count < self._size:
                try:
                    return await self.open(rlimits)
                except UidPoolExhausted:
                    if not self._count:
                        raise
                    # Every uid is held, some by slots of ours: wait for one.
            await self._changed.wait()

    async def open(self, rlimits: Rlimits) -> Slot:
        """Build one more slot (counted from the start, so ``take`` waits for it)."""
        self._count += 1
        try:
            return await self._opener(rlimits)
        except BaseException:
            self._count -= 1
            self._notify()
            raise

    async def prestart(self, rlimits: Rlimits) -> None:
        """Build a slot ahead of demand and park it."""
        if self._count >= self._size or self._closed:
            return
        slot = await self.open(rlimits)
        if slot.failure is not None:
            self.discard(slot)
        else:
            self.give_back(slot)

    def give_back(self, slot: Slot) -> None:
        if self._closed:
            self.discard(slot)
            return
        self._idle.append(slot)
        self._notify()

    def discard(self, slot: Slot) -> None:
        """Retire a slot (closing its channel ends the proxy) and make room."""
        self.forget(slot)
        self._retire(slot)

    def forget(self, slot: Slot) -> None:
        """Make room for a slot the caller retires itself."""
        del slot
        self._count -= 1
        self._notify()

    def close(self) -> None:
        """Retire every idle slot; slots given back from now on are retired too."""
        self._closed = True
        idle, self._idle = self._idle, []
        for slot in idle:
            self.discard(slot)
