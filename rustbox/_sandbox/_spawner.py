"""The spawner: starts each run's program of a slot with ``posix_spawn``.

A Python ``fork()`` copies the page tables of a ~15 MiB heap and then pays a
copy-on-write fault for every page either side touches before ``exec``: on
this class of machine that is most of the cost of a sandboxed run. The
spawner pays for the chain's privilege work and the rlimits once per slot
instead (so a slot serves runs of one set of rlimits), and each
run's child is a ``vfork`` that execs at once, with nothing of ours running
in it but the C library (see ``_chain`` for what the child inherits).

The launcher forks it next to the slot's proxy. It waits for the proxy to
build its root, joins the proxy's namespaces (its PID namespace only for its
children: the spawner itself stays out of the payloads' sight), locks itself
and installs the payload's seccomp filter, then serves the proxy: per run it
receives a :class:`SpawnOrder` with the run's stdio and the run's cgroup
files, spawns, and once it has reaped the child reports its wait status and
rusage with the stages' timings and controls. Any failure ends the spawner, and with it the slot.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import socket
import traceback
from typing import NoReturn

from rustbox import _sys
from rustbox._errors import SandboxSetupError
from rustbox._sandbox import _chain
from rustbox._sandbox._spec import BaseTree, Rlimits, SpawnOrder

_RECV_MAX = 1 << 16
_STDIO = 3
#: Cpu seconds the spawner may use itself; its RLIMIT_CPU is the run's limit + 2 s.
_OWN_CPU_BUDGET = 0.5
#: Hierarchies the spawner stays in until its child is reaped (see _serve).
_STAY = frozenset({"pids", "unified"})


def _arm(launcher_pidfd: int) -> None:
    """Die with the launcher; stay out of reach (not dumpable, so no ptrace, no
    /proc/<pid>/mem, even for a process that somehow had our uid)."""
    _sys.set_pdeathsig(signal.SIGKILL)
    if select.select([launcher_pidfd], [], [], 0)[0]:
        os._exit(1)  # the launcher died before PDEATHSIG was armed
    os.close(launcher_pidfd)
    _sys.set_dumpable(False)


def _protect_from_group_oom() -> None:
    """On cgroup v2 the spawner stays in the run's one group until it has reaped
    the program, and ``memory.oom.group`` kills every member on an OOM: only
    ``oom_score_adj = -1000`` exempts it. Lowering it needs CAP_SYS_RESOURCE;
    without it the run's MLE would read as the sandbox failing, so refuse."""
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"-1000")
        finally:
            os.close(fd)
    except OSError as exc:
        raise SandboxSetupError(
            "spawner",
            f"cgroup v2: cannot set the spawner's oom_score_adj to -1000 ({exc.strerror}); "
            "rustbox needs CAP_SYS_RESOURCE on a cgroup v2 host",
        ) from exc


def _serve(
    channel: socket.socket,
    spawner: _chain.Spawner,
    home: list[tuple[str, int]],
    rlimits: Rlimits,
) -> int:
    while True:
        data, fds = _sys.recv_fds(channel, _RECV_MAX, 16)
        if not data:
            return 0
        try:
            message = pickle.loads(data)
            order = message[1]
            # Exactly stdio plus one cgroup.procs per hierarchy: a missing one
            # would leave the program outside a controller, with no error.
            if (
                message[0] != "spawn"
                or not isinstance(order, SpawnOrder)
                or len(fds) != _STDIO + len(home)
            ):
                return 1
            stdio, procs = fds[:_STDIO], fds[_STDIO:]
            try:
                in_cgroup = spawner.attach_cgroup(order, procs)
                credentialed = in_cgroup.apply_hygiene(rlimits).take_credentials()
                spawned = credentialed.spawn(stdio)
            except SandboxSetupError as exc:
                channel.send(pickle.dumps(("error", exc.stage, exc.detail)))
                return 1  # the spawner is half-way through a run: retire the slot
        finally:
            for fd in fds:
                os.close(fd)
        # The pids hierarchy is left only once the child is reaped: the spawner
        # counts there for the whole run (pids.max is the limit + 1), so the
        # run's pids figures are exact. On cgroup v2 that is the only hierarchy.
        spawner = spawned.restore([fd for key, fd in home if key not in _STAY])
        # The child's seteuid (in posix_spawn, on our shared memory) resets the
        # dumpable flag to fs.suid_dumpable: set it again.
        _sys.set_dumpable(False)
        _, status, rusage = os.wait4(spawned.pid, 0)
        for key, fd in home:
            if key in _STAY:
                os.write(fd, b"0")
        own = resource.getrusage(resource.RUSAGE_SELF)
        # Its RLIMIT_CPU counts its own cpu time too: past a budget, make way for
        # a fresh one, and say so with this report so no run is sent meanwhile.
        retiring = own.ru_utime + own.ru_stime > _OWN_CPU_BUDGET
        report = (
            "exited",
            status,
            rusage.ru_utime,
            rusage.ru_stime,
            rusage.ru_maxrss,
            spawned.timings.stages,
            spawned.controls,
            retiring,
        )
        channel.send(pickle.dumps(report))
        if retiring:
            return 0


def spawner_main(
    channel_fd: int,
    proxy_pidfd: int,
    launcher_pidfd: int,
    base: BaseTree,
    rlimits: Rlimits,
) -> NoReturn:
    """Entry point of a slot's spawner, forked by the launcher. Never returns."""
    code = 1
    channel = socket.socket(fileno=channel_fd)
    try:
        _arm(launcher_pidfd)
        _chain.reset_progress()
        data = channel.recv(_RECV_MAX)
        if not data or pickle.loads(data)[0] != "join":
            os._exit(0)  # the proxy failed to build the slot
        try:
            # Opened while /sys/fs/cgroup is still in view, before joining the slot's root.
            home = list(zip(base.cgroups.hierarchies, base.cgroups.home_procs_fds(), strict=True))
            if base.cgroups.version == 2:
                _protect_from_group_oom()
            locked = _chain.join_slot(proxy_pidfd).lock()
            spawner = locked.limit(rlimits).install_seccomp(base.seccomp_program)
            # Every fd of ours is close-on-exec already; make sure of it.
            _sys.close_range(3, flags=_sys.CLOSE_RANGE_CLOEXEC)
        except (SandboxSetupError, OSError) as exc:
            stage = exc.stage if isinstance(exc, SandboxSetupError) else "spawner"
            channel.send(pickle.dumps(("failed", stage, str(exc))))
        else:
            os.close(proxy_pidfd)
            ready = ("ready", spawner.timings.stages, spawner.controls)
            channel.send(pickle.dumps(ready))
            code = _serve(channel, spawner, home, rlimits)
    except BaseException:
        try:
            channel.send(pickle.dumps(("failed", "spawner", traceback.format_exc(limit=8))))
        except BaseException:
            pass
    finally:
        os._exit(code)
