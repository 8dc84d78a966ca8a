"""The isolation chain, as a typestate.

Each stage is its own class, and the only way to get one is from the stage
before it, so a misordered chain does not type-check (``tests/unit/
test_typestate.py`` proves it with mypy) and ``exec`` exists only on the last
stage. A runtime guard backs the types: a stage object can be advanced once,
each stage checks that the process's last stage is its predecessor, and the
constructors refuse callers without the module's private token.

The chain is walked by two processes of a *slot*, which serves many runs one
after the other (the way go-judge keeps pre-forked containers). The proxy
(PID 1 of the slot's PID namespace) builds the sandbox; the spawner, a
process outside that PID namespace whose children are born inside it, takes
the slot's uid and the syscall filter once and then starts each run's program
with ``posix_spawn`` (``vfork`` + ``exec``: no copy of a Python heap per run)::

    proxy, once per slot
      Namespaced        mount, net, ipc, uts namespaces (pid: the launcher); hostname; lo up
      PrivateMounts     MS_REC|MS_PRIVATE on /, before any mount
      Rooted            tmpfs root, read-only binds, /etc, /dev, /proc; pivot_root,
                        old root detached, root read-only
    spawner, once per slot
      Joined            the proxy's mount, net, ipc and uts namespaces, its PID
                        namespace for children; verified under the sandbox root
      Locked            groups dropped; capability bounding, ambient and inheritable
                        sets empty, permitted = effective = SETUID and SETGID;
                        NO_NEW_PRIVS; umask 022 (verified by capget/prctl)
      Limited           the slot's rlimits, on the spawner itself (irreversible: a
                        slot serves runs with exactly these rlimits)
      Spawner           seccomp: the payload's filter, on the spawner itself
    proxy, per run
      RunRooted         the run's own empty /box (its files), /tmp and /dev/shm;
                        the run's cgroup is created next
    spawner, per run
      InCgroup          the spawner joins the run's cgroup (its child is born there)
      Hygienic          the run's cwd (its rlimits are the slot's)
      Credentialed      real uid and gid = the slot's (effective stays root)
      spawn             posix_spawn: own session, default signals, fds 0-2 only,
                        POSIX_SPAWN_RESETIDS (effective ids := real ids), exec
    then the spawner restores itself (Spawned.restore) and the proxy empties the
    run's mounts (RunRooted.clear)

The child inherits the filter, NO_NEW_PRIVS, the empty bounding set and the
rlimits, and is born in the run's cgroup and in the slot's namespaces. With
its effective uid no longer root and a non-root real uid, exec gives it no
capability at all (bounding set empty, no file capabilities under nosuid and
NO_NEW_PRIVS), and exec sets its saved ids to the effective ones: uid, gid
and all five capability sets are the run's, which the isolation tests observe
from inside. What a slot shares between its runs, and why that is safe, is in
docs/security.md.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import stat
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

from rustbox import _sys
from rustbox._errors import SandboxSetupError
from rustbox._limits import Limits
from rustbox._sandbox._spec import (
    DEFAULT_ETC_BINDS,
    HOSTNAME,
    BaseTree,
    Rlimits,
    RunSpec,
    SpawnOrder,
)

_TOKEN = object()

_SLOT_NAMESPACES = _sys.CLONE_NEWNS | _sys.CLONE_NEWNET | _sys.CLONE_NEWIPC | _sys.CLONE_NEWUTS
_BIND_RO = _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV
CAP_SETGID, CAP_SETUID = 6, 7
#: What the spawner keeps: taking a run's ids for a moment. Its children get none.
SPAWNER_CAPS = (1 << CAP_SETGID) | (1 << CAP_SETUID)


class _Progress:
    """Process-wide record of the last stage reached (the runtime guard)."""

    stage: type[_Stage] | None = None


class Timings:
    """Milliseconds spent in each stage, in order."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, float]] = []
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
    """Stage 1. The caller is already PID 1 of a fresh PID namespace."""
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
        "namespaces: pid, mount, network, ipc, uts (per slot)",
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
    # Read-only: the nodes still work, but no run can change their timestamps
    # or modes for the slot's next run to see.
    _sys.mount(None, dev, None, _sys.MS_REMOUNT | _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NOEXEC)


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
        here and get an empty tmpfs per run (:meth:`Rooted.stage_run`).
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
            "/dev: null zero full random urandom only, read-only, noexec",
            proc_control,
            "/sys: absent",
            "root: tmpfs, read-only, pivot_root, old root detached",
        ]
        rooted = Rooted(_TOKEN, timings, controls)
        rooted._scratch = _ScratchMounts(uid, gid)
        return rooted


