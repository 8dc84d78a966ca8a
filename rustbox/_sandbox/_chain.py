"""The isolation chain, as a typestate.

Each stage is its own class, and the only way to get one is from the stage
before it, so a misordered chain does not type-check (``tests/unit/
test_typestate.py`` proves it with mypy) and ``exec`` exists only on the last
stage. A runtime guard backs the types: a stage object can be advanced once,
stages must come in order, and the constructor refuses callers without the
module's private token.

Order, and where each stage runs::

    proxy (PID 1 of the run's PID namespace)
      1 Namespaced        mount, net, ipc, uts namespaces; hostname; lo up
      2 PrivateMounts     MS_REC|MS_PRIVATE on /, before any mount
      3 RootPrepared      tmpfs root, read-only binds, /etc, /dev, /proc  (no run needed)
      4 Rooted            the run's /box, /tmp, /dev/shm and identity files, pivot_root
    payload (forked by the proxy)
      5 CgroupAttached    the run's cgroup, before any untrusted instruction
      6 Hygienic          signals, rlimits, umask, fds, cwd
      7 Credentialed      setgroups([]), setresgid, setresuid, verified
      8 Locked            capabilities zero in all five sets, NO_NEW_PRIVS
      9 Filtered          seccomp
     10 exec

Stages 1-3 need nothing from the run, so the launcher's warm proxies walk them
before a run arrives.

The cgroup is joined by the payload after the mount tree is built (DESIGN.md
lists it before the root): the proxy's own Python footprint, its mount work and
the input files then stay out of the run's memory and cpu figures, while the
cgroup still applies before the first untrusted instruction.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import stat
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from rustbox import _sys
from rustbox._errors import SandboxSetupError
from rustbox._host import Cgroup
from rustbox._limits import Limits
from rustbox._sandbox._spec import DEFAULT_ETC_BINDS, HOSTNAME, BaseTree, RunSpec

_TOKEN = object()

#: Stage names, in order; also the keys of the setup timings.
STAGES = (
    "namespaces",
    "private_mounts",
    "base_root",
    "root",
    "cgroup",
    "hygiene",
    "credentials",
    "privileges",
    "seccomp",
    "exec",
)

_NAMESPACES = _sys.CLONE_NEWNS | _sys.CLONE_NEWNET | _sys.CLONE_NEWIPC | _sys.CLONE_NEWUTS
_BIND_RO = _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV
PR_SET_KEEPCAPS = 8
SETUP_FD = 3  #: the payload reports its setup on this fd; CLOEXEC, so exec closes it


class _Progress:
    """Process-wide record of how far the chain has come (the runtime guard)."""

    index = -1
    pid = 0


class Timings:
    """Milliseconds spent in each stage, in order."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
        self._last = time.perf_counter()

    def resume(self) -> None:
        """Start the clock again after idling (a warm proxy waiting for its run)."""
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages.append((stage, round((now - self._last) * 1000, 3)))
        self._last = now


class _Stage:
    _index: int = -1

    def __init__(
        self, token: object, spec: RunSpec | None, timings: Timings, controls: list[str]
    ) -> None:
        if token is not _TOKEN:
            raise SandboxSetupError(STAGES[self._index], "stages are built only by the chain")
        if _Progress.index != self._index - 1:
            raise SandboxSetupError(
                STAGES[self._index],
                f"out of order: the chain is at stage {_Progress.index + 1}, "
                f"this is stage {self._index + 1}",
            )
        _Progress.index = self._index
        _Progress.pid = os.getpid()
        self._spec = spec
        self._timings = timings
        self._controls = controls
        self._spent = False
        timings.mark(STAGES[self._index])

    def _step(self) -> tuple[Timings, list[str]]:
        """The runtime guard: each stage object advances once, in order."""
        if self._spent:
            raise SandboxSetupError(STAGES[self._index], "stage already advanced")
        if _Progress.index != self._index:
            raise SandboxSetupError(STAGES[self._index], "the chain has moved on")
        self._spent = True
        return self._timings, self._controls

    def _advance(self) -> tuple[RunSpec, Timings, list[str]]:
        if self._spec is None:
            raise SandboxSetupError(STAGES[self._index], "no run specification")
        timings, controls = self._step()
        return self._spec, timings, controls

    @property
    def controls(self) -> list[str]:
        return self._controls

    @property
    def timings(self) -> Timings:
        return self._timings


def _failing(stage: str) -> Callable[[BaseException], SandboxSetupError]:
    def wrap(exc: BaseException) -> SandboxSetupError:
        return SandboxSetupError(stage, str(exc) or type(exc).__name__)

    return wrap


