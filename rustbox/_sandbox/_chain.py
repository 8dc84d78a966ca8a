"""The isolation chain, as a typestate.

Each stage is its own class, and the only way to get one is from the stage
before it, so a misordered chain does not type-check (``tests/unit/
test_typestate.py`` proves it with mypy) and ``exec`` exists only on the last
stage. A runtime guard backs the types: a stage object can be advanced once,
each stage checks that the process's last stage is its predecessor, and the
constructors refuse callers without the module's private token.

Order, and where each stage runs::

    warm proxy (PID 1 of the run's PID namespace), before any run exists
      Namespaced        mount, net, ipc, uts namespaces; hostname; lo up
      PrivateMounts     MS_REC|MS_PRIVATE on /, before any mount
      RootPrepared      tmpfs root, read-only binds, /etc, /dev, /proc
    ├─ template (the proxy's child, the payload-to-be), still before the run
    │   Template        default signals, own session
    │   Locked          bounding/ambient sets empty, only CAP_SETUID/SETGID kept,
    │                   NO_NEW_PRIVS
    │   Filtered        seccomp
    └─ proxy, when the run arrives
        Rooted          the run's /box, /tmp, /dev/shm, identity; pivot_root
        (the proxy creates the cgroup and moves the template into it)
    template, handed the run
      CgroupAttached    verified: in the run's cgroup, under the run's root
      Hygienic          rlimits, umask, fds 0-2 only, cwd
      Credentialed      setgroups([]), setresgid, setresuid: the last two
                        capabilities go with root; all five sets verified zero
      exec

Privileges are dropped and the filter installed before the process reads a
byte of the run (they need nothing from it but the uid, and keeping only
CAP_SETUID/CAP_SETGID until then is enough to take it), so a run pays only for
the stages that depend on it. The cgroup is joined after the mount tree is
built and before the first untrusted instruction: rustbox's own set-up and
the input files stay out of the run's memory and cpu figures.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import stat
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, NoReturn

from rustbox import _sys
from rustbox._errors import SandboxSetupError
from rustbox._limits import Limits
from rustbox._sandbox._spec import DEFAULT_ETC_BINDS, HOSTNAME, BaseTree, Order, RunSpec

_TOKEN = object()

_NAMESPACES = _sys.CLONE_NEWNS | _sys.CLONE_NEWNET | _sys.CLONE_NEWIPC | _sys.CLONE_NEWUTS
_BIND_RO = _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV
SETUP_FD = 3  #: the payload reports its setup on this fd; CLOEXEC, so exec closes it
CAP_SETGID, CAP_SETUID = 6, 7
#: What the template keeps until the run's uid is known: only the power to become it.
_KEPT_CAPS = (1 << CAP_SETGID) | (1 << CAP_SETUID)


class _Progress:
    """Process-wide record of the last stage reached (the runtime guard)."""

    stage: type[_Stage] | None = None


class Timings:
    """Milliseconds spent in each stage, in order."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
        self._last = time.perf_counter()

    def resume(self) -> None:
        """Start the clock again after idling (a warm process waiting for its run)."""
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages.append((stage, round((now - self._last) * 1000, 3)))
        self._last = now


class _Stage:
    """One stage of the chain; it exists only once the work it names is done."""

    _name: ClassVar[str] = ""
    _after: ClassVar[type[_Stage] | None] = None

    def __init__(self, token: object, timings: Timings, controls: list[str]) -> None:
        if token is not _TOKEN:
            raise SandboxSetupError(self._name, "stages are built only by the chain")
        if _Progress.stage is not self._after:
            at = _Progress.stage._name if _Progress.stage else "the start"
            raise SandboxSetupError(self._name, f"out of order: the chain is at {at}")
        _Progress.stage = type(self)
        self._timings = timings
        self._controls = controls
        self._spent = False
        timings.mark(self._name)

    def _step(self) -> tuple[Timings, list[str]]:
        """The runtime guard: each stage object advances once, in order."""
        if self._spent:
            raise SandboxSetupError(self._name, "stage already advanced")
        if _Progress.stage is not type(self):
            raise SandboxSetupError(self._name, "the chain has moved on")
        self._spent = True
        return self._timings, self._controls

    @property
    def controls(self) -> list[str]:
        return self._controls

    @property
    def timings(self) -> Timings:
        return self._timings


class _RunStage(_Stage):
    """A stage of the template once its run has arrived: it carries the run's order."""

    def __init__(self, token: object, timings: Timings, controls: list[str], order: Order) -> None:
        super().__init__(token, timings, controls)
        self._order = order


