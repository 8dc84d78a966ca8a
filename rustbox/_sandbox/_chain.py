"""The isolation chain, as a typestate.

Each stage is its own class, and the only way to get one is from the stage
before it, so a misordered chain does not type-check (``tests/unit/
test_typestate.py`` proves it with mypy) and ``exec`` exists only on the last
stage. A runtime guard backs the types: a stage object can be advanced once,
each stage checks that the process's last stage is its predecessor, and the
constructors refuse callers without the module's private token.

The chain is walked in two parts. A *slot* (a proxy, PID 1 of its own PID
namespace) walks the first part once and then serves many runs one after the
other, the way go-judge keeps pre-forked containers; each run forks a fresh
payload process that walks the second part and execs::

    proxy, once per slot (its uid is the slot's for the slot's lifetime)
      Namespaced        mount, net, uts namespaces (pid: the launcher); hostname; lo up
      PrivateMounts     MS_REC|MS_PRIVATE on /, before any mount
      Rooted            tmpfs root, read-only binds, /etc, /dev, /proc; pivot_root,
                        old root detached, root read-only
      Sealed            capability bounding and ambient sets emptied, NO_NEW_PRIVS,
                        signal dispositions default: the proxy never execs, so these
                        bind only the payloads it forks
    proxy, per run
      RunRooted         the run's own fresh /box (its files), /tmp and /dev/shm
    payload (the proxy's child), per run
      CgroupAttached    own session, a fresh IPC namespace, joined the run's cgroup
      Hygienic          rlimits, umask, fds 0-2 only, cwd
      Credentialed      setgroups([]), setresgid, setresuid to the slot's uid (verified)
      Locked            all five capability sets zero, NoNewPrivs 1 (verified)
      Filtered          seccomp
      exec

This is DESIGN.md's order. After the run the proxy kills whatever is left,
unmounts the run's /box, /tmp and /dev/shm (``RunRooted.clear``) and is back
at ``Sealed``, ready for the next run. What a slot shares between its runs,
and why that is safe, is in docs/security.md.
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
from rustbox._host import Cgroup
from rustbox._limits import Limits
from rustbox._sandbox._spec import DEFAULT_ETC_BINDS, HOSTNAME, BaseTree, RunSpec

_TOKEN = object()

_SLOT_NAMESPACES = _sys.CLONE_NEWNS | _sys.CLONE_NEWNET | _sys.CLONE_NEWUTS
_BIND_RO = _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV
SETUP_FD = 3  #: the payload reports its setup on this fd; CLOEXEC, so exec closes it
#: Signals the proxy keeps ignored (it wants EPIPE and EFBIG, not death); each
#: payload restores their default.
_PROXY_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


class _Progress:
    """Process-wide record of the last stage reached (the runtime guard)."""

    stage: type[_Stage] | None = None


class Timings:
    """Milliseconds spent in each stage, in order."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
        self._last = time.perf_counter()

    def resume(self) -> None:
        """Start the clock again after idling (a slot waiting for its next run)."""
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
    """A stage of one run: it carries the run's spec."""

    def __init__(self, token: object, timings: Timings, controls: list[str], spec: RunSpec) -> None:
        super().__init__(token, timings, controls)
        self._spec = spec


def _failing(stage: str) -> Callable[[BaseException], SandboxSetupError]:
    def wrap(exc: BaseException) -> SandboxSetupError:
        return SandboxSetupError(stage, str(exc) or type(exc).__name__)

    return wrap


def reset_progress() -> None:
    """Forget the chain's progress (a new proxy starts from the beginning)."""
    _Progress.stage = None