def reset_progress() -> None:
    """Forget the chain's progress (the launcher calls this before each proxy)."""
    _Progress.index = -1
    _Progress.pid = 0


def enter_namespaces() -> Namespaced:
    """Stage 1. The caller is already PID 1 of a fresh PID namespace.

    Stages 1 and 2 need nothing from the run, so a warm proxy walks them
    before its run arrives.
    """
    if _Progress.index != -1:
        raise SandboxSetupError("namespaces", "the chain was already started in this process")
    if os.getpid() != 1:
        raise SandboxSetupError(
            "namespaces", f"not PID 1 of a new PID namespace (pid {os.getpid()})"
        )
    timings = Timings()
    try:
        _sys.unshare(_NAMESPACES)
        _sys.sethostname(HOSTNAME)
        _sys.loopback_up()
    except OSError as exc:
        raise _failing("namespaces")(exc) from exc
    controls = [
        "namespaces: pid, mount, network, ipc, uts",
        f"hostname: {HOSTNAME}",
        "network: loopback only",
    ]
    return Namespaced(_TOKEN, None, timings, controls)


class Namespaced(_Stage):
    _index = 0

    def make_mounts_private(self) -> PrivateMounts:
        """Stage 2: nothing mounted from here on propagates to the host."""
        timings, controls = self._step()
        try:
            _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
        except OSError as exc:
            raise _failing("private_mounts")(exc) from exc
        controls.append("mount propagation: private (recursive)")
        return PrivateMounts(_TOKEN, None, timings, controls)


def _bind_readonly(source: str, target: str) -> None:
    _sys.mount(source, target, None, _sys.MS_BIND)
    _sys.mount(None, target, None, _BIND_RO)


def _place(root: str, host_path: str, *, directory: bool) -> str | None:
    """Make ``host_path`` exist under ``root``; mirror symlinks instead of binding."""
    target = root + host_path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(host_path):
        os.symlink(os.readlink(host_path), target)
        return None
    if directory:
        os.mkdir(target)
    else:
        with open(target, "wb"):
            pass
    return target


def _write_etc(root: str) -> None:
    """A minimal /etc: name resolution for the sandbox only, no host secrets."""
    etc = root + "/etc"
    os.makedirs(etc, exist_ok=True)
    files = {
        "hostname": f"{HOSTNAME}\n",
        "hosts": f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "resolv.conf": "",
    }
    for name, text in files.items():
        with open(f"{etc}/{name}", "w") as f:
            f.write(text)
    for path in DEFAULT_ETC_BINDS:
        if os.path.lexists(path):
            target = _place(root, path, directory=os.path.isdir(path))
            if target is not None:
                _bind_readonly(path, target)


def _write_identity(root: str, uid: int, gid: int) -> None:
    """passwd and group naming the run's own uid, so tools can resolve it."""
    with open(f"{root}/etc/passwd", "w") as f:
        f.write(
            f"root:x:0:0:root:/root:/bin/false\nsandbox:x:{uid}:{gid}:sandbox:/box:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/:/bin/false\n"
        )
    with open(f"{root}/etc/group", "w") as f:
        f.write(f"root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n")


def _make_dev(root: str) -> None:
    dev = root + "/dev"
    os.mkdir(dev)
    _sys.mount(
        "tmpfs", dev, "tmpfs", _sys.MS_NOSUID | _sys.MS_NOEXEC, "size=64k,nr_inodes=64,mode=755"
    )
    for name, minor in (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")


def _scratch(target: str, limits: Limits) -> None:
    """A tmpfs the program may write but never execute from (/tmp, /dev/shm)."""
    _sys.mount(
        "tmpfs",
        target,
        "tmpfs",
        _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
        f"size={limits.tmp_size},nr_inodes=1024,mode=1777",
    )


def _write_box(root: str, spec: RunSpec) -> None:
    box = root + "/box"
    _sys.mount(
        "tmpfs",
        box,
        "tmpfs",
        _sys.MS_NOSUID | _sys.MS_NODEV,
        f"size={spec.limits.box_size},nr_inodes={spec.limits.box_inodes},mode=755,"
        f"uid={spec.uid},gid={spec.gid}",
    )
    for file in spec.files:
        path = f"{box}/{file.path}"
        parent = os.path.dirname(path)
        if parent != box:
            os.makedirs(parent, exist_ok=True)
            walk = parent
            while walk != box:
                os.chown(walk, spec.uid, spec.gid)
                walk = os.path.dirname(walk)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file.mode)
        try:
            view = memoryview(file.data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, spec.uid, spec.gid)
            os.fchmod(fd, file.mode)
        finally:
            os.close(fd)


