"""What crosses the process boundaries of a slot and its runs.

The supervisor sends a :class:`RunSpec` to a slot's proxy; the proxy answers
with a :class:`ProxyReport`. Both travel pickled in the datagram itself when
small, or in a memfd when not (files to place or collect can be large), so
neither is bounded by a socket buffer. Both ends are rustbox's own trusted
code; the untrusted payload never sees either.
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
#: Messages at most this large travel inline; larger ones in a memfd.
INLINE_MAX = 32 << 10
#: A slot's rlimits, (resource, soft, hard) as ``Limits.rlimits()`` gives them.
Rlimits = tuple[tuple[int, int, int], ...]


@attrs.frozen
class FileSpec:
    """A file placed into ``/box`` before the run."""

    path: str  #: relative to /box, already validated
    data: bytes
    mode: int


@attrs.frozen
class BaseTree:
    """What every slot of one supervisor shares."""

    root_dir: str  #: host directory the new root tmpfs is mounted on (in the slot's mount ns)
    readonly_binds: tuple[str, ...]
    seccomp_program: bytes  #: installed by each payload last before exec
    cgroups: CgroupTree


def cgroup_name(uid: int) -> str:
    """A run's cgroup is named after its slot's uid: a uid's lock owns the name,
    which is how a sweep tells a crashed supervisor's leftovers from live groups."""
    return f"u{uid}"


@attrs.frozen
class RunSpec:
    run_id: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    files: tuple[FileSpec, ...]
    collect: tuple[str, ...]
    limits: Limits
    uid: int  #: the slot's uid; the proxy refuses a run meant for another
    gid: int


@attrs.frozen
class Captured:
    """One output stream as the proxy captured it."""

    data: bytes  #: at most the cap
    seen: int  #: bytes the program wrote (more than ``data`` when over the cap)
    eof: bool  #: read to end of file


@attrs.frozen
class SpawnOrder:
    """What the spawner needs of a run (the proxy sends it with the run's stdio)."""

    run_id: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    limits: Limits
    uid: int
    gid: int

    @classmethod
    def of(cls, spec: RunSpec) -> SpawnOrder:
        return cls(spec.run_id, spec.argv, spec.env, spec.cwd, spec.limits, spec.uid, spec.gid)


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
    stdout: Captured = attrs.field(factory=lambda: Captured(b"", 0, False))
    stderr: Captured = attrs.field(factory=lambda: Captured(b"", 0, False))

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


def pack(header: tuple[object, ...], obj: Any) -> tuple[bytes, list[int]]:
    """A datagram carrying ``header`` and ``obj``: inline, or in a memfd (the fd
    returned is the caller's to close once sent)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) <= INLINE_MAX:
        return pickle.dumps((*header, data), protocol=pickle.HIGHEST_PROTOCOL), []
    fd = os.memfd_create("rustbox-message", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return pickle.dumps((*header, None), protocol=pickle.HIGHEST_PROTOCOL), [fd]


def unpack(payload: bytes | None, fds: list[int]) -> Any:
    """The object :func:`pack` sent: ``payload`` is the header's last item; a memfd
    in ``fds`` is read and closed."""
    if payload is not None:
        return pickle.loads(payload)
    fd = fds.pop(0)
    try:
        size = os.fstat(fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    return pickle.loads(b"".join(chunks))
