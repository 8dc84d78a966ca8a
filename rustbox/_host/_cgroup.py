"""One interface over cgroup v1 and v2.

Production hosts are mostly pure cgroup v2; development machines are often v1
hybrids. Everything above this module speaks :class:`CgroupTree` and
:class:`Cgroup` and never learns which version it got.

A :class:`Cgroup` is a handle that works only through directory file
descriptors opened when it was created. Its holder may ``pivot_root`` away
from ``/sys/fs/cgroup`` or ``fork()`` afterwards, and the handle keeps working.
This module uses only the standard library and attrs because it also runs in
forked single-threaded helper processes.

Strict mode: when a control cannot be applied, :class:`HostUnsupported` names
it; nothing is silently weaker.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import attrs

from rustbox._errors import HostUnsupported, InvalidInput, SyscallError

__all__ = ["Cgroup", "CgroupLimits", "CgroupParents", "CgroupStats", "CgroupTree"]

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_WRITE_FLAGS: Final = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC
_RMDIR_RETRY: Final = 0.005  # seconds between rmdir attempts while the kernel reaps
_FREEZE_WAIT: Final = 1.0  # longest wait for a v1 freezer to reach FROZEN
_KILL_TIMEOUT: Final = 5.0  # bound of kill_all()'s signal loop
_V1_CPUACCT_DIRS: Final = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")
_V2_CONTROLLERS: Final = ("memory", "pids")
_UNIFIED: Final = "unified"  # key of the single v2 directory

_KILL_CGROUP: Final = "cgroup.kill"
_KILL_FREEZER: Final = "freezer"
_KILL_SIGNALS: Final = "signal-loop"


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"cgroup {attribute.name}", f"must be a positive integer, got {value!r}")


@attrs.frozen
class CgroupLimits:
    """The ceilings the kernel enforces on one run.

    Swap is always limited to zero extra, so ``memory`` is a hard ceiling on
    RAM + swap (v1 ``memsw`` = ``memory``; v2 ``memory.swap.max`` = 0).
    """

    memory: int = attrs.field(validator=_positive)  # bytes
    pids: int = attrs.field(validator=_positive)  # pids.max


@attrs.frozen
class CgroupStats:
    """The kernel's account of one run: the evidence behind MLE/PLE/TLE verdicts."""

    memory_peak: int | None  # bytes; None where the kernel has no peak file
    cpu_usage_ns: int
    oom_kills: int
    pids_limit_hits: int  # forks refused by pids.max
    pids_peak: int | None  # None where the kernel has no pids.peak
    memory_limit_hits: int  # v2 memory.events "max", v1 memory.failcnt + memory.memsw.failcnt


# -- file helpers -------------------------------------------------------------