def _mount_proc(root: str) -> str:
    proc = root + "/proc"
    os.mkdir(proc)
    flags = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
    try:
        _sys.mount("proc", proc, "proc", flags, "hidepid=invisible,subset=pid")
        return "/proc: own PID namespace, hidepid=invisible, subset=pid"
    except OSError:
        _sys.mount("proc", proc, "proc", flags, "hidepid=2")
        return "/proc: own PID namespace, hidepid=2"


class PrivateMounts(_Stage):
    _index = 1

    def prepare_root(self, base: BaseTree) -> RootPrepared:
        """Stage 3: the part of the new root every run shares; nothing from the run yet."""
        timings, controls = self._step()
        root = base.root_dir
        try:
            _sys.mount(
                "tmpfs",
                root,
                "tmpfs",
                _sys.MS_NOSUID | _sys.MS_NODEV,
                "size=1m,nr_inodes=256,mode=755",
            )
            bound = []
            for path in base.readonly_binds:
                if not os.path.lexists(path):
                    continue
                target = _place(root, path, directory=os.path.isdir(path))
                if target is not None:
                    _bind_readonly(path, target)
                    bound.append(path)
            _write_etc(root)
            _make_dev(root)
            proc_control = _mount_proc(root)
            os.mkdir(root + "/tmp")
            os.mkdir(root + "/box")
        except OSError as exc:
            raise _failing("base_root")(exc) from exc
        controls += [
            "read-only binds (nosuid, nodev): " + " ".join(bound),
            "/dev: null zero full random urandom only, noexec",
            proc_control,
            "/sys: absent",
        ]
        return RootPrepared(_TOKEN, None, timings, controls, base)


class RootPrepared(_Stage):
    _index = 2

    def __init__(
        self,
        token: object,
        spec: RunSpec | None,
        timings: Timings,
        controls: list[str],
        base: BaseTree,
    ) -> None:
        super().__init__(token, spec, timings, controls)
        self._base = base

    def build_root(self, spec: RunSpec) -> Rooted:
        """Stage 4: the run's own /box, /tmp, /dev/shm and identity, then pivot_root."""
        timings, controls = self._step()
        root = self._base.root_dir
        try:
            _write_identity(root, spec.uid, spec.gid)
            _write_box(root, spec)
            _scratch(root + "/tmp", spec.limits)
            _scratch(root + "/dev/shm", spec.limits)
            os.chdir(root)
            _sys.pivot_root(".", ".")
            _sys.umount2(".", _sys.MNT_DETACH)
            os.chdir("/")
            _sys.mount(None, "/", None, _BIND_RO)
        except OSError as exc:
            raise _failing("root")(exc) from exc
        limits = spec.limits
        controls += [
            "root: tmpfs, read-only, pivot_root, old root detached",
            f"/box: tmpfs size={limits.box_size} inodes={limits.box_inodes} nosuid nodev",
            f"/tmp, /dev/shm: tmpfs size={limits.tmp_size} noexec nosuid nodev",
        ]
        return Rooted(_TOKEN, spec, timings, controls)


class Rooted(_Stage):
    _index = 3

    def attach_cgroup(self, cgroup: Cgroup) -> CgroupAttached:
        """Stage 4, in the payload: join the run's cgroup before anything untrusted runs."""
        spec, timings, controls = self._advance()
        try:
            cgroup.attach_self()
        except OSError as exc:
            raise _failing("cgroup")(exc) from exc
        controls.append(
            f"cgroup v{spec.cgroups.version}: memory={spec.limits.memory} swap=0 "
            f"pids={spec.limits.processes}, cpu time enforced by polling"
        )
        return CgroupAttached(_TOKEN, spec, timings, controls)


def _rlimits(limits: Limits) -> list[tuple[int, int, int]]:
    cpu = math.ceil(limits.cpu_time) + 1
    values = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, limits.file_size, limits.file_size),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        # One above pids.max: the cgroup, not the rlimit, refuses the fork, so the
        # refusal shows in pids.events and the verdict can say PLE.
        (resource.RLIMIT_NPROC, limits.processes + 1, limits.processes + 1),
        (resource.RLIMIT_STACK, limits.stack, limits.stack),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ]
    if limits.address_space is not None:
        values.append((resource.RLIMIT_AS, limits.address_space, limits.address_space))
    return values