class Rooted(_Stage):
    """A slot ready for a run. Unlike other stages it advances once *per run*:
    :meth:`RunRooted.clear` hands it back."""

    _name = "root"
    _after = PrivateMounts
    _scratch: _ScratchMounts

    def stage_run(self, spec: RunSpec) -> RunRooted:
        """Proxy, once a run arrives: its /box with its files, /tmp and /dev/shm,
        each an empty tmpfs (fresh, or the last run's emptied and verified)."""
        self._step()
        timings = Timings()
        limits = spec.limits
        try:
            how = self._scratch.prepare(limits)
            _write_box(spec)
        except OSError as exc:
            self._spent = False
            try:
                self._scratch.unmount_all()
            except OSError:
                pass  # the slot is retired on this error anyway
            raise _failing("run_root")(exc) from exc
        controls = [
            f"/box: {how['/box']} tmpfs size={limits.box_size} inodes={limits.box_inodes} "
            "nosuid nodev",
            f"/tmp: {how['/tmp']} tmpfs size={limits.tmp_size} noexec nosuid nodev",
            f"/dev/shm: {how['/dev/shm']} tmpfs size={limits.tmp_size} noexec nosuid nodev",
        ]
        run = RunRooted(_TOKEN, timings, controls, spec)
        run._rooted = self
        return run


#: A scratch tmpfs is emptied by hand only up to this many inodes; a bigger
#: tree is cheaper to drop with its mount.
_RECYCLE_MAX_INODES = 256
_FS_IOC_GETFLAGS = 0x80086601
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Unrecyclable(Exception):
    """A scratch tmpfs that cannot be made as good as a fresh one."""


class _ScratchMounts:
    """The tmpfs at /box, /tmp and /dev/shm, kept from one run to the next.

    Mounting three tmpfs per run and unmounting them after it cost a slot
    about 2 ms of wall time per run (every unmount waits for an RCU grace
    period). So after a run each is emptied instead, and kept only if it is
    then as good as a fresh mount for the next program: no inode but its
    root, no block in use (a file still open somewhere would hold some), its
    root's mode reset, no extended attribute but those it was mounted with
    (user attributes and ACLs are removed), no inode flag; its times are
    reset when the next run is staged. Anything else, or any error, and it is unmounted: the next
    run gets a fresh one, as does a run whose limits ask for other mount
    options. What a recycled tmpfs still shows (its inode numbers keep
    counting) is in docs/security.md.
    """

    def __init__(self, uid: int, gid: int) -> None:
        self._uid, self._gid = uid, gid
        self._mounted: dict[str, str] = {}  # mount point -> its mount options
        # The root's extended attributes as the kernel made it (a security
        # label, on some hosts): kept, and checked unchanged.
        self._born_with: dict[str, dict[str, bytes]] = {}
        # /tmp and /dev/shm as the run found them: (atime, mtime, ctime).
        self._left: dict[str, tuple[int, int, int]] = {}

    def _wanted(self, limits: Limits) -> list[tuple[str, int, str]]:
        scratch = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
        tmp = f"size={limits.tmp_size},nr_inodes=1024,mode=1777"
        box = (
            f"size={limits.box_size},nr_inodes={limits.box_inodes},mode=755,"
            f"uid={self._uid},gid={self._gid}"
        )
        return [
            ("/box", _sys.MS_NOSUID | _sys.MS_NODEV, box),
            ("/tmp", scratch, tmp),
            ("/dev/shm", scratch, tmp),
        ]

    def prepare(self, limits: Limits) -> dict[str, str]:
        """Mount what is not mounted with these options; says which are "fresh"
        and which "recycled" (the last run's, emptied and verified)."""
        how = {}
        for target, flags, options in self._wanted(limits):
            current = self._mounted.get(target)
            if current == options:
                # Its times become this run's start: they tell nothing of when
                # the last run ended, nor whether it touched the mount.
                os.utime(target)
                how[target] = "recycled"
            else:
                if current is not None:
                    self._unmount(target)
                _sys.mount("tmpfs", target, "tmpfs", flags, options)
                self._mounted[target] = options
                self._born_with[target] = _xattrs(target)
                how[target] = "fresh"
            if target != "/box":
                self._left[target] = _times(os.stat(target))
        return how

    def recycle(self) -> None:
        """After a run (all of its processes dead): empty each tmpfs, or unmount it."""
        for target in list(self._mounted):
            try:
                if target == "/box" or not self._untouched(target):
                    mode = 0o755 if target == "/box" else 0o1777
                    _empty_scratch(target, mode, self._born_with[target])
            except (OSError, _Unrecyclable):
                self._unmount(target)

    def _untouched(self, target: str) -> bool:
        """A sticky root-owned scratch (/tmp, /dev/shm) the run did not change.

        A program can change only the contents and times of such a root (its
        mode, owner, attributes and flags take ownership), so if it is empty
        and its times are those it was found with, it is exactly as it was
        found. /box belongs to the program: it is always emptied.
        """
        if _times(os.stat(target)) != self._left.get(target):
            return False  # the run changed something (or read the directory)
        return _holds_nothing(target)

    def unmount_all(self) -> None:
        for target in list(self._mounted):
            self._unmount(target)

    def _unmount(self, target: str) -> None:
        """Unmount (detached if still busy); forgotten even if that fails, so the
        next run mounts afresh over it."""
        del self._mounted[target]
        self._left.pop(target, None)
        self._born_with.pop(target, None)
        try:
            _sys.umount2(target, 0)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not mounted
                _sys.umount2(target, _sys.MNT_DETACH)