def _failing(stage: str) -> Callable[[BaseException], SandboxSetupError]:
    def wrap(exc: BaseException) -> SandboxSetupError:
        return SandboxSetupError(stage, str(exc) or type(exc).__name__)

    return wrap


def reset_progress() -> None:
    """Forget the chain's progress (a new proxy starts from the beginning)."""
    _Progress.stage = None


def enter_namespaces() -> Namespaced:
    """Stage 1. The caller is already PID 1 of a fresh PID namespace.

    Stages 1 and 2 need nothing from the run, so a warm proxy walks them
    before its run arrives.
    """
    if _Progress.stage is not None:
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
    return Namespaced(_TOKEN, timings, controls)


class Namespaced(_Stage):
    _name = "namespaces"

    def make_mounts_private(self) -> PrivateMounts:
        """Stage 2: nothing mounted from here on propagates to the host."""
        timings, controls = self._step()
        try:
            _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
        except OSError as exc:
            raise _failing("private_mounts")(exc) from exc
        controls.append("mount propagation: private (recursive)")
        return PrivateMounts(_TOKEN, timings, controls)


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
    """Only the run's own processes, and nothing of /proc/sys and the like (no fallback:
    every kernel rustbox runs on, >= 5.9, has subset=pid)."""
    proc = root + "/proc"
    os.mkdir(proc)
    flags = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
    _sys.mount("proc", proc, "proc", flags, "hidepid=invisible,subset=pid")
    return "/proc: own PID namespace, hidepid=invisible, subset=pid"


class PrivateMounts(_Stage):
    _name = "private_mounts"
    _after = Namespaced

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
        return RootPrepared(_TOKEN, timings, controls, base)


class RootPrepared(_Stage):
    """Where the chain forks: the proxy goes on to build the run's root, its
    child (the template, the future payload) goes on to drop privileges."""

    _name = "base_root"
    _after = PrivateMounts

    def __init__(
        self, token: object, timings: Timings, controls: list[str], base: BaseTree
    ) -> None:
        super().__init__(token, timings, controls)
        self._base = base

    def build_root(self, spec: RunSpec) -> Rooted:
        """Proxy, once the run is known: its /box, /tmp, /dev/shm, identity; pivot_root."""
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
        return Rooted(_TOKEN, timings, controls)

    def become_template(self) -> Template:
        """In the proxy's forked child: from here on, this process is the payload-to-be."""
        timings, controls = self._step()
        if os.getpid() == 1:
            raise SandboxSetupError("template", "the proxy itself cannot become the payload")
        try:
            for signum in range(1, signal.NSIG):
                if signum in (signal.SIGKILL, signal.SIGSTOP):
                    continue
                try:
                    signal.signal(signum, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.setsid()
            os.chdir("/")  # off the host directory it was forked in
        except OSError as exc:
            raise _failing("template")(exc) from exc
        controls.append("signals: default dispositions, empty mask; own session")
        return Template(_TOKEN, timings, controls)


class Rooted(_Stage):
    """The proxy has built and entered the run's root (the template sees it too:
    pivot_root moves every process of the mount namespace)."""

    _name = "root"
    _after = RootPrepared


class Template(_Stage):
    _name = "template"
    _after = RootPrepared

    def lock_privileges(self) -> Locked:
        """Every capability gone but CAP_SETUID/CAP_SETGID (to take the run's uid
        later); bounding and ambient sets empty; NO_NEW_PRIVS."""
        timings, controls = self._step()
        try:
            _sys.drop_bounding_set()
            _sys.clear_ambient()
            _sys.capset(_KEPT_CAPS, _KEPT_CAPS, 0)
            _sys.set_no_new_privs()
        except OSError as exc:
            raise _failing("privileges")(exc) from exc
        caps = _status_caps()
        held = {"CapInh": 0, "CapPrm": _KEPT_CAPS, "CapEff": _KEPT_CAPS, "CapBnd": 0, "CapAmb": 0}
        if caps != held:
            raise SandboxSetupError("privileges", f"capabilities not as expected: {caps}")
        controls += ["capability bounding and ambient sets: empty", "no_new_privs: 1"]
        return Locked(_TOKEN, timings, controls)


class Locked(_Stage):
    _name = "privileges"
    _after = Template

    def install_seccomp(self, program: bytes) -> Filtered:
        """The syscall filter, before any run data is read."""
        timings, controls = self._step()
        try:
            _sys.install_filter(program)
        except OSError as exc:
            raise _failing("seccomp")(exc) from exc
        controls.append(f"seccomp: filter of {len(program) // 8} instructions")
        return Filtered(_TOKEN, timings, controls)


def _in_cgroup(version: int, name: str) -> bool:
    """Whether /proc/self/cgroup puts this process in the run's group everywhere it must."""
    wanted = {"memory", "pids", "cpuacct"} if version == 1 else {""}
    found = set()
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if path.endswith("/" + name):
                found.update(controllers.split(","))
    return wanted <= found


class Filtered(_Stage):
    _name = "seccomp"
    _after = Locked

    def await_run(self, order: Order) -> CgroupAttached:
        """Take the run the proxy hands over, after checking what it promised:
        this process is in the run's cgroup and under the run's root."""
        timings, controls = self._step()
        timings.resume()
        if not _in_cgroup(order.cgroup_version, order.cgroup_name):
            raise SandboxSetupError("cgroup", f"not in cgroup {order.cgroup_name}")
        if os.path.exists("/sys") or not os.path.isdir("/box"):
            raise SandboxSetupError("cgroup", "not under the sandbox root")
        controls.append(
            f"cgroup v{order.cgroup_version}: memory={order.limits.memory} swap=0 "
            f"pids={order.limits.processes}, cpu time enforced by polling (verified member)"
        )
        return CgroupAttached(_TOKEN, timings, controls, order)


def _rlimits(limits: Limits) -> list[tuple[int, int, int]]:
    cpu = math.ceil(limits.cpu_time) + 1
    values = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, limits.file_size, limits.file_size),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_NPROC, limits.nproc_rlimit, limits.nproc_rlimit),
        (resource.RLIMIT_STACK, limits.stack, limits.stack),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ]
    if limits.address_space is not None:
        values.append((resource.RLIMIT_AS, limits.address_space, limits.address_space))
    return values


