"""The proxy: PID 1 of one slot's PID namespace, serving runs one at a time.

The launcher forks it into a fresh PID namespace. It walks the slot's part of
the chain once (namespaces, root, seal), then serves runs on its channel: for
each, it gives the run a fresh /box, /tmp and /dev/shm and its own cgroup,
forks the payload (which walks the rest of the chain and execs), enforces cpu
and wall time, kills and reaps every process of the run, reads the evidence,
reports, and clears the slot for the next run. When it exits, the kernel
kills whatever is left in the namespace, so nothing of a run can outlive it.
"""

from __future__ import annotations

import gc
import io
import os
import pickle
import resource
import select
import signal
import socket
import stat
import time
import traceback
from typing import Any, NoReturn

from rustbox import _sys
from rustbox._errors import SandboxSetupError
from rustbox._host import Cgroup, CgroupLimits, CgroupParents, CgroupStats
from rustbox._sandbox import _chain
from rustbox._sandbox._spec import BaseTree, ProxyReport, RunSpec, cgroup_name, pack, unpack

#: Slowest and fastest cpu-time poll. Between them the interval is the time
#: the payload needs, at full parallelism, to reach its limit: the limit is
#: never overshot by more than one fastest interval per cpu.
_POLL_MAX = 1.0
_POLL_MIN = 0.005
_NCPU = os.cpu_count() or 1
_RECV_MAX = 1 << 16
#: A run's fds: spec memfd (or none when inline), stdin, stdout, stderr.
_STDIO = 3


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
        """A message from the supervisor while the run is on: a kill request for it."""
        if not data:  # the supervisor is gone; nobody wants the result
            self.supervisor_gone = True
            self.kill_all("supervisor", "channel closed")
            return
        request = pickle.loads(data)
        if request[0] == "kill" and request[1] == self.spec.run_id and self.kill_reason is None:
            self.kill_all(str(request[2]), str(request[3]))


def _payload(
    run_root: _chain.RunRooted,
    cgroup: Cgroup,
    stdio: list[int],
    setup_w: int,
    program: bytes,
) -> NoReturn:
    """The forked child: walks the run's part of the chain and execs.

    Failures are reported on the setup pipe; exec closes that pipe, which is how
    the proxy learns the program started.
    """
    gc.disable()  # a collection here would only copy pages the proxy shares

    def report(message: tuple[object, ...]) -> None:
        # Hygiene moves the setup pipe to SETUP_FD and closes the original, so
        # a failure late in the chain finds it there.
        data = pickle.dumps(message)
        for fd in (setup_w, _chain.SETUP_FD):
            try:
                os.write(fd, data)
                return
            except OSError:
                continue

    def before_exec(timings: list[tuple[str, float]], controls: list[str]) -> None:
        report(("ok", timings, controls))

    try:
        attached = run_root.attach_cgroup(cgroup)
        hygienic = attached.apply_hygiene(stdio, setup_w)
        locked = hygienic.drop_credentials().lock_privileges()
        locked.install_seccomp(program).exec(before_exec)
    except SandboxSetupError as exc:
        report(("error", exc.stage, exc.detail))
    except BaseException as exc:
        report(("error", "payload", f"{type(exc).__name__}: {exc}"))
    finally:
        os._exit(126)


def _read_setup(fd: int) -> tuple[Any, ...] | None:
    """The payload's last word before exec: ("ok", ...) or ("error", stage, detail).

    An exec that fails after "ok" was sent adds an error, so the last message wins.
    """
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    stream = io.BytesIO(b"".join(chunks))
    message = None
    while stream.tell() < len(stream.getbuffer()):
        message = pickle.load(stream)
    assert message is None or isinstance(message, tuple)
    return message


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