def enter_namespaces() -> Namespaced:
    """Stage 1. The caller is already PID 1 of a fresh PID namespace.

    The IPC namespace is not made here: each payload makes its own, so SysV
    objects a run leaves behind die with it.
    """
    if _Progress.stage is not None:
        raise SandboxSetupError("namespaces", "the chain was already started in this process")
    if os.getpid() != 1:
        raise SandboxSetupError(
            "namespaces", f"not PID 1 of a new PID namespace (pid {os.getpid()})"
        )
    timings = Timings()
    try:
        _sys.unshare(_SLOT_NAMESPACES)
        _sys.sethostname(HOSTNAME)
        _sys.loopback_up()
    except OSError as exc:
        raise _failing("namespaces")(exc) from exc
    controls = [
        "namespaces: pid, mount, network, uts per slot; ipc per run",
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


def _write_etc(root: str, uid: int, gid: int) -> None:
    """A minimal /etc: name resolution for the sandbox only, the slot's own
    uid in passwd and group (so tools can resolve it), no host secrets."""
    etc = root + "/etc"
    os.makedirs(etc, exist_ok=True)
    files = {
        "hostname": f"{HOSTNAME}\n",
        "hosts": f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "resolv.conf": "",
        "passwd": (
            f"root:x:0:0:root:/root:/bin/false\nsandbox:x:{uid}:{gid}:sandbox:/box:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/:/bin/false\n"
        ),
        "group": f"root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n",
    }
    for name, text in files.items():
        with open(f"{etc}/{name}", "w") as f:
            f.write(text)
    for path in DEFAULT_ETC_BINDS:
        if os.path.lexists(path):
            target = _place(root, path, directory=os.path.isdir(path))
            if target is not None:
                _bind_readonly(path, target)


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


def _mount_proc(root: str) -> str:
    """Only the slot's own processes, and nothing of /proc/sys and the like (no
    fallback: every kernel rustbox runs on, >= 5.9, has subset=pid)."""
    proc = root + "/proc"
    os.mkdir(proc)
    flags = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
    _sys.mount("proc", proc, "proc", flags, "hidepid=invisible,subset=pid")
    return "/proc: own PID namespace, hidepid=invisible, subset=pid"


class PrivateMounts(_Stage):
    _name = "private_mounts"
    _after = Namespaced

    def build_root(self, base: BaseTree, uid: int, gid: int) -> Rooted:
        """Stage 3: the new root every run of the slot shares, then pivot_root into it.

        Only /box, /tmp and /dev/shm change between runs; they are mount points
        here and get a fresh tmpfs per run (:meth:`Sealed.stage_run`).
        """
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
            _write_etc(root, uid, gid)
            _make_dev(root)
            proc_control = _mount_proc(root)
            os.mkdir(root + "/tmp")
            os.mkdir(root + "/box")
            os.chdir(root)
            _sys.pivot_root(".", ".")
            _sys.umount2(".", _sys.MNT_DETACH)
            os.chdir("/")
            _sys.mount(None, "/", None, _BIND_RO)
        except OSError as exc:
            raise _failing("root")(exc) from exc
        controls += [
            "read-only binds (nosuid, nodev): " + " ".join(bound),
            "/dev: null zero full random urandom only, noexec",
            proc_control,
            "/sys: absent",
            "root: tmpfs, read-only, pivot_root, old root detached",
        ]
        return Rooted(_TOKEN, timings, controls)


def _status() -> dict[str, int]:
    """The capability sets and NoNewPrivs of this process, from /proc/self/status."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("Cap", "NoNewPrivs")):
                key, value = line.split(":", 1)
                found[key] = int(value.strip(), 16)
    return found


class Rooted(_Stage):
    _name = "root"
    _after = PrivateMounts

    def seal(self) -> Sealed:
        """Stage 4: what every payload inherits: no capability can come back through
        exec (bounding and ambient sets empty), NO_NEW_PRIVS, default signals."""
        timings, controls = self._step()
        try:
            _sys.drop_bounding_set()
            _sys.clear_ambient()
            _sys.set_no_new_privs()
            for signum in range(1, signal.NSIG):
                if signum in (signal.SIGKILL, signal.SIGSTOP):
                    continue
                try:
                    ignored = signum in _PROXY_IGNORED
                    signal.signal(signum, signal.SIG_IGN if ignored else signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
        except OSError as exc:
            raise _failing("seal")(exc) from exc
        status = _status()
        if status.get("CapBnd") != 0 or status.get("CapAmb") != 0 or status.get("NoNewPrivs") != 1:
            raise SandboxSetupError("seal", f"bounding/ambient/no_new_privs not as set: {status}")
        controls += [
            "capability bounding and ambient sets: empty",
            "no_new_privs: 1",
            "signals: default dispositions, empty mask",
        ]
        return Sealed(_TOKEN, timings, controls)


def _scratch(target: str, limits: Limits) -> None:
    """A tmpfs the program may write but never execute from (/tmp, /dev/shm)."""
    _sys.mount(
        "tmpfs",
        target,
        "tmpfs",
        _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
        f"size={limits.tmp_size},nr_inodes=1024,mode=1777",
    )


def _write_box(spec: RunSpec) -> None:
    box = "/box"
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


#: Mount points that get a fresh tmpfs per run, unmounted in reverse order after it.
_RUN_MOUNTS = ("/box", "/tmp", "/dev/shm")


def _unmount_run() -> None:
    """Unmount whatever of the run's mounts exists; a busy one is detached."""
    for target in reversed(_RUN_MOUNTS):
        if not os.path.ismount(target):
            continue
        try:
            _sys.umount2(target, 0)
        except OSError:
            _sys.umount2(target, _sys.MNT_DETACH)


class Sealed(_Stage):
    """A slot ready for a run. Unlike other stages it advances once *per run*:
    :meth:`RunRooted.clear` hands it back."""

    _name = "seal"
    _after = Rooted

    def stage_run(self, spec: RunSpec) -> RunRooted:
        """Proxy, once a run arrives: its own fresh /box with its files, /tmp, /dev/shm."""
        self._step()
        timings = Timings()
        try:
            _write_box(spec)
            _scratch("/tmp", spec.limits)
            _scratch("/dev/shm", spec.limits)
        except OSError as exc:
            self._spent = False
            try:
                _unmount_run()
            except OSError:
                pass  # the slot is retired on this error anyway
            raise _failing("run_root")(exc) from exc
        limits = spec.limits
        controls = [
            f"/box: fresh tmpfs size={limits.box_size} inodes={limits.box_inodes} nosuid nodev",
            f"/tmp, /dev/shm: fresh tmpfs size={limits.tmp_size} noexec nosuid nodev",
        ]
        _Progress.stage = Sealed  # RunRooted's guard expects Sealed as its predecessor
        run = RunRooted(_TOKEN, timings, controls, spec)
        run._sealed = self
        return run


class RunRooted(_RunStage):
    """The run's root is ready. The proxy forks; the child goes on, the proxy
    waits for the run to end and then clears the root for the next one."""

    _name = "run_root"
    _after = Sealed
    _sealed: Sealed

    def clear(self) -> Sealed:
        """Proxy, after the run (every process of it dead): unmount its scratch
        filesystems and hand the slot back for the next run."""
        if os.getpid() != 1:
            raise SandboxSetupError(self._name, "only the proxy clears a run")
        if self._spent or _Progress.stage is not RunRooted:
            raise SandboxSetupError(self._name, "the chain has moved on")
        self._spent = True
        try:
            _unmount_run()
        except OSError as exc:
            raise _failing("clear")(exc) from exc
        _Progress.stage = Sealed
        self._sealed._spent = False
        self._sealed.timings.resume()
        return self._sealed

    def attach_cgroup(self, cgroup: Cgroup) -> CgroupAttached:
        """Payload (the proxy's forked child): its own session and IPC namespace,
        then the run's cgroup, before any untrusted instruction."""
        timings, controls = self._step()
        if os.getpid() == 1:
            raise SandboxSetupError("cgroup", "the proxy itself cannot become the payload")
        try:
            for signum in _PROXY_IGNORED:
                signal.signal(signum, signal.SIG_DFL)
            os.setsid()
            _sys.unshare(_sys.CLONE_NEWIPC)
            cgroup.attach_self()
        except OSError as exc:
            raise _failing("cgroup")(exc) from exc
        limits = self._spec.limits
        controls += [
            "ipc namespace: fresh per run",
            f"cgroup v{cgroup.version}: memory={limits.memory} swap=0 "
            f"pids={limits.processes}, cpu time enforced by polling",
        ]
        return CgroupAttached(_TOKEN, timings, controls, self._spec)


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
    _after = RunRooted

    def apply_hygiene(self, stdio: Sequence[int], setup_fd: int) -> Hygienic:
        """rlimits, umask, only fds 0-2 (+ the setup fd, closed by exec), cwd."""
        timings, controls = self._step()
        spec = self._spec
        try:
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
            f"nofile={limits.open_files} nproc={limits.nproc_rlimit} stack={limits.stack} "
            "core=0 memlock=0 msgqueue=0"
            + (f" as={limits.address_space}" if limits.address_space else ""),
            "fds: only 0, 1, 2 reach the program",
            f"environment: built from scratch ({len(spec.env)} variables)",
        ]
        return Hygienic(_TOKEN, timings, controls, spec)