class CgroupAttached(_RunStage):
    _name = "cgroup"
    _after = Filtered

    def apply_hygiene(self, stdio: Sequence[int], setup_fd: int) -> Hygienic:
        """rlimits, umask, only fds 0-2 (+ the setup fd, closed by exec), cwd."""
        timings, controls = self._step()
        order = self._order
        try:
            for target, fd in enumerate(stdio):
                os.dup2(fd, target, inheritable=True)
            os.dup2(setup_fd, SETUP_FD, inheritable=False)
            _sys.close_range(SETUP_FD + 1)
            for which, soft, hard in _rlimits(order.limits):
                resource.setrlimit(which, (soft, hard))
            os.umask(0o022)
            os.chdir(order.cwd)
        except OSError as exc:
            raise _failing("hygiene")(exc) from exc
        limits = order.limits
        controls += [
            f"rlimits: cpu={math.ceil(limits.cpu_time) + 1}s fsize={limits.file_size} "
            f"nofile={limits.open_files} nproc={limits.nproc_rlimit} stack={limits.stack} "
            "core=0 memlock=0 msgqueue=0"
            + (f" as={limits.address_space}" if limits.address_space else ""),
            "fds: only 0, 1, 2 reach the program",
            f"environment: built from scratch ({len(order.env)} variables)",
        ]
        return Hygienic(_TOKEN, timings, controls, order)


class Hygienic(_RunStage):
    _name = "hygiene"
    _after = CgroupAttached

    def drop_credentials(self) -> Credentialed:
        """The run's own uid and gid, no groups; the last two capabilities go with root."""
        timings, controls = self._step()
        uid, gid = self._order.uid, self._order.gid
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            raise _failing("credentials")(exc) from exc
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
            raise SandboxSetupError("credentials", "uid/gid did not change")
        if os.getgroups():
            raise SandboxSetupError("credentials", "supplementary groups remain")
        caps = _status_caps()
        expected = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
        if set(caps) != expected or any(caps.values()):
            raise SandboxSetupError("credentials", f"capabilities remain: {caps}")
        controls += [
            f"credentials: uid={uid} gid={gid} groups=[] (verified)",
            "capabilities: inheritable, permitted, effective, bounding, ambient = 0 (verified)",
        ]
        return Credentialed(_TOKEN, timings, controls, self._order)


def _status_caps() -> dict[str, int]:
    caps = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, value = line.split(":", 1)
                caps[key] = int(value.strip(), 16)
    return caps


class Credentialed(_RunStage):
    _name = "credentials"
    _after = Hygienic

    def exec(self, before_exec: Callable[[list[tuple[str, float]], list[str]], None]) -> NoReturn:
        """Replace this process with the untrusted program.

        ``before_exec`` reports the timings and controls; it runs last because
        exec closes the setup fd, which tells the proxy the program started.
        """
        timings, controls = self._step()
        order = self._order
        timings.mark("exec")
        before_exec(timings.stages, controls)
        try:
            os.execvpe(order.argv[0], list(order.argv), dict(order.env))
        except OSError as exc:
            raise SandboxSetupError("exec", f"{order.argv[0]}: {exc.strerror}") from exc