def _reap_all() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _supervise(run: _Run, cgroup: Cgroup, pid: int) -> tuple[int, resource.struct_rusage]:
    """Wait for the payload while enforcing cpu and wall time; returns its wait status."""
    limits = run.spec.limits
    cpu_limit_ns = int(limits.cpu_time * 1e9)
    deadline = run.started + limits.wall_time
    parallel = max(1, min(_NCPU, limits.processes))
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(run.channel.fileno(), select.POLLIN)
    try:
        while True:
            used = cgroup.cpu_usage_ns()
            now = time.monotonic()
            if used > cpu_limit_ns and run.kill_reason is None:
                run.kill_all("cpu", f"cpu_time {used / 1e9:.3f}s > limit {limits.cpu_time:g}s")
            elif now >= deadline and run.kill_reason is None:
                run.kill_all(
                    "wall", f"wall_time {now - run.started:.3f}s > limit {limits.wall_time:g}s"
                )
            interval = (cpu_limit_ns - used) / 1e9 / parallel
            timeout = max(_POLL_MIN, min(_POLL_MAX, interval, deadline - now))
            for fd, _ in poller.poll(timeout * 1000):
                if fd == pidfd:
                    _, status, rusage = os.wait4(pid, 0)
                    return status, rusage
                try:
                    data = run.channel.recv(_RECV_MAX)
                except ConnectionResetError:
                    data = b""
                run.handle(data)
                if run.supervisor_gone:
                    poller.unregister(run.channel.fileno())
    finally:
        os.close(pidfd)


#: Stages the payload walks (the rest ran in the proxy).
_PAYLOAD_STAGES = frozenset({"cgroup", "hygiene", "credentials", "privileges", "seccomp", "exec"})


class _Slot:
    """The proxy's state: the sealed chain, the cgroup parents, the slot's uid."""

    def __init__(
        self,
        base: BaseTree,
        sealed: _chain.Sealed,
        parents: CgroupParents,
        last_pid_fd: int,
        uid: int,
        gid: int,
    ) -> None:
        self.base = base
        self.sealed = sealed
        self.parents = parents
        self.last_pid_fd = last_pid_fd
        self.uid = uid
        self.gid = gid
        self.slot_setup = [("slot:" + name, ms) for name, ms in sealed.timings.stages]

    @classmethod
    def build(cls, base: BaseTree, uid: int, gid: int) -> _Slot:
        """The slot's part of the chain. What must be reached from outside the new
        root (the cgroup parents, this namespace's ns_last_pid) is opened first."""
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
        except OSError as exc:
            parents.close()
            raise SandboxSetupError("namespaces", f"ns_last_pid: {exc}") from exc
        sealed = private.build_root(base, uid, gid).seal()
        return cls(base, sealed, parents, last_pid_fd, uid, gid)

    def serve(self, channel: socket.socket) -> int:
        """Serve runs until the supervisor closes the channel; returns the exit code.

        A run whose sandbox failed, or a slot that cannot be cleared, ends the
        slot: the supervisor then builds a fresh one.
        """
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(channel, _RECV_MAX, 8)
            except InterruptedError:
                continue
            if not data:
                return 0
            message = pickle.loads(data)
            if message[0] == "kill":
                continue  # meant for a run that has finished meanwhile
            if message[0] != "run" or len(fds) not in (_STDIO, _STDIO + 1):
                for fd in fds:
                    os.close(fd)
                return 1
            run_id = str(message[1])
            healthy = self._one(channel, run_id, message[2], fds)
            if not healthy:
                return 1

    def _one(
        self, channel: socket.socket, run_id: str, inline: bytes | None, fds: list[int]
    ) -> bool:
        """Serve one run; False when the slot must retire."""
        cleanup: list[Any] = []
        try:
            spec = unpack(inline, fds)
            assert isinstance(spec, RunSpec) and spec.run_id == run_id
            stdio = fds
            report = self._serve(spec, channel, stdio, cleanup)
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
        healthy = report.error_stage is None
        for item in reversed(cleanup):
            try:
                if isinstance(item, Cgroup):
                    item.remove()
                else:
                    item.clear()
            except Exception:
                healthy = False
        try:
            os.waitpid(-1, os.WNOHANG)
            healthy = False  # a process of the run is still around
        except ChildProcessError:
            pass
        return healthy

    def _serve(
        self, spec: RunSpec, channel: socket.socket, stdio: list[int], cleanup: list[Any]
    ) -> ProxyReport:
        if (spec.uid, spec.gid) != (self.uid, self.gid):
            raise SandboxSetupError("proxy", f"run for uid {spec.uid} sent to slot {self.uid}")
        run = _Run(spec, channel)
        t0 = time.perf_counter()
        os.pwrite(self.last_pid_fd, b"1", 0)
        run_root = self.sealed.stage_run(spec)
        cleanup.append(run_root)
        t1 = time.perf_counter()
        cgroup = self.parents.create(
            cgroup_name(self.uid),
            CgroupLimits(memory=spec.limits.memory, pids=spec.limits.processes),
        )
        cleanup.append(cgroup)
        t2 = time.perf_counter()
        setup_r, setup_w = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(setup_r)
                    _payload(run_root, cgroup, stdio, setup_w, self.base.seccomp_program)
                finally:
                    os._exit(126)
        finally:
            os.close(setup_w)
        for fd in stdio:
            os.close(fd)
        stdio.clear()
        try:
            message = _read_setup(setup_r)
        finally:
            os.close(setup_r)
        run.started = time.monotonic()
        ran = [
            ("run_root", round((t1 - t0) * 1000, 3)),
            ("cgroup_create", round((t2 - t1) * 1000, 3)),
        ]
        setup: list[tuple[str, float]] = self.slot_setup + ran
        controls: list[str] = list(self.sealed.controls)
        error_stage = error = None
        status: int | None = None
        rusage = None
        if message is None or message[0] != "ok":
            _, status, rusage = os.wait4(pid, 0)
            if message is None:
                error_stage, error = "payload", f"payload died during setup (status {status})"
            else:
                error_stage, error = str(message[1]), str(message[2])
        else:
            stages, run_controls = list(message[1]), list(message[2])
            setup += [s for s in stages if s[0] in _PAYLOAD_STAGES]
            controls += run_controls
            channel.send(pickle.dumps(("started", spec.run_id)))
            status, rusage = _supervise(run, cgroup, pid)
        wall = time.monotonic() - run.started
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap_all()
        stats: CgroupStats | None = cgroup.stats()
        files, missing = _collect(spec.collect, spec.limits.box_size) if error is None else ([], [])
        return ProxyReport(
            error_stage=error_stage,
            error=error,
            wait_status=status,
            rusage_user=rusage.ru_utime if rusage else 0.0,
            rusage_sys=rusage.ru_stime if rusage else 0.0,
            rusage_maxrss=(rusage.ru_maxrss * 1024) if rusage else 0,
            stats=stats,
            kill_reason=run.kill_reason,
            actions=tuple(run.actions),
            setup=tuple(setup),
            wall_time=wall,
            files=tuple(files),
            missing_files=tuple(missing),
            controls=tuple(controls),
        )


