"""What crosses the process boundaries of one run.

The supervisor pickles a :class:`RunSpec` into a sealed memfd; the proxy reads
it after fork. The proxy answers with a :class:`ProxyReport`, also through a
memfd, so neither message is bounded by a socket buffer. Both ends are
rustbox's own trusted code; the untrusted payload never sees either.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import attrs

from rustbox._host import CgroupStats, CgroupTree
from rustbox._limits import Limits

#: Host paths bound read-only (nosuid, nodev) into every sandbox.
DEFAULT_READONLY_BINDS: tuple[str, ...] = ("/usr", "/bin", "/lib", "/lib64", "/sbin")
#: Individual host files from /etc a dynamic toolchain needs; never secrets.
DEFAULT_ETC_BINDS: tuple[str, ...] = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
HOSTNAME = "rustbox-sandbox"


@attrs.frozen
class FileSpec:
    """A file placed into ``/box`` before the run."""

    path: str  #: relative to /box, already validated
    data: bytes
    mode: int


@attrs.frozen
class BaseTree:
    """What every sandbox of one supervisor shares; warm proxies mount it ahead of time."""

    root_dir: str  #: host directory the new root tmpfs is mounted on (in the run's mount ns)
    readonly_binds: tuple[str, ...]
    seccomp_program: bytes  #: installed by each template before its run arrives


@attrs.frozen
class RunSpec:
    run_id: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    files: tuple[FileSpec, ...]
    collect: tuple[str, ...]
    limits: Limits
    uid: int
    gid: int
    cgroups: CgroupTree
    cgroup_name: str


@attrs.frozen
class Order:
    """What the template needs of the run: handed over with the run's stdio fds."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    limits: Limits
    uid: int
    gid: int
    cgroup_version: int
    cgroup_name: str

    @classmethod
    def of(cls, spec: RunSpec) -> Order:
        return cls(
            argv=spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            limits=spec.limits,
            uid=spec.uid,
            gid=spec.gid,
            cgroup_version=spec.cgroups.version,
            cgroup_name=spec.cgroup_name,
        )


@attrs.frozen
class ProxyReport:
    """The proxy's account of one run; the supervisor derives the verdict from it."""

    error_stage: str | None  #: set when the sandbox could not be built
    error: str | None
    wait_status: int | None
    rusage_user: float
    rusage_sys: float
    rusage_maxrss: int
    stats: CgroupStats | None
    kill_reason: str | None  #: "cpu", "wall", "output" when the proxy killed the payload
    actions: tuple[tuple[float, str, str], ...]  #: (seconds since exec, action, reason)
    setup: tuple[tuple[str, float], ...]
    wall_time: float
    files: tuple[tuple[str, bytes], ...]
    missing_files: tuple[str, ...]
    controls: tuple[str, ...]

    @classmethod
    def failed(cls, stage: str, detail: str) -> ProxyReport:
        """The report of a run whose sandbox could not be built or was lost."""
        return cls(
            error_stage=stage,
            error=detail,
            wait_status=None,
            rusage_user=0.0,
            rusage_sys=0.0,
            rusage_maxrss=0,
            stats=None,
            kill_reason=None,
            actions=(),
            setup=(),
            wall_time=0.0,
            files=(),
            missing_files=(),
            controls=(),
        )


def to_memfd(obj: Any, name: str) -> int:
    """Pickle ``obj`` into a sealed-size memfd positioned at 0; returns the fd."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def from_memfd(fd: int) -> Any:
    """Read back what :func:`to_memfd` wrote (the fd is not closed)."""
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return pickle.loads(b"".join(chunks))
