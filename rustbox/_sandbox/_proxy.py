"""The proxy: PID 1 of one run's PID namespace.

The launcher forks it into a fresh PID namespace. It builds the mount tree,
creates the run's cgroup, forks the payload (which walks the rest of the chain
and execs), then enforces cpu and wall time, reaps every descendant, reads the
evidence and reports it. When it exits, the kernel kills whatever is left in
the namespace, so no process of the run can outlive it.
"""

from __future__ import annotations

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
from rustbox._host import Cgroup, CgroupLimits, CgroupStats
from rustbox._sandbox import _chain
from rustbox._sandbox._spec import BaseTree, Order, ProxyReport, RunSpec, from_memfd, to_memfd

#: Slowest and fastest cpu-time poll. Between them the interval is the time
#: the payload needs, at full parallelism, to reach its limit: the limit is
#: never overshot by more than one fastest interval per cpu.
_POLL_MAX = 1.0
_POLL_MIN = 0.005
_NCPU = os.cpu_count() or 1


class _Run:
    def __init__(self, spec: RunSpec, control: socket.socket) -> None:
        self.spec = spec
        self.control = control
        self.started = 0.0
        self.actions: list[tuple[float, str, str]] = []
        self.kill_reason: str | None = None

    def kill_all(self, reason: str, why: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
        self.actions.append((round(time.monotonic() - self.started, 6), "SIGKILL all", why))
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _send(
    control: socket.socket, message: tuple[object, ...], fds: list[int] | None = None
) -> None:
    data = pickle.dumps(message)
    if fds:
        socket.send_fds(control, [data], fds)
    else:
        control.send(data)


class _Warm:
    """A warm proxy's template child and the proxy's ends of it."""

    def __init__(
        self, prepared: _chain.RootPrepared, pid: int, channel: socket.socket, setup_r: int
    ) -> None:
        self.prepared = prepared
        self.pid = pid
        self.channel = channel
        self.setup_r = setup_r
        self.controls_at_fork = len(prepared.controls)


def _template(
    prepared: _chain.RootPrepared, program: bytes, channel: socket.socket, setup_w: int
) -> NoReturn:
    """The payload-to-be: drops privileges now, waits for the run, then execs it.

    Failures are reported on the setup pipe; exec closes that pipe, which is how
    the proxy learns the program started.
    """

    def report(message: tuple[object, ...]) -> None:
        # Hygiene moves the setup pipe to SETUP_FD and closes the original, so
        # a failure late in that stage finds it there.
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
        filtered = prepared.become_template().lock_privileges().install_seccomp(program)
        data, fds, _, _ = socket.recv_fds(channel, 1 << 16, 4)
        if not data:
            os._exit(0)  # the proxy is retiring
        channel.close()
        order = pickle.loads(data)
        attached = filtered.await_run(order)
        credentialed = attached.apply_hygiene(fds, setup_w).drop_credentials()
        credentialed.exec(before_exec)
    except SandboxSetupError as exc:
        report(("error", exc.stage, exc.detail))
    except BaseException as exc:
        report(("error", "payload", f"{type(exc).__name__}: {exc}"))
    finally:
        os._exit(126)


def _fork_template(prepared: _chain.RootPrepared, program: bytes, close: list[int]) -> _Warm:
    setup_r, setup_w = os.pipe()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(setup_r)
            ours.close()
            for fd in close:
                os.close(fd)
            _template(prepared, program, theirs, setup_w)
        finally:
            os._exit(126)
    os.close(setup_w)
    theirs.close()
    return _Warm(prepared, pid, ours, setup_r)


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
    poller.register(run.control.fileno(), select.POLLIN)
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
                    message = run.control.recv(4096)
                except ConnectionResetError:
                    message = b""
                if not message:  # the supervisor is gone; nobody wants the result
                    run.kill_all("supervisor", "control socket closed")
                    poller.unregister(run.control.fileno())
                    continue
                request = pickle.loads(message)
                if request[0] == "kill" and run.kill_reason is None:
                    run.kill_all(str(request[1]), str(request[2]))
    finally:
        os.close(pidfd)


def _serve(
    spec: RunSpec, control: socket.socket, stdio: list[int], warm: _Warm
) -> tuple[Cgroup, ProxyReport]:
    """Run the payload; the caller sends the report, then removes the cgroup."""
    run = _Run(spec, control)
    t0 = time.perf_counter()
    cgroup = spec.cgroups.create(
        spec.cgroup_name, CgroupLimits(memory=spec.limits.memory, pids=spec.limits.processes)
    )
    t1 = time.perf_counter()
    try:
        warm.prepared.timings.resume()
        rooted = warm.prepared.build_root(spec)
        t2 = time.perf_counter()
        cgroup.attach(warm.pid)
        t3 = time.perf_counter()
        try:
            socket.send_fds(warm.channel, [pickle.dumps(Order.of(spec))], stdio)
        except OSError:
            pass  # the template died while warm; its reason is on the setup pipe
        warm.channel.close()
        for fd in stdio:
            os.close(fd)
        message = _read_setup(warm.setup_r)
        os.close(warm.setup_r)
        run.started = time.monotonic()
        ran = [
            ("cgroup_create", round((t1 - t0) * 1000, 3)),
            ("root", round((t2 - t1) * 1000, 3)),
            ("attach", round((t3 - t2) * 1000, 3)),
        ]
        root_controls = rooted.controls[warm.controls_at_fork :]
        setup: list[tuple[str, float]] = ran
        controls: list[str] = root_controls
        error_stage = error = None
        status: int | None = None
        rusage = None
        pid = warm.pid
        if message is None or message[0] != "ok":
            _, status, rusage = os.wait4(pid, 0)
            if message is None:
                error_stage, error = "payload", f"payload died during setup (status {status})"
            else:
                error_stage, error = str(message[1]), str(message[2])
        else:
            stages, controls = list(message[1]), list(message[2])
            warm_part = [s for s in stages if s[0] not in _RUN_STAGES]
            run_part = [s for s in stages if s[0] in _RUN_STAGES]
            setup = warm_part + ran + run_part
            controls = _merge_controls(controls, root_controls)
            _send(control, ("started",))
            status, rusage = _supervise(run, cgroup, pid)
        wall = time.monotonic() - run.started
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap_all()
        stats: CgroupStats | None = cgroup.stats()
        files, missing = _collect(spec.collect, spec.limits.box_size) if error is None else ([], [])
    except BaseException:
        _remove_quietly(cgroup)
        raise
    return cgroup, ProxyReport(
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


#: Stages the template walks once the run has arrived (the rest ran while warm).
_RUN_STAGES = frozenset({"cgroup", "hygiene", "credentials", "exec"})


def _merge_controls(template: list[str], root: list[str]) -> list[str]:
    """The template's controls with the proxy's run-time root controls in order."""
    for i, control in enumerate(template):
        if control.startswith("cgroup "):
            return template[:i] + root + template[i:]
    return template + root


def _remove_quietly(cgroup: Cgroup) -> None:
    """Remove the run's cgroup; the supervisor retries if this fails."""
    try:
        cgroup.remove()
    except OSError:
        pass


def _arm(launcher_pidfd: int) -> None:
    """Die with the launcher, stay out of reach of the payload, reap children."""
    _sys.set_pdeathsig(signal.SIGKILL)
    if select.select([launcher_pidfd], [], [], 0)[0]:
        os._exit(1)  # the launcher died before PDEATHSIG was armed
    os.close(launcher_pidfd)
    _sys.set_dumpable(False)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def warm_main(channel_fd: int, launcher_pidfd: int, base: BaseTree) -> NoReturn:
    """Entry point of a proxy the launcher forks ahead of demand. Never returns.

    Right away it builds its namespaces and the shared part of the root, and
    forks the template that drops privileges and installs the filter. Then it
    waits on its channel for one run: six fds (spec, control, stdin, stdout,
    stderr, and the uid lock, which it keeps until it exits). A run handed to
    it pays only for the stages that need the run.
    """
    code = 0
    try:
        _arm(launcher_pidfd)
        _chain.reset_progress()
        warm: _Warm | None = None
        failure: SandboxSetupError | None = None
        try:
            private = _chain.enter_namespaces().make_mounts_private()
            prepared = private.prepare_root(base)
            warm = _fork_template(prepared, base.seccomp_program, [channel_fd])
        except SandboxSetupError as exc:
            failure = exc
        channel = socket.socket(fileno=channel_fd)
        data, fds, _, _ = socket.recv_fds(channel, 64, 8)
        channel.close()
        if not data or len(fds) != 6:
            os._exit(0)  # the launcher is retiring this proxy
        # The uid lock stays open here until this proxy exits: however late it
        # got its run, no other run can take its uid while it lives.
        spec_fd, control_fd, *stdio, _uid_lock = fds
        code = _answer(spec_fd, control_fd, stdio, warm, failure)
    finally:
        os._exit(code)


def _answer(
    spec_fd: int,
    control_fd: int,
    stdio: list[int],
    warm: _Warm | None,
    failure: SandboxSetupError | None,
) -> int:
    """Serve one run and send the report; returns the proxy's exit code."""
    control = socket.socket(fileno=control_fd)
    try:
        spec = from_memfd(spec_fd)
        os.close(spec_fd)
        assert isinstance(spec, RunSpec)
        cgroup = None
        try:
            if failure is not None:
                raise failure
            assert warm is not None
            cgroup, report = _serve(spec, control, stdio, warm)
        except SandboxSetupError as exc:
            report = ProxyReport.failed(exc.stage, exc.detail)
        fd = to_memfd(report, "rustbox-report")
        _send(control, ("done",), [fd])  # the result first; tidying up is off its path
        if cgroup is not None:
            _remove_quietly(cgroup)
        return 0
    except BaseException:
        try:
            detail = traceback.format_exc(limit=8)
            fd = to_memfd(ProxyReport.failed("proxy", detail), "rustbox-report")
            _send(control, ("done",), [fd])
        except BaseException:
            pass
        return 1