def _arm(launcher_pidfd: int) -> None:
    """Die with the launcher, stay out of reach of the payload."""
    _sys.set_pdeathsig(signal.SIGKILL)
    if select.select([launcher_pidfd], [], [], 0)[0]:
        os._exit(1)  # the launcher died before PDEATHSIG was armed
    os.close(launcher_pidfd)
    _sys.set_dumpable(False)


def slot_main(channel_fd: int, launcher_pidfd: int, base: BaseTree, uid: int, gid: int) -> NoReturn:
    """Entry point of a slot's proxy, forked by the launcher. Never returns.

    It builds the slot, says ("ready", timings) or ("failed", stage, detail)
    on its channel, then serves runs. The uid lock the launcher passed stays
    open in this process until it exits: however long the slot lives, no
    other run on the host can take its uid.
    """
    code = 1
    try:
        _arm(launcher_pidfd)
        _chain.reset_progress()
        channel = socket.socket(fileno=channel_fd)
        try:
            slot = _Slot.build(base, uid, gid)
        except SandboxSetupError as exc:
            channel.send(pickle.dumps(("failed", exc.stage, exc.detail)))
            return_code = 1
        else:
            channel.send(pickle.dumps(("ready", slot.slot_setup)))
            gc.collect()
            gc.freeze()  # payloads fork from this heap: keep the collector off its pages
            return_code = slot.serve(channel)
        code = return_code
    except BaseException:
        try:
            channel.send(pickle.dumps(("failed", "proxy", traceback.format_exc(limit=8))))
        except BaseException:
            pass
    finally:
        os._exit(code)