def _read_at(dir_fd: int | None, name: str, where: str) -> str | None:
    """The whole file, or None if it does not exist (older kernel, removed group)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SyscallError("open", exc.errno or errno.EIO, where) from exc
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except FileNotFoundError:  # the group went away under us
        return None
    except OSError as exc:
        raise SyscallError("read", exc.errno or errno.EIO, where) from exc
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _write_at(dir_fd: int | None, name: str, value: str, where: str) -> None:
    """Write ``value`` in one write(2), as the cgroup interface requires.

    Files are opened without O_CREAT first: cgroupfs answers a missing file
    with EACCES under O_CREAT, which would misname the problem. The O_CREAT
    retry exists for plain directories (the unit tests' fake cgroupfs).
    """
    data = value.encode()
    try:
        fd = os.open(name, _WRITE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        try:
            fd = os.open(name, _WRITE_FLAGS | os.O_CREAT, 0o644, dir_fd=dir_fd)
        except OSError:
            raise SyscallError("open", errno.ENOENT, where) from None
    except OSError as exc:
        raise SyscallError("open", exc.errno or errno.EIO, where) from exc
    try:
        written = os.write(fd, data)
    except OSError as exc:
        raise SyscallError("write", exc.errno or errno.EIO, f"{where} <- {value!r}") from exc
    finally:
        os.close(fd)
    if written != len(data):
        raise SyscallError("write", errno.EIO, f"short write to {where}")


def _open_for_writing(targets: Iterable[tuple[str, int | None, str]]) -> list[int]:
    """Open every (name, dir_fd, where) for writing, close-on-exec: all or none."""
    fds: list[int] = []
    try:
        for name, dir_fd, where in targets:
            try:
                fds.append(os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd))
            except OSError as exc:
                raise SyscallError("open", exc.errno or errno.EIO, where) from exc
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _keyed(text: str | None) -> dict[str, int]:
    """Parse ``key value`` lines (memory.events, pids.events, oom_control, cpu.stat)."""
    result: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            result[key] = int(value)
    return result


def _number(text: str | None) -> int | None:
    try:
        return None if text is None else int(text.strip())
    except ValueError:
        return None


def _pids(text: str | None) -> list[int]:
    return [int(line) for line in (text or "").split()]


def _check_component(field: str, name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\0" in name:
        raise InvalidInput(field, f"must be a single path component, got {name!r}")


def _usable_kill_mode(mode: str, dirs: Iterable[_GroupDir]) -> str:
    """The freezer mode needs the group's freezer directory; else loop signals."""
    if mode == _KILL_FREEZER and not any(d.key == "freezer" for d in dirs):
        return _KILL_SIGNALS
    return mode


# -- the handle ---------------------------------------------------------------


@attrs.define(eq=False)
class _GroupDir:
    """One hierarchy's directory of a group, held open so paths never matter again."""

    key: str  # "memory", "pids", "cpuacct", "freezer" (v1) or "unified" (v2)
    path: str  # for messages only: it may not resolve in the holder's mount namespace
    fd: int
    parent_fd: int

    def read(self, name: str) -> str | None:
        return _read_at(self.fd, name, f"{self.path}/{name}")

    def write(self, name: str, value: str) -> None:
        _write_at(self.fd, name, value, f"{self.path}/{name}")


@attrs.define(eq=False)
class Cgroup:
    """A handle on one group in every hierarchy, working only through fds.

    The fds are close-on-exec, so they survive ``fork()`` (the proxy can attach
    its payload) but never reach the untrusted program.
    """

    name: str
    version: int
    _dirs: tuple[_GroupDir, ...] = attrs.field(repr=False)
    _kill_mode: str = attrs.field(repr=False)
    _cpu_fd: int = attrs.field(default=-1, init=False, repr=False)
    _state: str = attrs.field(default="open", init=False)  # "open", "closed" or "removed"

    @classmethod
    def _open(
        cls,
        name: str,
        version: int,
        parents: Iterable[tuple[str, str]],
        kill_mode: str,
        *,
        partial: bool,
        parent_fds: Sequence[int] | None = None,
    ) -> Cgroup | None:
        """Open the group's dirs; None if absent (with ``partial``: absent everywhere).

        ``parent_fds`` (one per parent, in order) are used instead of the paths,
        which may not resolve in the caller's mount namespace.
        """
        dirs: list[_GroupDir] = []
        try:
            for i, (key, parent) in enumerate(parents):
                try:
                    if parent_fds is None:
                        parent_fd = os.open(parent, _DIR_FLAGS)
                    else:
                        parent_fd = os.dup(parent_fds[i])
                except OSError as exc:
                    raise SyscallError("open", exc.errno or errno.EIO, parent) from exc
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                except FileNotFoundError:
                    os.close(parent_fd)
                    if partial:
                        continue
                    for d in dirs:
                        os.close(d.fd)
                        os.close(d.parent_fd)
                    return None
                except OSError as exc:
                    os.close(parent_fd)
                    raise SyscallError("open", exc.errno or errno.EIO, f"{parent}/{name}") from exc
                dirs.append(_GroupDir(key, f"{parent}/{name}", fd, parent_fd))
        except BaseException:
            for d in dirs:
                os.close(d.fd)
                os.close(d.parent_fd)
            raise
        if not dirs:
            return None
        return cls(name, version, tuple(dirs), _usable_kill_mode(kill_mode, dirs))

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"cgroup {self.name!r} handle is {self._state}")

    def _dir(self, key: str) -> _GroupDir:
        for d in self._dirs:
            if d.key == key:
                return d
        raise HostUnsupported([f"cgroup {self.name!r} has no {key} directory"])

    def _find(self, key: str) -> _GroupDir | None:
        return next((d for d in self._dirs if d.key == key), None)

    def attach_self(self) -> None:
        """Move the calling process into the group, in every hierarchy."""
        self._check_open()
        for d in self._dirs:
            d.write("cgroup.procs", "0")

    def procs_fds(self) -> list[int]:
        """``cgroup.procs`` of every hierarchy, open for writing (close-on-exec).

        Whoever holds them can move itself in by writing ``0``: the spawner,
        which is not in the proxy's PID namespace and so cannot be named by pid.
        """
        self._check_open()
        return _open_for_writing(
            [("cgroup.procs", d.fd, f"{d.path}/cgroup.procs") for d in self._dirs]
        )

    def cpu_usage_ns(self) -> int:
        """CPU time used by the group so far: one pread(2) on a kept fd.

        Cheap on purpose: the supervisor polls it every few milliseconds to
        enforce the cpu-time limit (a cpu.max quota only throttles).
        """
        self._check_open()
        if self._cpu_fd < 0:
            if self.version == 2:
                d, name = self._dir(_UNIFIED), "cpu.stat"
            else:
                d, name = self._dir("cpuacct"), "cpuacct.usage"
            try:
                self._cpu_fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=d.fd)
            except OSError as exc:
                raise SyscallError("open", exc.errno or errno.EIO, f"{d.path}/{name}") from exc
        # seq_file regenerates the content on every read at offset 0.
        data = os.pread(self._cpu_fd, 4096, 0).decode()
        if self.version == 2:
            return _keyed(data).get("usage_usec", 0) * 1000
        return int(data.strip() or 0)

    def stats(self) -> CgroupStats:
        """Read the kernel's figures; files an older kernel lacks read as None/0."""
        self._check_open()
        cpu = self.cpu_usage_ns()
        if self.version == 2:
            d = self._dir(_UNIFIED)
            memory_events = _keyed(d.read("memory.events"))
            return CgroupStats(
                memory_peak=_number(d.read("memory.peak")),
                cpu_usage_ns=cpu,
                oom_kills=memory_events.get("oom_kill", 0),
                pids_limit_hits=_keyed(d.read("pids.events")).get("max", 0),
                pids_peak=_number(d.read("pids.peak")),
                memory_limit_hits=memory_events.get("max", 0),
            )
        memory, pids = self._find("memory"), self._find("pids")
        peak = oom_control = pids_events = pids_peak = None
        failcnt = 0
        if memory is not None:
            peak = memory.read("memory.max_usage_in_bytes")
            oom_control = memory.read("memory.oom_control")
            # With memsw == memory, a failing charge usually fails on the memsw
            # counter, which then counts the hit instead of memory.failcnt.
            for name in ("memory.failcnt", "memory.memsw.failcnt"):
                failcnt += _number(memory.read(name)) or 0
        if pids is not None:
            pids_events = pids.read("pids.events")
            pids_peak = pids.read("pids.peak")
        return CgroupStats(
            memory_peak=_number(peak),
            cpu_usage_ns=cpu,
            oom_kills=_keyed(oom_control).get("oom_kill", 0),
            pids_limit_hits=_keyed(pids_events).get("max", 0),
            pids_peak=_number(pids_peak),
            memory_limit_hits=failcnt,
        )

    def _procs(self) -> list[int]:
        """Every pid listed in any hierarchy (0 = a process outside our pid namespace)."""
        seen: set[int] = set()
        for d in self._dirs:
            seen.update(_pids(d.read("cgroup.procs")))
        return sorted(seen)

    def is_empty(self, hierarchy: str | None = None) -> bool:
        """True when no process is left in any hierarchy (zombies do not count).

        ``hierarchy`` looks at that one only: enough when every process of the
        group is known to be in all of them.
        """
        self._check_open()
        if self.version == 2:
            events = _keyed(self._dir(_UNIFIED).read("cgroup.events"))
            if "populated" in events:
                return events["populated"] == 0
        if hierarchy is not None and self.version == 1:
            return not _pids(self._dir(hierarchy).read("cgroup.procs"))
        return not self._procs()

    def _signal_pass(self) -> int:
        """SIGKILL every listed process once; return how many were listed.

        Each pid is pinned with a pidfd and then checked to still be a member,
        so a pid recycled by an unrelated process is never signalled.
        """
        listed = self._procs()
        pidfds: dict[int, int] = {}
        try:
            for pid in listed:
                if pid <= 0:  # kill(0) would hit our own process group
                    continue
                try:
                    pidfds[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                except OSError as exc:
                    raise SyscallError("pidfd_open", exc.errno or errno.EIO, str(pid)) from exc
            if not pidfds:
                return len(listed)
            members = set(self._procs())
            for pid, pidfd in pidfds.items():
                if pid in members:
                    try:
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    except OSError as exc:
                        err = exc.errno or errno.EIO
                        raise SyscallError("pidfd_send_signal", err, str(pid)) from exc
        finally:
            for pidfd in pidfds.values():
                os.close(pidfd)
        return len(listed)

    def _signal_loop(self, deadline: float) -> None:
        """Kill until empty: new forks show up in the next pass (pids.max bounds them)."""
        while self._signal_pass() and time.monotonic() < deadline:
            time.sleep(0.001)

    def _kill(self, deadline: float) -> None:
        try:
            self._kill_by_mode(deadline)
        except SyscallError as exc:
            if exc.errno != errno.ENOENT:  # a group removed meanwhile has nobody left
                raise

    def _kill_by_mode(self, deadline: float) -> None:
        if self._kill_mode == _KILL_CGROUP:
            self._dir(_UNIFIED).write("cgroup.kill", "1")
            return
        freezer = self._find("freezer") if self._kill_mode == _KILL_FREEZER else None
        if freezer is None:
            self._signal_loop(deadline)
            return
        # Frozen tasks cannot fork or exit, so one pass catches them all and no
        # pid can be recycled meanwhile; SIGKILL takes effect when they thaw.
        freezer.write("freezer.state", "FROZEN")
        try:
            frozen = self._wait_frozen(freezer, min(deadline, time.monotonic() + _FREEZE_WAIT))
            if frozen:
                self._signal_pass()
        finally:
            freezer.write("freezer.state", "THAWED")
        if not frozen:  # a task stuck in D state kept the freeze from settling
            self._signal_loop(deadline)

    @staticmethod
    def _wait_frozen(freezer: _GroupDir, until: float) -> bool:
        while (freezer.read("freezer.state") or "").strip() != "FROZEN":
            if time.monotonic() >= until:
                return False
            time.sleep(0.001)
        return True

    def kill_all(self) -> None:
        """SIGKILL every process in the group (the caller must not be in it).

        v2 writes cgroup.kill; v1 freezes, kills and thaws, or failing a freezer
        loops until the group is empty. Does not wait for the processes to be
        reaped; :meth:`remove` does.
        """
        self._check_open()
        self._kill(time.monotonic() + _KILL_TIMEOUT)

    def remove(self, timeout: float = 5.0, *, empty: bool = False) -> None:
        """Kill everything, then rmdir the group in every hierarchy and close the fds.

        rmdir fails with EBUSY until the kernel has finished every exit, so it
        is retried every 5 ms until ``timeout``. Idempotent.
        """
        if self._state == "removed":
            return
        self._check_open()
        deadline = time.monotonic() + timeout
        if not empty and not self.is_empty():
            self._kill(deadline)
        for d in self._dirs:
            while True:
                try:
                    os.rmdir(self.name, dir_fd=d.parent_fd)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise SyscallError("rmdir", exc.errno or errno.EIO, d.path) from exc
                    if time.monotonic() >= deadline:
                        raise SyscallError("rmdir", errno.EBUSY, d.path) from exc
                # Catches a straggler attached after the kill.
                self._signal_pass()
                time.sleep(_RMDIR_RETRY)
        self.close()
        self._state = "removed"

    def close(self) -> None:
        """Close the fds without removing the group (idempotent)."""
        if self._state != "open":
            return
        self._state = "closed"
        if self._cpu_fd >= 0:
            os.close(self._cpu_fd)
            self._cpu_fd = -1
        for d in self._dirs:
            os.close(d.fd)
            os.close(d.parent_fd)


# -- the tree -----------------------------------------------------------------


def _swap_total_kb(meminfo: str) -> int | None:
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("SwapTotal:"):
            return _number(line.split()[1])
    return None


def _mkdir_p(path: Path, version: str) -> None:
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise HostUnsupported([f"{version}: cannot create {path}: {exc.strerror}"]) from exc


def _enable_v2(group: Path, wanted: Iterable[str]) -> None:
    """Delegate ``wanted`` controllers to ``group``'s children (if not yet done)."""
    control = group / "cgroup.subtree_control"
    current = _read_at(None, str(control), str(control)) or ""
    enabled = {token.lstrip("+") for token in current.split()}
    need = [c for c in wanted if c not in enabled]
    if not need:
        return
    value = " ".join(f"+{c}" for c in need)
    try:
        _write_at(None, str(control), value, str(control))
    except SyscallError as exc:
        reason = os.strerror(exc.errno or errno.EIO)
        problem = f"cgroup v2: cannot enable {value!r} in {control}: {reason}"
        raise HostUnsupported([problem]) from exc


@attrs.define(eq=False)
class CgroupTree:
    """The parent group(s) rustbox creates its per-run groups under.

    Build it with :meth:`detect`; the constructor takes the detected layout.
    """

    version: int
    mount_root: str
    parent: str
    controllers: tuple[str, ...]
    # (key, parent group path) per hierarchy, in the order processes are attached.
    _parents: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    _kill_mode: str = attrs.field(repr=False)
    _swap_file: str | None = attrs.field(repr=False)  # None: the kernel cannot limit swap
    _meminfo: str = attrs.field(default="/proc/meminfo", repr=False)

    @classmethod
    def detect(
        cls,
        mount_root: str = "/sys/fs/cgroup",
        parent: str = "rustbox",
        *,
        freezer: bool = True,
        _require: Iterable[str] = _V2_CONTROLLERS,
        _meminfo: str = "/proc/meminfo",
    ) -> CgroupTree:
        """Find the cgroup version from the directory structure and create the parent.

        v2 when ``<mount_root>/cgroup.controllers`` exists, else v1. Needs no
        /proc/mounts, so a fake tree in a tmp dir works. ``_require`` is for
        tests only: naming fewer controllers than memory and pids makes a
        weaker tree (used on hosts whose v2 mount has no controllers).
        ``freezer=False`` leaves a v1 freezer hierarchy out (one directory
        less per group): for holders that kill by other means, like a proxy
        that is PID 1 of its run's PID namespace.
        """
        parts = Path(parent).parts
        if not parts or Path(parent).is_absolute():
            raise InvalidInput("cgroup parent", f"must be a relative path, got {parent!r}")
        for part in parts:
            _check_component("cgroup parent", part)
        root = Path(mount_root)
        require = frozenset(_require)
        if (root / "cgroup.controllers").is_file():
            return cls._detect_v2(root, parent, require, _meminfo)
        return cls._detect_v1(root, parent, require, _meminfo, freezer)

    @classmethod
    def _detect_v2(
        cls, root: Path, parent: str, require: frozenset[str], meminfo: str
    ) -> CgroupTree:
        control = root / "cgroup.controllers"
        available = set((_read_at(None, str(control), str(control)) or "").split())
        missing = [
            f"cgroup v2: controller {c!r} not available in {control}"
            for c in _V2_CONTROLLERS
            if c not in available and c in require
        ]
        if missing:
            raise HostUnsupported(missing)
        wanted = tuple(c for c in _V2_CONTROLLERS if c in available)
        # Every level from the root down to the parent must delegate the
        # controllers, or the per-run groups get no limit files.
        level = root
        _enable_v2(level, wanted)
        for part in Path(parent).parts:
            level = level / part
            _mkdir_p(level, "cgroup v2")
            _enable_v2(level, wanted)
        swap = "memory.swap.max" if (level / "memory.swap.max").exists() else None
        kill = _KILL_CGROUP if (level / "cgroup.kill").exists() else _KILL_SIGNALS
        return cls(2, str(root), parent, wanted, ((_UNIFIED, str(level)),), kill, swap, meminfo)

    @classmethod
    def _detect_v1(
        cls, root: Path, parent: str, require: frozenset[str], meminfo: str, freezer: bool
    ) -> CgroupTree:
        missing: list[str] = []
        found: list[tuple[str, Path]] = []
        for key, marker in (("memory", "memory.limit_in_bytes"), ("pids", "cgroup.procs")):
            if (root / key / marker).is_file():
                found.append((key, root / key))
            elif key in require:
                missing.append(f"cgroup v1: no {key} hierarchy at {root / key}")
        cpuacct = next(
            (root / n for n in _V1_CPUACCT_DIRS if (root / n / "cpuacct.usage").is_file()), None
        )
        if cpuacct is None:
            missing.append(
                f"cgroup v1: no cpuacct hierarchy at {root / 'cpuacct'} or {root / 'cpu,cpuacct'}"
            )
        else:
            found.append(("cpuacct", cpuacct))
        if freezer and (root / "freezer" / "cgroup.procs").is_file():
            found.append(("freezer", root / "freezer"))
        if missing:
            raise HostUnsupported(missing)
        parents: list[tuple[str, str]] = []
        for key, hierarchy in found:
            group = hierarchy / parent
            _mkdir_p(group, "cgroup v1")
            parents.append((key, str(group)))
        swap = None
        memory_parent = dict(parents).get("memory")
        if memory_parent is not None:
            group = Path(memory_parent)
            flag = str(group / "memory.use_hierarchy")
            # Always 1 (and read-only) on kernels >= 5.x; best effort before.
            with contextlib.suppress(SyscallError):
                if _number(_read_at(None, flag, flag)) == 0:
                    _write_at(None, flag, "1", flag)
            if (group / "memory.memsw.limit_in_bytes").exists():
                swap = "memory.memsw.limit_in_bytes"
        kill = _KILL_FREEZER if any(key == "freezer" for key, _ in found) else _KILL_SIGNALS
        controllers = tuple(key for key, _ in found)
        return cls(1, str(root), parent, controllers, tuple(parents), kill, swap, meminfo)

    def describe(self) -> dict[str, object]:
        """What this host provides, for ``rustbox check``."""
        return {
            "version": self.version,
            "controllers": list(self.controllers),
            "paths": dict(self._parents),
            "kill": self._kill_mode,
            "swap_limit": self._swap_file,
        }

    def _handle(self, name: str, *, partial: bool) -> Cgroup | None:
        _check_component("cgroup name", name)
        return Cgroup._open(name, self.version, self._parents, self._kill_mode, partial=partial)

    def check_swap(self) -> None:
        """Strict: without a swap limit, the memory limit only holds if there is no swap."""
        if self._swap_file is not None or "memory" not in self.controllers:
            return
        swap_kb = _swap_total_kb(self._meminfo)
        if swap_kb == 0:
            return
        file = "memory.memsw.limit_in_bytes" if self.version == 1 else "memory.swap.max"
        hint = " (boot with swapaccount=1)" if self.version == 1 else ""
        found = "cannot read SwapTotal" if swap_kb is None else f"SwapTotal is {swap_kb} kB"
        raise HostUnsupported(
            [f"cgroup v{self.version}: {file} missing{hint} and {found} in {self._meminfo}"]
        )

    def create(self, name: str, limits: CgroupLimits) -> Cgroup:
        """Create the group in every hierarchy and apply ``limits``.

        A group of that name left over by a crashed run is killed and removed
        first. On any failure, whatever was created is removed again.
        """
        parents = self.open_parents()
        try:
            return parents.create(name, limits)
        finally:
            parents.close()

    @property
    def hierarchies(self) -> tuple[str, ...]:
        """The hierarchy of each parent, in order: "memory", "pids", ... or "unified"."""
        return tuple(key for key, _parent in self._parents)

    def home_procs_fds(self, proc_cgroup: str = "/proc/self/cgroup") -> list[int]:
        """``cgroup.procs`` of the caller's own group in each hierarchy, open for
        writing: where the spawner returns after joining a run's group."""
        lines = (_read_at(None, proc_cgroup, proc_cgroup) or "").splitlines()
        current: dict[str, str] = {}
        for line in lines:
            _id, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [_UNIFIED]:
                current[controller] = path
        depth = len(Path(self.parent).parts)
        targets: list[tuple[str, int | None, str]] = []
        for key, parent in self._parents:
            if key not in current:
                raise HostUnsupported([f"{proc_cgroup}: no {key} hierarchy listed"])
            root = Path(parent)
            for _ in range(depth):
                root = root.parent
            where = f"{root}{current[key].rstrip('/')}/cgroup.procs"
            targets.append((where, None, where))
        return _open_for_writing(targets)

    def open_parents(self) -> CgroupParents:
        """The parent directories held open, to create groups from anywhere.

        A sandbox proxy opens them before ``pivot_root`` and creates one group
        per run afterwards, when ``/sys/fs/cgroup`` is no longer in its view.
        """
        self.check_swap()
        fds: list[tuple[str, str, int]] = []
        try:
            tcp = False
            for key, parent in self._parents:
                try:
                    fds.append((key, parent, os.open(parent, _DIR_FLAGS)))
                except OSError as exc:
                    raise SyscallError("open", exc.errno or errno.EIO, parent) from exc
                if key == "memory":
                    tcp = os.path.exists(os.path.join(parent, "memory.kmem.tcp.limit_in_bytes"))
            return CgroupParents(self, tuple(fds), tcp)
        except BaseException:
            for _key, _parent, fd in fds:
                os.close(fd)
            raise

    def open(self, name: str) -> Cgroup | None:
        """A handle on an existing group, or None unless it exists in every hierarchy."""
        return self._handle(name, partial=False)

    def _listdirs(self) -> Iterator[str]:
        for _key, parent in self._parents:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(parent):
                    if entry.is_dir(follow_symlinks=False):
                        yield entry.name

    def exists(self, name: str) -> bool:
        """Whether any hierarchy has the group: a few stat calls, cheap on an event loop."""
        _check_component("cgroup name", name)
        return any(os.path.isdir(os.path.join(parent, name)) for _key, parent in self._parents)

    def children(self) -> list[str]:
        """Names of the groups under the parent, in any hierarchy (for sweeping)."""
        return sorted(set(self._listdirs()))

    def remove_stale(self, name: str, timeout: float = 5.0) -> bool:
        """Kill and remove a leftover group, even one a crash left half-created.

        Returns True if something was removed.
        """
        group = self._handle(name, partial=True)
        if group is None:
            return False
        try:
            group.remove(timeout)
        finally:
            group.close()
        return True


@attrs.define(eq=False)
class CgroupParents:
    """A :class:`CgroupTree`'s parent directories as fds: creates groups through them.

    Made by :meth:`CgroupTree.open_parents`. The fds are close-on-exec and keep
    working after the holder forks or pivots its root away from the cgroupfs.
    """

    tree: CgroupTree
    _fds: tuple[tuple[str, str, int], ...] = attrs.field(repr=False)  # (key, path, fd)
    _tcp_limit: bool = attrs.field(repr=False)  # v1 memory.kmem.tcp.limit_in_bytes exists
    _closed: bool = attrs.field(default=False, init=False)

    def create(self, name: str, limits: CgroupLimits) -> Cgroup:
        """Create the group in every hierarchy, then apply ``limits``; undone on failure."""
        _check_component("cgroup name", name)
        if self._closed:
            raise ValueError("cgroup parents are closed")
        made: list[int] = []
        dirs: list[_GroupDir] = []
        group: Cgroup | None = None
        try:
            for key, parent, parent_fd in self._fds:
                where = f"{parent}/{name}"
                try:
                    os.mkdir(name, 0o755, dir_fd=parent_fd)
                except FileExistsError:
                    # Left over by a crashed run: kill and remove it, then retry once.
                    self._remove_stale(name)
                    try:
                        os.mkdir(name, 0o755, dir_fd=parent_fd)
                    except OSError as exc:
                        raise SyscallError("mkdir", exc.errno or errno.EIO, where) from exc
                except OSError as exc:
                    raise SyscallError("mkdir", exc.errno or errno.EIO, where) from exc
                made.append(parent_fd)
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                except OSError as exc:
                    raise SyscallError("open", exc.errno or errno.EIO, where) from exc
                dirs.append(_GroupDir(key, where, fd, os.dup(parent_fd)))
            kill_mode = _usable_kill_mode(self.tree._kill_mode, dirs)
            group = Cgroup(name, self.tree.version, tuple(dirs), kill_mode)
            dirs = []
            self._apply(group, limits)
            return group
        except BaseException:
            for d in dirs:
                os.close(d.fd)
                os.close(d.parent_fd)
            if group is not None:
                try:
                    group.remove(timeout=1.0)
                except Exception:  # the original error matters more
                    group.close()
            else:
                for parent_fd in reversed(made):
                    with contextlib.suppress(OSError):
                        os.rmdir(name, dir_fd=parent_fd)
            raise

    def _remove_stale(self, name: str) -> None:
        group = Cgroup._open(
            name,
            self.tree.version,
            self.tree._parents,
            self.tree._kill_mode,
            partial=True,
            parent_fds=[fd for _key, _path, fd in self._fds],
        )
        if group is not None:
            try:
                group.remove()
            finally:
                group.close()

    def _apply(self, group: Cgroup, limits: CgroupLimits) -> None:
        tree = self.tree
        if tree.version == 2:
            d = group._dir(_UNIFIED)
            if "memory" in tree.controllers:
                d.write("memory.max", str(limits.memory))
                if tree._swap_file is not None:
                    d.write(tree._swap_file, "0")
                d.write("memory.oom.group", "1")  # an OOM kills the whole run, not one victim
            if "pids" in tree.controllers:
                d.write("pids.max", str(limits.pids))
            return
        if "memory" in tree.controllers:
            memory = group._dir("memory")
            # memsw must never be below the memory limit: set memory first.
            memory.write("memory.limit_in_bytes", str(limits.memory))
            if tree._swap_file is not None:
                memory.write(tree._swap_file, str(limits.memory))
            # v1 charges socket buffers only once this limit is set: without it, a
            # run's TCP buffers are host memory it does not pay for.
            if self._tcp_limit:
                memory.write("memory.kmem.tcp.limit_in_bytes", str(limits.memory))
        if "pids" in tree.controllers:
            group._dir("pids").write("pids.max", str(limits.pids))

    def close(self) -> None:
        """Close the parent fds (idempotent); groups made through them stay usable."""
        if self._closed:
            return
        self._closed = True
        for _key, _parent, fd in self._fds:
            os.close(fd)
