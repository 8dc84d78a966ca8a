"""Resource limits of one run, validated when they are built."""

from __future__ import annotations

import math
import re
import resource
from typing import Any

import attrs

from rustbox._errors import InvalidInput

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
    "GIB": 1 << 30,
    "T": 1 << 40,
    "TB": 1 << 40,
    "TIB": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

MiB = 1 << 20
#: Beyond this the kernel's limit files and rlimits overflow (they are signed 64-bit).
MAX_SIZE = 1 << 62
#: pids.max and RLIMIT_NPROC beyond the kernel's PID_MAX_LIMIT are refused.
PID_MAX_LIMIT = 1 << 22
#: RLIMIT_NOFILE cannot exceed fs.nr_open (1048576 unless an operator raised it).
NR_OPEN_DEFAULT = 1 << 20


def parse_size(value: object, field: str = "size") -> int:
    """Parse ``256M``, ``1.5G``, ``4096`` or an int into bytes.

    Units are binary (``M`` is MiB), as isolate and the Rust rustbox read them.
    """
    if isinstance(value, bool):
        raise InvalidInput(field, f"expected a size such as '256M', got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(field, f"expected a finite size, got {value!r}")
        size = int(value)
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = match.group(2).upper() if match else ""
        if match is None or unit not in _UNITS:
            raise InvalidInput(field, f"cannot parse size {value!r} (use e.g. '256M', '1G')")
        number = match.group(1)
        if "." in number:
            scaled = float(number) * _UNITS[unit]
            if not math.isfinite(scaled):
                raise InvalidInput(field, f"size {value!r} is too large")
            size = int(scaled)
        else:
            size = int(number) * _UNITS[unit]
    else:
        raise InvalidInput(field, f"expected a size such as '256M', got {type(value).__name__}")
    if size <= 0:
        raise InvalidInput(field, f"must be positive, got {value!r}")
    if size > MAX_SIZE:
        raise InvalidInput(field, f"size {value!r} is too large (at most {MAX_SIZE} bytes)")
    return size


def parse_seconds(value: object, field: str) -> float:
    """Parse a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(field, f"expected seconds as a number, got {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidInput(field, f"cannot parse seconds {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(field, f"must be a positive number of seconds, got {value!r}")
    return seconds


def parse_count(value: object, field: str, maximum: int = 1 << 31) -> int:
    """Parse a positive whole number (an int or a string of digits) up to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(field, f"expected a whole number, got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise InvalidInput(field, f"expected a whole number, got {value!r}") from None
    if count <= 0:
        raise InvalidInput(field, f"must be positive, got {value!r}")
    if count > maximum:
        raise InvalidInput(field, f"{count} is above the kernel's maximum of {maximum}")
    return count


# One named converter per field, so errors name the field and mypy's attrs
# plugin sees the accepted input types.
def _memory(v: int | str) -> int:
    return parse_size(v, "memory")


def _cpu_time(v: float | str) -> float:
    return parse_seconds(v, "cpu_time")


def _wall_time(v: float | str) -> float:
    return parse_seconds(v, "wall_time")


def _processes(v: int | str) -> int:
    return parse_count(v, "processes", PID_MAX_LIMIT)


def _stdout_max(v: int | str) -> int:
    return parse_size(v, "stdout_max")


def _stderr_max(v: int | str) -> int:
    return parse_size(v, "stderr_max")


def _file_size(v: int | str) -> int:
    return parse_size(v, "file_size")


def _open_files(v: int | str) -> int:
    return parse_count(v, "open_files", NR_OPEN_DEFAULT)


def _stack(v: int | str) -> int:
    return parse_size(v, "stack")


def _address_space(v: int | str | None) -> int | None:
    return None if v is None else parse_size(v, "address_space")


def _box_size(v: int | str) -> int:
    return parse_size(v, "box_size")


def _box_inodes(v: int | str) -> int:
    return parse_count(v, "box_inodes")


def _tmp_size(v: int | str) -> int:
    return parse_size(v, "tmp_size")


def _nproc(v: int | str | None) -> int | None:
    return None if v is None else parse_count(v, "nproc", PID_MAX_LIMIT)


#: Smallest RLIMIT_AS and RLIMIT_NOFILE a run may ask for (see Limits).
MIN_ADDRESS_SPACE = 64 * MiB
MIN_OPEN_FILES = 16


@attrs.frozen(kw_only=True)
class Limits:
    """What one run may consume.

    The kernel enforces every figure (cgroup, rlimit or tmpfs size) except the
    output caps, which the supervisor enforces as it reads the pipes.

    Sizes accept ints (bytes) or strings such as ``"256M"``; times are seconds.
    ``cpu_time`` is enforced (the run is killed), not throttled.
    """

    memory: int = attrs.field(default=256 * MiB, converter=_memory)
    cpu_time: float = attrs.field(default=2.0, converter=_cpu_time)
    wall_time: float = attrs.field(default=5.0, converter=_wall_time)
    processes: int = attrs.field(default=16, converter=_processes)
    stdout_max: int = attrs.field(default=64 * MiB, converter=_stdout_max)
    stderr_max: int = attrs.field(default=64 * MiB, converter=_stderr_max)
    file_size: int = attrs.field(default=16 * MiB, converter=_file_size)
    open_files: int = attrs.field(default=64, converter=_open_files)
    stack: int = attrs.field(default=64 * MiB, converter=_stack)
    address_space: int | None = attrs.field(default=None, converter=_address_space)
    box_size: int = attrs.field(default=64 * MiB, converter=_box_size)
    box_inodes: int = attrs.field(default=4096, converter=_box_inodes)
    tmp_size: int = attrs.field(default=16 * MiB, converter=_tmp_size)
    #: RLIMIT_NPROC. None: ``processes + 1``, one above pids.max, so the cgroup
    #: refuses a fork first and records it (an exact PLE). The judge profile sets
    #: it to ``processes``, the value the Rust rustbox's clients read; a refusal
    #: by the rlimit leaves no record, and PLE then rests on pids.peak.
    nproc: int | None = attrs.field(default=None, converter=_nproc)

    def __attrs_post_init__(self) -> None:
        if self.wall_time < self.cpu_time:
            raise InvalidInput(
                "wall_time",
                f"{self.wall_time:g}s is below cpu_time {self.cpu_time:g}s; "
                "a run could never use its cpu allowance",
            )
        if self.address_space is not None and self.address_space < self.memory:
            raise InvalidInput(
                "address_space",
                f"{self.address_space} bytes is below memory {self.memory} bytes",
            )
        # The spawner carries a run's rlimits itself (its children inherit them),
        # so they must leave room for it: its heap, and the fds it passes on.
        if self.address_space is not None and self.address_space < MIN_ADDRESS_SPACE:
            raise InvalidInput(
                "address_space",
                f"{self.address_space} bytes is below the minimum {MIN_ADDRESS_SPACE} "
                "(64 MiB: the sandbox's spawner must fit; use memory for a tight limit)",
            )
        if self.open_files < MIN_OPEN_FILES:
            raise InvalidInput(
                "open_files",
                f"{self.open_files} is below the minimum {MIN_OPEN_FILES} "
                "(the sandbox's spawner passes the run's descriptors under this limit)",
            )

    @property
    def nproc_rlimit(self) -> int:
        return self.processes + 1 if self.nproc is None else self.nproc

    @property
    def cpu_rlimit(self) -> tuple[int, int]:
        """RLIMIT_CPU (soft, hard): a backstop behind the proxy's polling, 2 s
        above the limit (one for rounding, one for the spawner's own cpu time,
        which counts against it too)."""
        soft = math.ceil(self.cpu_time) + 2
        return soft, soft + 1

    def rlimits(self) -> tuple[tuple[int, int, int], ...]:
        """Every rlimit a run's program starts with, as (resource, soft, hard)."""
        values = [
            (resource.RLIMIT_CPU, *self.cpu_rlimit),
            (resource.RLIMIT_FSIZE, self.file_size, self.file_size),
            (resource.RLIMIT_NOFILE, self.open_files, self.open_files),
            (resource.RLIMIT_NPROC, self.nproc_rlimit, self.nproc_rlimit),
            (resource.RLIMIT_STACK, self.stack, self.stack),
            (resource.RLIMIT_CORE, 0, 0),
            (resource.RLIMIT_MEMLOCK, 0, 0),
            (resource.RLIMIT_MSGQUEUE, 0, 0),
        ]
        if self.address_space is not None:
            values.append((resource.RLIMIT_AS, self.address_space, self.address_space))
        return tuple(values)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)