class CgroupAttached(_Stage):
    _index = 4

    def apply_hygiene(self, stdio: Sequence[int], setup_fd: int) -> Hygienic:
        """Stage 5: default signals, rlimits, umask, only fds 0-2 (+ the setup fd), cwd."""
        spec, timings, controls = self._advance()
        try:
            for signum in range(1, signal.NSIG):
                if signum in (signal.SIGKILL, signal.SIGSTOP):
                    continue
                try:
                    signal.signal(signum, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            for target, fd in enumerate(stdio):
                os.dup2(fd, target, inheritable=True)
            os.dup2(setup_fd, SETUP_FD, inheritable=False)
            _sys.close_range(SETUP_FD + 1)
            for which, soft, hard in _rlimits(spec.limits):
                resource.setrlimit(which, (soft, hard))
            os.umask(0o022)
            os.chdir(spec.cwd)
        except OSError as exc:
            raise _failing("hygiene")(exc) from exc
        limits = spec.limits
        controls += [
            f"rlimits: cpu={math.ceil(limits.cpu_time) + 1}s fsize={limits.file_size} "
            f"nofile={limits.open_files} nproc={limits.processes + 1} stack={limits.stack} "
            "core=0 memlock=0 msgqueue=0"
            + (f" as={limits.address_space}" if limits.address_space else ""),
            "signals: default dispositions, empty mask",
            "fds: only 0, 1, 2 reach the program",
            f"environment: built from scratch ({len(spec.env)} variables)",
        ]
        return Hygienic(_TOKEN, spec, timings, controls)


class Hygienic(_Stage):
    _index = 5

    def drop_credentials(self) -> Credentialed:
        """Stage 6: the run's own unprivileged uid and gid, no supplementary groups."""
        spec, timings, controls = self._advance()
        uid, gid = spec.uid, spec.gid
        try:
            _sys.prctl(PR_SET_KEEPCAPS, 1)  # so stage 7 can still empty the bounding set
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            raise _failing("credentials")(exc) from exc
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
            raise SandboxSetupError("credentials", "uid/gid did not change")
        if os.getgroups():
            raise SandboxSetupError("credentials", "supplementary groups remain")
        controls.append(f"credentials: uid={uid} gid={gid} groups=[] (verified)")
        return Credentialed(_TOKEN, spec, timings, controls)


def _status_caps() -> dict[str, int]:
    caps = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, value = line.split(":", 1)
                caps[key] = int(value.strip(), 16)
    return caps


class Credentialed(_Stage):
    _index = 6

    def lock_privileges(self) -> Locked:
        """Stage 7: every capability set empty, verified; then NO_NEW_PRIVS."""
        spec, timings, controls = self._advance()
        try:
            kept = _sys.capget()
            _sys.capset(kept.permitted, kept.permitted, 0)
            _sys.drop_bounding_set()
            _sys.clear_ambient()
            _sys.capset(0, 0, 0)
            _sys.prctl(PR_SET_KEEPCAPS, 0)
            _sys.set_no_new_privs()
        except OSError as exc:
            raise _failing("privileges")(exc) from exc
        caps = _status_caps()
        expected = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
        if set(caps) != expected or any(caps.values()):
            raise SandboxSetupError("privileges", f"capabilities remain: {caps}")
        controls.append("capabilities: inheritable, permitted, effective, bounding, ambient = 0")
        controls.append("no_new_privs: 1")
        return Locked(_TOKEN, spec, timings, controls)


class Locked(_Stage):
    _index = 7

    def install_seccomp(self) -> Filtered:
        """Stage 8: the syscall filter; the last thing before exec."""
        spec, timings, controls = self._advance()
        try:
            _sys.install_filter(spec.seccomp_program)
        except OSError as exc:
            raise _failing("seccomp")(exc) from exc
        controls.append(f"seccomp: filter of {len(spec.seccomp_program) // 8} instructions")
        return Filtered(_TOKEN, spec, timings, controls)


class Filtered(_Stage):
    _index = 8

    def exec(self, before_exec: Callable[[list[tuple[str, float]], list[str]], None]) -> NoReturn:
        """Stage 9: replace this process with the untrusted program.

        ``before_exec`` reports the timings and controls; it runs last because
        exec closes the setup fd, which tells the proxy the program started.
        """
        spec, timings, controls = self._advance()
        env = dict(spec.env)
        timings.mark("exec")
        before_exec(timings.stages, controls)
        try:
            os.execvpe(spec.argv[0], list(spec.argv), env)
        except OSError as exc:
            raise SandboxSetupError("exec", f"{spec.argv[0]}: {exc.strerror}") from exc
