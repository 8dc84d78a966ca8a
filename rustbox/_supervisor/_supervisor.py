"""The supervisor: runs sandboxes from the caller's event loop (asyncio or trio)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import structlog

from rustbox import _sys
from rustbox._errors import HostUnsupported, InvalidInput, RustboxError
from rustbox._host import CgroupTree, UidLease, UidPool, UidPoolExhausted
from rustbox._limits import Limits
from rustbox._result import Action, Result, StreamReport
from rustbox._sandbox._spec import (
    DEFAULT_READONLY_BINDS,
    BaseTree,
    Captured,
    ProxyReport,
    Rlimits,
    RunSpec,
    cgroup_name,
    pack,
    unpack,
)
from rustbox._supervisor import _inputs
from rustbox._supervisor._launcher_client import LauncherClient
from rustbox._supervisor._slots import Slot, SlotPool, WakeUp, open_slot, receive
from rustbox._supervisor._verdict import build_result

ROOT_DIR = "/run/rustbox/root"
_SLOT_RE = re.compile(r"^u(\d+)$")
#: How long the sandbox may take to build itself before the supervisor gives up on it.
SETUP_DEADLINE = 20.0
#: Slack past the wall limit before the supervisor kills an unresponsive proxy.
BACKSTOP_GRACE = 2.0
_DEFAULT_LIMITS = Limits()
#: Slots a run tries when the ones it is handed turn out to be retiring.
_ATTEMPTS = 3


def _default_logger() -> Any:
    """structlog's logger if the application configured structlog, else stdlib's.

    The library never configures logging; unconfigured structlog would print
    every event to stdout, so fall back to the ``rustbox`` stdlib logger, which
    stays quiet unless the application enables it.
    """
    if structlog.is_configured():
        return structlog.get_logger("rustbox")
    return structlog.wrap_logger(
        logging.getLogger("rustbox"),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Level first: a dropped event (the per-run debug one) costs no rendering.
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
    )


class _Retired(Exception):
    """The slot retired before it took the run: the run never started, try another."""


class _RunState:
    def __init__(self, slot: Slot, run_id: str) -> None:
        self.slot = slot
        self.run_id = run_id
        self.closing = False  #: the Supervisor is closing: kill on sight
        self.report: ProxyReport | None = None
        self.proxy_killed = False
        self.actions: list[Action] = []
        self.t0 = time.monotonic()

    def act(self, action: str, reason: str) -> None:
        at = time.monotonic() - self.t0
        self.actions.append(Action(round(at, 6), "supervisor", action, reason))

    def kill_slot(self, reason: str) -> None:
        self.act("SIGKILL proxy", reason)
        self.proxy_killed = True
        self.slot.kill()


@attrs.define(eq=False)
class Supervisor:
    """Runs untrusted programs in kernel-enforced sandboxes.

    Use it as an async context manager; every run started inside is killed and
    cleaned up when the block exits, whether by return, error or cancellation::

        async with rustbox.Supervisor(max_concurrency=8) as sv:
            result = await sv.run(["/usr/bin/python3", "x.py"], files={"x.py": b"print(1)"})
    """

    max_concurrency: int = attrs.field(factory=lambda: os.cpu_count() or 1)
    uid_pool: UidPool = attrs.field(factory=UidPool)
    cgroup_parent: str = "rustbox"
    cgroup_mount: str = "/sys/fs/cgroup"
    readonly_binds: tuple[str, ...] = DEFAULT_READONLY_BINDS
    max_stdin: int = 256 << 20
    #: Slots built at start, ahead of demand (None: ``min(max_concurrency, 4)``).
    warm_proxies: int | None = None
    #: Runs a slot serves before it is replaced by a fresh one.
    runs_per_slot: int = 256
    logger: Any = attrs.field(factory=_default_logger)

    _cgroups: CgroupTree | None = attrs.field(default=None, init=False)
    _seccomp: bytes = attrs.field(default=b"", init=False)
    _launcher: LauncherClient | None = attrs.field(default=None, init=False)
    _launcher_lock: anyio.Lock = attrs.field(factory=anyio.Lock, init=False)
    _limiter: anyio.CapacityLimiter | None = attrs.field(default=None, init=False)
    _pool: SlotPool | None = attrs.field(default=None, init=False)
    _active: set[_RunState] = attrs.field(factory=set, init=False)
    _open: bool = attrs.field(default=False, init=False)
    _background: anyio.abc.TaskGroup | None = attrs.field(default=None, init=False)
    _releasing: int = attrs.field(default=0, init=False)
    _devnull: int = attrs.field(default=-1, init=False)
    #: set (and dropped) when a run or a slot is released; made only when awaited
    _released: WakeUp = attrs.field(factory=WakeUp, init=False)

    def __attrs_post_init__(self) -> None:
        for name in ("max_concurrency", "runs_per_slot"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(name, f"must be a positive integer, got {value!r}")

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        missing = []
        if os.geteuid() != 0:
            missing.append(
                "root: rustbox must run as root (euid 0) to build namespaces and cgroups"
            )
        try:
            # No freezer: a run's processes are killed by its proxy (kill(-1) as PID 1
            # of the slot), and a dead proxy takes its whole PID namespace along.
            self._cgroups = CgroupTree.detect(self.cgroup_mount, self.cgroup_parent, freezer=False)
            self._cgroups.check_swap()
        except HostUnsupported as exc:
            missing.extend(exc.missing)
        except OSError as exc:
            missing.append(f"cgroups: {exc}")
        try:
            self._seccomp = _sys.build_filter()
        except HostUnsupported as exc:
            missing.extend(exc.missing)
        try:
            os.makedirs(ROOT_DIR, mode=0o700, exist_ok=True)
        except OSError as exc:
            missing.append(f"{ROOT_DIR}: cannot create the sandbox mount point: {exc.strerror}")
        if missing:
            raise HostUnsupported(missing)
        self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        await anyio.to_thread.run_sync(self.sweep)
        self._launcher = await LauncherClient.start(self._base())
        background = anyio.create_task_group()
        await background.__aenter__()
        self._background = background
        self._pool = SlotPool(self.max_concurrency, self._open_slot, self._retire)
        self._open = True
        for _ in range(self._warm_count()):
            background.start_soon(self._prestart)
        self.logger.debug("supervisor started", launcher=self._launcher.pid)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kill every run still in flight, retire every slot, stop the launcher.

        Runs started from tasks outside the block are killed too, and this waits
        (up to a minute) until each slot's proxy has exited, its cgroup is gone
        and its uid is free.
        """
        self._open = False
        for state in list(self._active):
            state.closing = True
            state.kill_slot("supervisor closing")
        if self._pool is not None:
            self._pool.close()
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(60):
                while self._active or self._releasing:
                    await self._released.wait()
            if self._background is not None:
                # Slots still being built ahead of demand are retired as they
                # finish; their releases run here too.
                await self._background.__aexit__(None, None, None)
                self._background = None
        finally:
            with anyio.CancelScope(shield=True):
                if self._launcher is not None:
                    await self._launcher.aclose()
                    self._launcher = None
            if self._devnull >= 0:
                os.close(self._devnull)
                self._devnull = -1

    def sweep(self) -> list[str]:
        """Remove cgroups that crashed supervisors left behind; returns their names.

        A run's cgroup is named after its slot's uid, and a uid is in use only
        while its lock is held, so a group whose uid is free is stale.
        """
        assert self._cgroups is not None
        removed = []
        for name in self._cgroups.children():
            match = _SLOT_RE.match(name)
            if match is None:
                continue
            lease = self.uid_pool.try_acquire(int(match.group(1)))
            if lease is None:
                continue
            try:
                if self._cgroups.remove_stale(name):
                    removed.append(name)
            finally:
                lease.release()
        if removed:
            self.logger.info("swept stale cgroups", cgroups=removed)
        return removed

    async def _ensure_launcher(self) -> LauncherClient:
        async with self._launcher_lock:
            if self._launcher is not None and self._launcher.alive:
                return self._launcher
            if self._launcher is not None:
                self.logger.warning("launcher died; starting a new one")
                await self._launcher.aclose()
            self._launcher = await LauncherClient.start(self._base())
            return self._launcher

    def _launcher_alive(self) -> bool:
        return self._launcher is not None and self._launcher.alive

    def _base(self) -> BaseTree:
        assert self._cgroups is not None
        return BaseTree(
            root_dir=ROOT_DIR,
            readonly_binds=self.readonly_binds,
            seccomp_program=self._seccomp,
            cgroups=self._cgroups,
        )

    def _warm_count(self) -> int:
        if self.warm_proxies is not None:
            return max(0, min(self.warm_proxies, self.max_concurrency))
        return min(self.max_concurrency, 4)

    # -- slots -------------------------------------------------------------

    async def _prestart(self) -> None:
        assert self._pool is not None
        try:
            await self._pool.prestart(_DEFAULT_LIMITS.rlimits())
        except UidPoolExhausted:
            pass  # a small pool: runs wait for the slots that exist
        except RustboxError as exc:  # a run that needs the slot will report it
            self.logger.warning("could not build a slot ahead of demand", error=str(exc))

    async def _open_slot(self, rlimits: Rlimits) -> Slot:
        lease = await self._acquire_uid()
        try:
            launcher = await self._ensure_launcher()
            slot = await open_slot(launcher.fork_slot, lease, rlimits, SETUP_DEADLINE, self._retire)
        except BaseException:
            lease.release()
            raise
        if slot.failure is not None:
            self.logger.warning(
                "slot failed to build", stage=slot.failure[0], error=slot.failure[1]
            )
        return slot

    async def _acquire_uid(self) -> UidLease:
        """A free uid; if none, wait for this supervisor's retiring slots to free one."""
        while True:
            try:
                return self.uid_pool.acquire()
            except UidPoolExhausted:
                if not self._releasing:
                    raise
                await self._released.wait()

    def _retire(self, slot: Slot) -> None:
        """End a slot in the background: its uid is freed once its proxy is gone."""
        if self._background is not None:
            self._releasing += 1
            self._background.start_soon(self._release, slot)
        else:  # a run that outlived the Supervisor block
            self._release_now(slot)

    async def _release(self, slot: Slot) -> None:
        """Close the channel (the proxy exits), wait for it, remove a cgroup a killed
        proxy left, then free the uid."""
        try:
            with anyio.CancelScope(shield=True):
                anyio.notify_closing(slot.channel)
                slot.channel.close()
                with anyio.move_on_after(10) as scope:
                    await anyio.wait_readable(slot.pidfd)
                if scope.cancelled_caught:
                    slot.kill()
                    with anyio.move_on_after(10):
                        await anyio.wait_readable(slot.pidfd)
                assert self._cgroups is not None
                name = cgroup_name(slot.lease.uid)
                if self._cgroups.exists(name):
                    await anyio.to_thread.run_sync(self._cgroups.remove_stale, name)
        except Exception:
            self.logger.exception(
                "slot cleanup failed; its uid stays locked while this process lives",
                uid=slot.lease.uid,
            )
        else:
            slot.lease.release()
        finally:
            self._releasing -= 1
            self._closed_pidfd(slot)
            self._notify_released()

    def _notify_released(self) -> None:
        self._released.notify()

    def _release_now(self, slot: Slot) -> None:
        """The fallback once the background group is gone: kill the proxy. The
        uid stays locked by the proxy's copy of the lock until it is dead; a
        cgroup left behind is swept by the next Supervisor."""
        slot.kill()
        slot.channel.close()
        self._closed_pidfd(slot)
        slot.lease.release()

    @staticmethod
    def _closed_pidfd(slot: Slot) -> None:
        if slot.pidfd >= 0:
            anyio.notify_closing(slot.pidfd)
            os.close(slot.pidfd)
            slot.pidfd = -1

    # -- runs --------------------------------------------------------------

    async def run(
        self,
        command: Sequence[str],
        *,
        files: Mapping[str, bytes | str | _inputs.File] | None = None,
        stdin: bytes | str | None = None,
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        collect: Sequence[str] = (),
        cwd: str = "/box",
    ) -> Result:
        """Run ``command`` in a fresh sandbox and return its verdict with evidence.

        Raises :class:`InvalidInput` for a bad request (nothing is started),
        :class:`HostUnsupported` if the host cannot enforce the controls.
        Cancelling the call kills the run and cleans it up.
        """
        if not self._open:
            raise RustboxError("the Supervisor is not open: use 'async with Supervisor() as sv'")
        limits = _DEFAULT_LIMITS if limits is None else limits
        if not isinstance(limits, Limits):
            raise InvalidInput("limits", f"expected rustbox.Limits, got {type(limits).__name__}")
        argv = _inputs.argv_spec(command)
        env_items = _inputs.env_spec(env)
        file_specs = _inputs.files_spec(files, limits.box_size)
        collect_paths = tuple(_inputs.box_path(p, f"collect[{i}]") for i, p in enumerate(collect))
        cwd = _inputs.cwd_path(cwd)
        data = _inputs.stdin_bytes(stdin, self.max_stdin)
        _inputs.check_cwd(cwd, file_specs, self.readonly_binds)
        _inputs.check_command(argv, env_items, file_specs, self.readonly_binds, cwd)
        assert self._limiter is not None and self._pool is not None
        run_id = os.urandom(8).hex()
        # A cancelled caller starts nothing; a free place is taken without the
        # extra turn of the event loop that CapacityLimiter.acquire() costs.
        await anyio.lowlevel.checkpoint_if_cancelled()
        limiter = self._limiter
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            await limiter.acquire()
        try:
            for _attempt in range(_ATTEMPTS):
                if not self._open:
                    raise RustboxError("the Supervisor was closed while this run waited for a slot")
                slot = await self._pool.take(limits.rlimits())
                spec = RunSpec(
                    run_id=run_id,
                    argv=argv,
                    env=env_items,
                    cwd=cwd,
                    files=file_specs,
                    collect=collect_paths,
                    limits=limits,
                    uid=slot.lease.uid,
                    gid=slot.lease.gid,
                )
                if slot.failure is not None:
                    self._pool.discard(slot)
                    report = ProxyReport.failed(*slot.failure)
                    return self._result(spec, report, _RunState(slot, run_id))
                try:
                    return await self._run(slot, spec, data)
                except _Retired:
                    continue
            raise RustboxError(f"no slot took the run in {_ATTEMPTS} attempts")
        finally:
            limiter.release()

    async def _run(self, slot: Slot, spec: RunSpec, stdin: bytes) -> Result:
        assert self._pool is not None
        state = _RunState(slot, spec.run_id)
        self._active.add(state)
        try:
            payload, fds = pack(("run", spec.run_id), spec)
            fds.append(self._stdin_for(stdin))
            try:
                socket.send_fds(slot.channel, [payload], fds)
            except OSError as exc:  # EPIPE: the proxy is retiring and reads no more
                raise _Retired() from exc
            finally:
                for fd in fds:
                    os.close(fd)
            await self._follow(state, spec)
            report = state.report
            assert report is not None
            result = self._result(spec, report, state)
            self.logger.debug(
                "finished",
                run_id=spec.run_id,
                uid=spec.uid,
                status=result.status.value,
                cpu=result.cpu_time,
                wall=result.wall_time,
            )
            return result
        finally:
            self._active.discard(state)
            self._notify_released()
            if state.report is None:
                # Cancelled or failed: the slot's proxy dies with whatever it ran,
                # and the call returns only once all of it is gone.
                state.kill_slot("run abandoned (cancelled or failed)")
                self._pool.forget(slot)
                with anyio.CancelScope(shield=True):
                    self._releasing += 1
                    await self._release(slot)
            elif state.proxy_killed or state.report.error_stage is not None:
                self._pool.discard(slot)  # a proxy retires after a failed set-up
            else:
                slot.runs += 1
                if slot.runs >= self.runs_per_slot:
                    self._pool.discard(slot)
                else:
                    self._pool.give_back(slot)

    def _stdin_for(self, data: bytes) -> int:
        """Empty stdin is /dev/null (one fd kept open, duplicated per run)."""
        if data:
            return _stdin_fd(data)
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return os.dup(self._devnull)

    def _result(self, spec: RunSpec, report: ProxyReport, state: _RunState) -> Result:
        assert self._cgroups is not None
        limits = spec.limits
        return build_result(
            report,
            limits=limits,
            stdout=report.stdout.data,
            stderr=report.stderr.data,
            stdout_report=_stream_report(report.stdout, limits.stdout_max),
            stderr_report=_stream_report(report.stderr, limits.stderr_max),
            supervisor_actions=state.actions,
            cgroup_version=self._cgroups.version,
            uid=spec.uid,
            mode="strict",
            slot_setup=state.slot.setup,
            slot_controls=state.slot.controls,
        )

    async def _follow(self, state: _RunState, spec: RunSpec) -> None:
        """Wait for the run's report on the slot's channel, killing the proxy past
        the backstop (set-up allowance + wall limit + grace)."""
        channel = state.slot.channel
        deadline = time.monotonic() + SETUP_DEADLINE + spec.limits.wall_time + BACKSTOP_GRACE
        while state.report is None:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as scope:
                message, fds = await receive(channel)
            if scope.cancelled_caught:
                if state.proxy_killed:
                    raise RustboxError("the sandbox proxy neither reported nor exited in time")
                state.kill_slot("proxy unresponsive (wall backstop)")
                deadline = time.monotonic() + 5.0
                continue
            if not message:
                if state.closing:
                    raise RustboxError("the Supervisor was closed while this run was in flight")
                if not state.proxy_killed and not self._launcher_alive():
                    # The launcher died and took every slot along (PDEATHSIG), this
                    # one maybe before it took the run: another slot gets it.
                    raise _Retired()
                why = "was killed by the supervisor" if state.proxy_killed else "died"
                state.proxy_killed = True
                state.report = ProxyReport.failed("proxy", f"the proxy {why} without a report")
                return
            if message[1] != spec.run_id:
                for fd in fds:
                    os.close(fd)
                continue
            if message[0] == "done":
                inline = message[2]
                assert inline is None or isinstance(inline, bytes)
                report = unpack(inline, fds)
                assert isinstance(report, ProxyReport)
                state.report = report
            elif message[0] == "retired":
                self.logger.debug(
                    "slot retired before the run",
                    run_id=spec.run_id,
                    uid=spec.uid,
                    reason=str(message[2]),
                )
                raise _Retired()
            for fd in fds:
                os.close(fd)


def _stream_report(captured: Captured, cap: int) -> StreamReport:
    return StreamReport(
        bytes=len(captured.data), cap=cap, truncated=captured.seen > cap, complete=captured.eof
    )


def _stdin_fd(data: bytes) -> int:
    """stdin as a sealed, read-only memfd: no writer task, no pipe deadlock, any size.

    The seals hold even if the program reopens /proc/self/fd/0 for writing.
    """
    fd = os.memfd_create("rustbox-stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
        )
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)


async def run(command: Sequence[str], **kwargs: Any) -> Result:
    """One run with a short-lived Supervisor (convenient, but pays its start-up)."""
    async with Supervisor() as sv:
        return await sv.run(command, **kwargs)