class Hygienic(_RunStage):
    _name = "hygiene"
    _after = CgroupAttached

    def drop_credentials(self) -> Credentialed:
        """The slot's own uid and gid, no groups; the kernel drops every capability
        with root."""
        timings, controls = self._step()
        uid, gid = self._spec.uid, self._spec.gid
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
        controls.append(f"credentials: uid={uid} gid={gid} groups=[] (verified)")
        return Credentialed(_TOKEN, timings, controls, self._spec)


class Credentialed(_RunStage):
    _name = "credentials"
    _after = Hygienic

    def lock_privileges(self) -> Locked:
        """Verify, from the kernel's own account, that no privilege is left."""
        timings, controls = self._step()
        status = _status()
        caps = {k: v for k, v in status.items() if k.startswith("Cap")}
        expected = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
        if set(caps) != expected or any(caps.values()):
            raise SandboxSetupError("privileges", f"capabilities remain: {caps}")
        if status.get("NoNewPrivs") != 1:
            raise SandboxSetupError("privileges", "no_new_privs is not set")
        controls.append(
            "capabilities: inheritable, permitted, effective, bounding, ambient = 0 (verified)"
        )
        return Locked(_TOKEN, timings, controls, self._spec)


class Locked(_RunStage):
    _name = "privileges"
    _after = Credentialed

    def install_seccomp(self, program: bytes) -> Filtered:
        """The syscall filter, last before exec."""
        timings, controls = self._step()
        try:
            _sys.install_filter(program)
        except OSError as exc:
            raise _failing("seccomp")(exc) from exc
        controls.append(f"seccomp: filter of {len(program) // 8} instructions")
        return Filtered(_TOKEN, timings, controls, self._spec)


class Filtered(_RunStage):
    _name = "seccomp"
    _after = Locked

    def exec(self, before_exec: Callable[[list[tuple[str, float]], list[str]], None]) -> NoReturn:
        """Replace this process with the untrusted program.

        ``before_exec`` reports the timings and controls; it runs last because
        exec closes the setup fd, which tells the proxy the program started.
        """
        timings, controls = self._step()
        spec = self._spec
        timings.mark("exec")
        before_exec(timings.stages, controls)
        try:
            os.execvpe(spec.argv[0], list(spec.argv), dict(spec.env))
        except OSError as exc:
            raise SandboxSetupError("exec", f"{spec.argv[0]}: {exc.strerror}") from exc