def _holds_nothing(target: str) -> bool:
    """The filesystem has no inode but its root and no block in use."""
    fs = os.statvfs(target)
    return fs.f_files - fs.f_ffree == 1 and fs.f_blocks == fs.f_bfree


def _times(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_atime_ns, info.st_mtime_ns, info.st_ctime_ns


#: Extended attributes a program may set on a root it owns, which emptying removes.
_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")


def _xattrs(path: str) -> dict[str, bytes]:
    return {name: os.getxattr(path, name) for name in os.listxattr(path)}


def _empty_scratch(target: str, mode: int, born_with: dict[str, bytes]) -> None:
    """Empty ``target`` and reset its root's mode (its owner cannot have
    changed: no program holds CAP_CHOWN; its times are reset when the next
    run is staged), or raise."""
    fs = os.statvfs(target)
    if fs.f_files - fs.f_ffree > _RECYCLE_MAX_INODES:
        raise _Unrecyclable(f"{target}: too many inodes to empty by hand")
    fd = os.open(target, _DIR_OPEN)
    try:
        _empty_dir(fd)
        for name in os.listxattr(fd):
            if name in born_with:
                if os.getxattr(fd, name) != born_with[name]:
                    raise _Unrecyclable(f"{target}: extended attribute {name} changed")
            elif name.startswith("user.") or name in _ACL_XATTRS:
                os.removexattr(fd, name)
            else:  # e.g. a security label set by the run: a fresh mount gets its own
                raise _Unrecyclable(f"{target}: extended attribute {name}")
        flags = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        if any(flags):
            raise _Unrecyclable(f"{target}: inode flags set")
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    if not _holds_nothing(target):
        raise _Unrecyclable(f"{target}: not empty after emptying")


def _empty_dir(dir_fd: int) -> None:
    """Delete everything under ``dir_fd``, never following a symlink."""
    with os.scandir(dir_fd) as entries:
        listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in listed:
        if is_dir:
            sub = os.open(name, _DIR_OPEN, dir_fd=dir_fd)
            try:
                _empty_dir(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


def _write_box(spec: RunSpec) -> None:
    box = "/box"
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


class RunRooted(_RunStage):
    """The run's root is ready; the spawner starts the program in it."""

    _name = "run_root"
    _after = Rooted
    _rooted: Rooted

    def clear(self) -> Rooted:
        """Proxy, after the run (every process of it dead): empty its scratch
        filesystems (or drop them) and hand the slot back for the next run."""
        if self._spent or _Progress.stage is not RunRooted:
            raise SandboxSetupError(self._name, "the chain has moved on")
        self._spent = True
        try:
            self._rooted._scratch.recycle()
        except OSError as exc:
            raise _failing("clear")(exc) from exc
        _Progress.stage = Rooted
        self._rooted._spent = False
        return self._rooted


# -- the spawner --------------------------------------------------------------


def join_slot(proxy_pidfd: int) -> Joined:
    """Spawner stage 1: the proxy's namespaces (it must have built its root).

    The spawner stays in the launcher's PID namespace, out of sight and reach
    of every payload; ``setns`` of the PID namespace only places its children.
    """
    if _Progress.stage is not None:
        raise SandboxSetupError("join", "the chain was already started in this process")
    timings = Timings()
    try:
        _sys.setns(proxy_pidfd, _SLOT_NAMESPACES | _sys.CLONE_NEWPID)
        os.chdir("/")
    except OSError as exc:
        raise _failing("join")(exc) from exc
    if os.path.exists("/sys") or not os.path.isdir("/box") or os.uname().nodename != HOSTNAME:
        raise SandboxSetupError("join", "not under the slot's root after setns")
    controls = ["spawner: outside the slot's PID namespace; its children are born inside"]
    return Joined(_TOKEN, timings, controls)


class Joined(_Stage):
    _name = "join"

    def lock(self) -> Locked:
        """Spawner stage 2: nothing but SETUID and SETGID is left, and
        nothing can come back through exec. Verified with capget and prctl
        (the slot's /proc does not show the spawner: it is not in its PID namespace)."""
        timings, controls = self._step()
        try:
            os.setgroups([])
            _sys.drop_bounding_set()
            _sys.clear_ambient()
            _sys.capset(SPAWNER_CAPS, SPAWNER_CAPS, 0)
            _sys.set_no_new_privs()
            os.umask(0o022)
            caps = _sys.capget()
            last = _sys.cap_last_cap()
            bounding = [c for c in range(last + 1) if _sys.prctl(_sys.PR_CAPBSET_READ, c)]
            ambient = [
                c
                for c in range(last + 1)
                if _sys.prctl(_sys.PR_CAP_AMBIENT, _sys.PR_CAP_AMBIENT_IS_SET, c)
            ]
            no_new_privs = _sys.prctl(_sys.PR_GET_NO_NEW_PRIVS)
        except OSError as exc:
            raise _failing("privileges")(exc) from exc
        wanted = _sys.CapSets(SPAWNER_CAPS, SPAWNER_CAPS, 0)
        if caps != wanted or bounding or ambient or no_new_privs != 1 or os.getgroups():
            raise SandboxSetupError(
                "privileges",
                f"not locked: {caps} bounding={bounding} ambient={ambient} "
                f"no_new_privs={no_new_privs} groups={os.getgroups()}",
            )
        controls += [
            "capability bounding, ambient and inheritable sets: empty (verified by prctl, capget)",
            "no_new_privs: 1",
            "supplementary groups: none",
        ]
        return Locked(_TOKEN, timings, controls)


class Locked(_Stage):
    _name = "privileges"
    _after = Joined

    def limit(self, rlimits: Rlimits) -> Limited:
        """Spawner stage 3: the slot's rlimits, on the spawner itself: every child
        inherits them, and without CAP_SYS_RESOURCE neither the spawner nor any
        child can raise a hard limit again. A slot serves only runs whose
        rlimits are exactly these."""
        timings, controls = self._step()
        try:
            for which, soft, hard in rlimits:
                resource.setrlimit(which, (soft, hard))
            actual = tuple((w, *resource.getrlimit(w)) for w, _, _ in rlimits)
        except (OSError, ValueError) as exc:
            raise _failing("rlimits")(exc) from exc
        if actual != tuple(rlimits):
            raise SandboxSetupError("rlimits", f"not as set: {actual}")
        controls.append("rlimits: " + describe_rlimits(rlimits))
        return Limited(_TOKEN, timings, controls)


_RLIMIT_NAMES = {
    resource.RLIMIT_CPU: "cpu",
    resource.RLIMIT_FSIZE: "fsize",
    resource.RLIMIT_NOFILE: "nofile",
    resource.RLIMIT_NPROC: "nproc",
    resource.RLIMIT_STACK: "stack",
    resource.RLIMIT_CORE: "core",
    resource.RLIMIT_MEMLOCK: "memlock",
    resource.RLIMIT_MSGQUEUE: "msgqueue",
    resource.RLIMIT_AS: "as",
}


def describe_rlimits(rlimits: Rlimits) -> str:
    unit = {resource.RLIMIT_CPU: "s"}
    return " ".join(
        f"{_RLIMIT_NAMES.get(w, str(w))}={soft}{unit.get(w, '')}" for w, soft, _ in rlimits
    )


class Limited(_Stage):
    _name = "rlimits"
    _after = Locked

    def install_seccomp(self, program: bytes) -> Spawner:
        """Spawner stage 4: the payload's filter, on the spawner itself: every
        child inherits it and none can shed it."""
        timings, controls = self._step()
        try:
            _sys.install_filter(program)
        except OSError as exc:
            raise _failing("seccomp")(exc) from exc
        controls.append(f"seccomp: filter of {len(program) // 8} instructions")
        return Spawner(_TOKEN, timings, controls)


class Spawner(_Stage):
    """The spawner between runs. Like :class:`Rooted`, it advances once per run:
    :meth:`Spawned.restore` hands it back."""

    _name = "seccomp"
    _after = Limited

    def attach_cgroup(self, order: SpawnOrder, procs_fds: Sequence[int]) -> InCgroup:
        """Per run: join the run's cgroup (in every hierarchy) so the child is born
        in it: no instruction of the run ever runs outside its limits."""
        self._step()
        timings = Timings()
        try:
            for fd in procs_fds:
                os.write(fd, b"0")
        except OSError as exc:
            self._spent = False
            raise _failing("cgroup")(exc) from exc
        run = InCgroup(_TOKEN, timings, [], order)
        run._spawner = self
        return run


class _SpawnStage(_Stage):
    """A per-run stage of the spawner: it carries the order and what to undo."""

    _spawner: Spawner

    def __init__(
        self, token: object, timings: Timings, controls: list[str], order: SpawnOrder
    ) -> None:
        super().__init__(token, timings, controls)
        self._order = order

    def _next(self, cls: type[_S]) -> _S:
        stage = cls(_TOKEN, self._timings, self._controls, self._order)
        stage._spawner = self._spawner
        return stage


_S = TypeVar("_S", bound=_SpawnStage)


class InCgroup(_SpawnStage):
    _name = "cgroup"
    _after = Spawner

    def apply_hygiene(self, rlimits: Rlimits) -> Hygienic:
        """The run's cwd; its rlimits are the slot's (``rlimits`` must match them)."""
        self._step()
        order = self._order
        if order.limits.rlimits() != rlimits:
            raise SandboxSetupError("hygiene", "the run's rlimits are not this slot's")
        try:
            os.chdir(order.cwd)
        except OSError as exc:
            raise _failing("hygiene")(exc) from exc
        self._controls += [
            "fds: only 0, 1, 2 reach the program",
            f"environment: built from scratch ({len(order.env)} variables)",
        ]
        return self._next(Hygienic)


class Hygienic(_SpawnStage):
    _name = "hygiene"
    _after = InCgroup

    def take_credentials(self) -> Credentialed:
        """Real uid and gid := the run's; effective stays root until the child's
        POSIX_SPAWN_RESETIDS. Verified."""
        self._step()
        uid, gid = self._order.uid, self._order.gid
        try:
            os.setresgid(gid, 0, 0)
            os.setresuid(uid, 0, 0)
        except OSError as exc:
            raise _failing("credentials")(exc) from exc
        if os.getresuid() != (uid, 0, 0) or os.getresgid() != (gid, 0, 0):
            raise SandboxSetupError("credentials", "real uid/gid did not change")
        self._controls.append(
            f"credentials: uid={uid} gid={gid} groups=[] (real ids verified; the program's "
            "effective and saved ids follow at spawn and exec)"
        )
        return self._next(Credentialed)


def _resolve(order: SpawnOrder) -> str:
    """The program's path as execvp would find it with the run's PATH; access()
    checks with the real uid, which is the run's by now."""
    command = order.argv[0]
    if "/" in command:
        return command
    path = dict(order.env).get("PATH", "/usr/bin:/bin")
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return command


#: Every catchable signal: the child starts with default dispositions, none blocked.
_ALL_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


class Credentialed(_SpawnStage):
    _name = "credentials"
    _after = Hygienic

    def spawn(self, stdio: Sequence[int]) -> Spawned:
        """Start the untrusted program: vfork + exec, nothing of ours runs in between
        but the C library's posix_spawn."""
        self._step()
        order = self._order
        try:
            pid = os.posix_spawn(
                _resolve(order),
                list(order.argv),
                dict(order.env),
                file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)],
                setsid=True,
                setsigmask=(),
                setsigdef=_ALL_SIGNALS,
                resetids=True,
            )
        except OSError as exc:
            raise SandboxSetupError("exec", f"{order.argv[0]}: {exc.strerror}") from exc
        spawned = self._next(Spawned)
        spawned.pid = pid
        return spawned


class Spawned(_SpawnStage):
    _name = "exec"
    _after = Credentialed
    pid: int

    def restore(self, home_fds: Sequence[int]) -> Spawner:
        """Back to the spawner between runs: root ids, its own cgroup, cwd /."""
        if self._spent or _Progress.stage is not Spawned:
            raise SandboxSetupError(self._name, "the chain has moved on")
        self._spent = True
        try:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)
            for fd in home_fds:
                os.write(fd, b"0")
            os.chdir("/")
        except OSError as exc:
            raise _failing("restore")(exc) from exc
        _Progress.stage = Spawner
        self._spawner._spent = False
        return self._spawner
