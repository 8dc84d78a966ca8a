"""The proxy: PID 1 of one slot's PID namespace, serving runs one at a time.

The launcher forks it into a fresh PID namespace, next to the slot's spawner
(``_spawner``). It walks the slot's part of the chain once (namespaces, root),
lets the spawner join, then serves runs on its channel: for each, it gives
the run an empty /box, /tmp and /dev/shm and its own cgroup, has the spawner
start the program, enforces cpu and wall time, kills every process of the run
(``kill(-1)`` from PID 1 reaches all of them and nothing else: the spawner is
not in this PID namespace), reads the evidence, reports, removes the SysV IPC
objects the run left and clears the slot for the next run. When it exits, the
kernel kills whatever is left in the namespace, so nothing of a run can
outlive it.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import socket
import stat
import time
import traceback
from typing import Any, NoReturn

import attrs

from rustbox import _sys
from rustbox._errors import SandboxSetupError
from rustbox._host import Cgroup, CgroupLimits, CgroupParents, CgroupStats
from rustbox._sandbox import _chain
from rustbox._sandbox._spec import (
    BaseTree,
    Captured,
    ProxyReport,
    RunSpec,
    SpawnOrder,
    cgroup_name,
    pack,
    unpack,
)

#: Slowest and fastest cpu-time poll. Between them the interval is the time
#: the payload needs, at full parallelism, to reach its limit: the limit is
#: never overshot by more than one fastest interval per cpu.
_POLL_MAX = 1.0
_POLL_MIN = 0.005
_NCPU = os.cpu_count() or 1
_RECV_MAX = 1 << 16
#: How long the proxy waits for the output pipes' end of file once every process
#: of the run is dead.
_OUTPUT_GRACE = 1.0
#: A run's fds: spec memfd (or none when inline), stdin.
_STDIO = 1


def _send(channel: socket.socket, data: bytes, fds: list[int]) -> None:
    if fds:
        socket.send_fds(channel, [data], fds)
    else:
        channel.send(data)


class _Run:
    def __init__(self, spec: RunSpec, channel: socket.socket) -> None:
        self.spec = spec
        self.channel = channel
        self.started = 0.0
        self.actions: list[tuple[float, str, str]] = []
        self.kill_reason: str | None = None
        self.supervisor_gone = False

    def kill_all(self, reason: str, why: str) -> None:
        """SIGKILL every process of the run: as PID 1, kill(-1) reaches them all."""
        if self.kill_reason is None:
            self.kill_reason = reason
        self.actions.append((round(time.monotonic() - self.started, 6), "SIGKILL all", why))
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def handle(self, data: bytes) -> None:
        """The channel woke during the run: the supervisor sends nothing then, so
        it is gone (end of file) and nobody wants the result."""
        if not data:
            self.supervisor_gone = True
            self.kill_all("supervisor", "channel closed")


def _collect(paths: tuple[str, ...], limit: int) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Read files back out of /box without following any symlink the payload made."""
    found: list[tuple[str, bytes]] = []
    missing: list[str] = []
    for path in paths:
        parts = path.split("/")
        dir_fd = os.open("/box", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for part in parts[:-1]:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = next_fd
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError:
            missing.append(path)
            os.close(dir_fd)
            continue
        os.close(dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                missing.append(path)
                continue
            found.append((path, os.pread(fd, info.st_size, 0)))
        finally:
            os.close(fd)
    return found, missing


def _reap_zombies(settle: float = 0.0) -> bool:
    """Reap what has died; False if a child is still alive after ``settle`` s.

    A process leaves its cgroup when it exits, before it is reparented to us
    and becomes a zombie, so zombies may still arrive after the cgroup was
    seen empty, and for a moment such a child still looks alive."""
    deadline = time.monotonic() + settle
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)


def _collect_unix_garbage() -> None:
    """Have the kernel collect descriptors in flight on dead sockets.

    A run can leave a descriptor inside an SCM_RIGHTS message on a socket
    nobody holds any more: what it refers to (a file, a lock, memory) lives
    on until the kernel collects such garbage, which releasing any unix
    socket schedules. Release one."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.close()
    theirs.close()


def _run_is_gone(cgroup: Cgroup) -> bool:
    """No process of the run is left. Every process of the run is in every
    hierarchy (the spawner, in pids only, has left by the time this is
    asked), so the memory hierarchy alone tells."""
    return cgroup.is_empty("memory" if cgroup.version == 1 else None)


def _reap_until_empty(cgroup: Cgroup, timeout: float = 5.0) -> bool:
    """Reap orphans (they come to PID 1) until no process of the run is left in
    its cgroup; False if some survived ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        _reap_zombies()
        if _run_is_gone(cgroup):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


class _Exit:
    """The payload's end, as the spawner (its parent) reaped it."""

    def __init__(self, message: tuple[Any, ...]) -> None:
        _, self.status, self.utime, self.stime, self.maxrss, self.setup, self.controls = message[:7]
        self.spawner_retiring = bool(message[7])


class _Output:
    """One output pipe of the run, drained by the proxy, capped."""

    def __init__(self, name: str, fd: int, cap: int) -> None:
        self.name = name
        self.fd = fd
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.seen = 0
        self.eof = False

    def read(self, run: _Run) -> None:
        """Take what is there (the fd is non-blocking); past the cap, kill the run."""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
                return
            self.seen += len(chunk)
            room = self.cap - self.size
            if room > 0:
                kept = chunk[:room]
                self.chunks.append(kept)
                self.size += len(kept)
            if self.seen > self.cap and run.kill_reason is None:
                run.kill_all("output", f"{self.name} exceeded {self.cap} bytes")

    def finish(self, run: _Run, deadline: float) -> Captured:
        """Read to end of file: every process of the run is dead by now. A write
        end can still be alive inside an SCM_RIGHTS message in flight on a dead
        process's socket: closing a unix socket of our own makes the kernel
        collect such garbage. Past ``deadline`` the stream is left incomplete
        (and the slot retires: the garbage may hold more, like a bound port)."""
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if select.select([self.fd], [], [], min(left, 0.05))[0]:
                self.read(run)
            else:
                _collect_unix_garbage()
        os.close(self.fd)
        return Captured(b"".join(self.chunks), self.seen, self.eof)


def _supervise(run: _Run, cgroup: Cgroup, spawner: socket.socket, outputs: list[_Output]) -> _Exit:
    """Wait for the payload while enforcing cpu and wall time and the output caps."""
    limits = run.spec.limits
    cpu_limit_ns = int(limits.cpu_time * 1e9)
    deadline = run.started + limits.wall_time
    parallel = max(1, min(_NCPU, limits.processes))
    poller = select.poll()
    poller.register(spawner.fileno(), select.POLLIN)
    poller.register(run.channel.fileno(), select.POLLIN)
    by_fd = {output.fd: output for output in outputs}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    next_check = 0.0
    while True:
        now = time.monotonic()
        if now >= next_check:
            # The cpu figure is read on this schedule only, not on every wake-up
            # for output: a chatty program does not make the proxy poll faster.
            used = cgroup.cpu_usage_ns()
            if used > cpu_limit_ns and run.kill_reason is None:
                run.kill_all("cpu", f"cpu_time {used / 1e9:.3f}s > limit {limits.cpu_time:g}s")
            elif now >= deadline and run.kill_reason is None:
                run.kill_all(
                    "wall", f"wall_time {now - run.started:.3f}s > limit {limits.wall_time:g}s"
                )
            interval = (cpu_limit_ns - used) / 1e9 / parallel
            next_check = now + max(_POLL_MIN, min(_POLL_MAX, interval, deadline - now))
        for fd, _ in poller.poll(max(0.0, next_check - now) * 1000):
            if fd in by_fd:
                output = by_fd[fd]
                output.read(run)
                if output.eof:
                    poller.unregister(fd)
                    del by_fd[fd]
            elif fd == spawner.fileno():
                data = spawner.recv(_RECV_MAX)
                if not data:
                    raise SandboxSetupError("spawner", "the spawner died during the run")
                message = pickle.loads(data)
                if message[0] == "error":  # the program could not be started
                    raise SandboxSetupError(str(message[1]), str(message[2]))
                if message[0] != "exited":
                    raise SandboxSetupError("spawner", f"unexpected message {message[0]!r}")
                return _Exit(message)
            else:
                try:
                    data = run.channel.recv(_RECV_MAX)
                except ConnectionResetError:
                    data = b""
                run.handle(data)
                if run.supervisor_gone:
                    poller.unregister(run.channel.fileno())


def _spawner_says(spawner: socket.socket) -> tuple[Any, ...]:
    data = spawner.recv(_RECV_MAX)
    if not data:
        raise SandboxSetupError("spawner", "the spawner died")
    message = pickle.loads(data)
    assert isinstance(message, tuple)
    return message


class _Slot:
    """The proxy's state: its stage of the chain, the cgroup parents, the spawner."""

    def __init__(
        self,
        base: BaseTree,
        rooted: _chain.Rooted,
        parents: CgroupParents,
        last_pid_fd: int,
        ipc: _sys.SysvIpc,
        spawner: socket.socket,
        uid: int,
        gid: int,
        setup: list[tuple[str, float]],
        controls: list[str],
    ) -> None:
        self.base = base
        self.rooted = rooted
        self.parents = parents
        self.last_pid_fd = last_pid_fd
        self.ipc = ipc
        self.spawner = spawner
        self.uid = uid
        self.gid = gid
        self.slot_setup = setup
        self.slot_controls = controls
        #: why the slot must not serve again, set by the run that found out
        self.retire_reason: str | None = None

    @classmethod
    def build(cls, base: BaseTree, spawner: socket.socket, uid: int, gid: int) -> _Slot:
        """The slot's part of the chain, then the spawner's. What must be reached
        from outside the new root (the cgroup parents, this namespace's
        ns_last_pid and SysV IPC listings) is opened first."""
        private = _chain.enter_namespaces().make_mounts_private()
        try:
            parents = base.cgroups.open_parents()
        except OSError as exc:
            raise SandboxSetupError("cgroup", str(exc)) from exc
        try:
            # Written per run so each run's payload is PID 2 and sees no trace
            # of how many processes the slot's earlier runs made.
            last_pid_fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_WRONLY | os.O_CLOEXEC)
            os.pwrite(last_pid_fd, b"1", 0)
            ipc = _sys.SysvIpc()
        except OSError as exc:
            parents.close()
            raise SandboxSetupError("namespaces", f"{exc}") from exc
        rooted = private.build_root(base, uid, gid)
        spawner.send(pickle.dumps(("join",)))
        message = _spawner_says(spawner)
        if message[0] != "ready":
            raise SandboxSetupError(str(message[1]), str(message[2]))
        setup = [("slot:" + name, ms) for name, ms in rooted.timings.stages]
        setup += [("slot:spawner:" + name, ms) for name, ms in message[1]]
        controls = [*rooted.controls, *message[2]]
        return cls(base, rooted, parents, last_pid_fd, ipc, spawner, uid, gid, setup, controls)

    def serve(self, channel: socket.socket) -> int:
        """Serve runs until the supervisor closes the channel; returns the exit code.

        A run whose sandbox failed, or a slot that cannot be cleared, ends the
        slot: the supervisor then builds a fresh one.
        """
        poller = select.poll()
        poller.register(channel.fileno(), select.POLLIN)
        poller.register(self.spawner.fileno(), select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self.spawner.fileno() in ready:
                # Between runs the spawner only speaks by leaving (its own cpu
                # budget is spent): retire, telling the supervisor about any run
                # it already sent.
                return _retire(channel, "the spawner left between runs")
            data, fds = _sys.recv_fds(channel, _RECV_MAX, 8)
            if not data:
                return 0
            message = pickle.loads(data)
            if message[0] != "run" or len(fds) not in (_STDIO, _STDIO + 1):
                for fd in fds:
                    os.close(fd)
                return 1
            why = self._one(channel, str(message[1]), message[2], fds)
            if why is not None:
                return _retire(channel, why)

    def _one(
        self, channel: socket.socket, run_id: str, inline: bytes | None, fds: list[int]
    ) -> str | None:
        """Serve one run; says why the slot must retire, if it must."""
        cleanup: list[Any] = []
        try:
            spec = unpack(inline, fds)
            assert isinstance(spec, RunSpec) and spec.run_id == run_id
            report = self._serve(spec, channel, fds, cleanup)
        except SandboxSetupError as exc:
            report = ProxyReport.failed(exc.stage, exc.detail)
        except BaseException:
            report = ProxyReport.failed("proxy", traceback.format_exc(limit=8))
        finally:
            for fd in fds:
                os.close(fd)
        data, report_fds = pack(("done", run_id), report)
        try:
            _send(channel, data, report_fds)
        finally:
            for fd in report_fds:
                os.close(fd)
        # Tidying up is off the result's path.
        _collect_unix_garbage()
        why = self.retire_reason
        if report.error_stage is not None:
            why = f"the run failed at {report.error_stage}"
        for item in reversed(cleanup):
            try:
                if isinstance(item, Cgroup):
                    item.remove(empty=why is None)  # a healthy run's group was seen empty
                elif isinstance(item, _Output):
                    os.close(item.fd)  # the run failed before its output was read
                else:
                    self.rooted = item.clear()
            except Exception as exc:
                why = why or f"clearing the run failed: {exc}"
        try:
            self.ipc.remove_all()
        except OSError as exc:
            why = why or f"removing SysV IPC objects failed: {exc}"
        if not _reap_zombies(settle=0.1):
            why = why or "a process of the run is still alive"
        return why

    def _serve(
        self, spec: RunSpec, channel: socket.socket, stdio: list[int], cleanup: list[Any]
    ) -> ProxyReport:
        if (spec.uid, spec.gid) != (self.uid, self.gid):
            raise SandboxSetupError("proxy", f"run for uid {spec.uid} sent to slot {self.uid}")
        run = _Run(spec, channel)
        t0 = time.perf_counter()
        os.pwrite(self.last_pid_fd, b"1", 0)
        run_root = self.rooted.stage_run(spec)
        cleanup.append(run_root)
        t1 = time.perf_counter()
        # The spawner counts in pids.max for the whole run (see _spawner): + 1.
        cgroup = self.parents.create(
            cgroup_name(self.uid),
            CgroupLimits(memory=spec.limits.memory, pids=spec.limits.processes + 1),
        )
        cleanup.append(cgroup)
        procs = cgroup.procs_fds()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        outputs = [
            _Output("stdout", out_r, spec.limits.stdout_max),
            _Output("stderr", err_r, spec.limits.stderr_max),
        ]
        cleanup.extend(outputs)
        for output in outputs:
            os.set_blocking(output.fd, False)
        t2 = time.perf_counter()
        try:
            order = pickle.dumps(("spawn", SpawnOrder.of(spec)))
            socket.send_fds(self.spawner, [order], [*stdio, out_w, err_w, *procs])
        finally:
            for fd in [*stdio, out_w, err_w, *procs]:
                os.close(fd)
            stdio.clear()
        run.started = time.monotonic()
        try:
            ended = _supervise(run, cgroup, self.spawner, outputs)
        finally:
            wall = time.monotonic() - run.started
            # kill(-1) walks every process of the host: skip it when the run
            # left none (a process leaves the group only by dying).
            if not _run_is_gone(cgroup):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if not _reap_until_empty(cgroup):
                    raise SandboxSetupError("proxy", "processes of the run survived SIGKILL")
        limits = spec.limits
        # The slot's own stages and controls went to the supervisor once, in
        # its "ready"; the report carries the run's.
        setup = [
            ("run_root", round((t1 - t0) * 1000, 3)),
            ("cgroup_create", round((t2 - t1) * 1000, 3)),
            *ended.setup,
        ]
        controls = [
            *run_root.controls,
            f"cgroup v{cgroup.version}: memory={limits.memory} swap=0 pids={limits.processes} "
            "(the cgroup's pids.max is one more: the spawner is in it while the run lasts), "
            "cpu time enforced by polling",
            *ended.controls,
        ]
        stats: CgroupStats | None = cgroup.stats()
        if stats is not None and stats.pids_peak is not None:
            stats = attrs.evolve(stats, pids_peak=max(0, stats.pids_peak - 1))  # the spawner
        files, missing = _collect(spec.collect, spec.limits.box_size)
        deadline = time.monotonic() + _OUTPUT_GRACE
        stdout, stderr = (output.finish(run, deadline) for output in outputs)
        if ended.spawner_retiring:
            self.retire_reason = "the spawner's own cpu budget is spent"
        elif not (stdout.eof and stderr.eof):
            self.retire_reason = (
                "an output pipe stayed open after the run (a descriptor in flight?)"
            )
        for output in outputs:
            cleanup.remove(output)
        return ProxyReport(
            error_stage=None,
            error=None,
            wait_status=ended.status,
            rusage_user=ended.utime,
            rusage_sys=ended.stime,
            rusage_maxrss=ended.maxrss * 1024,
            stats=stats,
            kill_reason=run.kill_reason,
            actions=tuple(run.actions),
            setup=tuple(setup),
            wall_time=wall,
            files=tuple(files),
            missing_files=tuple(missing),
            controls=tuple(controls),
            stdout=stdout,
            stderr=stderr,
        )


def _retire(channel: socket.socket, why: str) -> int:
    """End the slot without losing a run: stop receiving (the supervisor's next
    send fails with EPIPE), then answer every run already queued with
    ("retired", run_id, why), so the supervisor gives it to another slot."""
    try:
        channel.shutdown(socket.SHUT_RD)
        channel.setblocking(False)
        while True:
            try:
                data, fds = _sys.recv_fds(channel, _RECV_MAX, 8)
            except BlockingIOError:
                break
            for fd in fds:
                os.close(fd)
            if not data:
                break
            message = pickle.loads(data)
            if message[0] == "run":
                channel.send(pickle.dumps(("retired", message[1], why)))
    except OSError:
        pass
    return 0


def _arm(launcher_pidfd: int) -> None:
    """Die with the launcher, stay out of reach of the payload."""
    _sys.set_pdeathsig(signal.SIGKILL)
    if select.select([launcher_pidfd], [], [], 0)[0]:
        os._exit(1)  # the launcher died before PDEATHSIG was armed
    os.close(launcher_pidfd)
    _sys.set_dumpable(False)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def slot_main(
    channel_fd: int,
    spawner_fd: int,
    launcher_pidfd: int,
    base: BaseTree,
    uid: int,
    gid: int,
) -> NoReturn:
    """Entry point of a slot's proxy, forked by the launcher. Never returns.

    It builds the slot, says ("ready", timings, controls) or ("failed", stage, detail)
    on its channel, then serves runs. The uid lock the launcher passed stays
    open in this process until it exits: however long the slot lives, no
    other run on the host can take its uid.
    """
    code = 1
    channel = socket.socket(fileno=channel_fd)
    try:
        _arm(launcher_pidfd)
        _chain.reset_progress()
        spawner = socket.socket(fileno=spawner_fd)
        try:
            slot = _Slot.build(base, spawner, uid, gid)
        except SandboxSetupError as exc:
            channel.send(pickle.dumps(("failed", exc.stage, exc.detail)))
        else:
            channel.send(pickle.dumps(("ready", slot.slot_setup, slot.slot_controls)))
            gc.collect()
            gc.freeze()  # a long-lived heap: keep the collector off the settled part
            code = slot.serve(channel)
    except BaseException:
        try:
            channel.send(pickle.dumps(("failed", "proxy", traceback.format_exc(limit=8))))
        except BaseException:
            pass
    finally:
        os._exit(code)
