"""Verdicts and the evidence behind them: frozen values that round-trip through JSON."""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs


class Status(enum.StrEnum):
    """The verdict of one run."""

    OK = "OK"  #: exited with status 0
    RE = "RE"  #: exited with a non-zero status
    SIG = "SIG"  #: killed by a signal no limit explains
    TLE = "TLE"  #: cpu or wall time exceeded (``Result.tle`` says which)
    MLE = "MLE"  #: the memory limit was hit (OOM kill)
    OLE = "OLE"  #: stdout or stderr went over its cap
    FSE = "FSE"  #: the file-size limit was hit (SIGXFSZ)
    PLE = "PLE"  #: the process limit refused a fork and the run failed
    IE = "IE"  #: the sandbox itself failed


@attrs.frozen
class Action:
    """Something the proxy or the supervisor did to a run, and why."""

    at: float  #: seconds since the payload started (supervisor actions: since the run was sent)
    actor: str  #: "proxy" or "supervisor"
    action: str  #: e.g. "SIGKILL all"
    reason: str  #: e.g. "cpu_time 2.011s > limit 2s"


@attrs.frozen
class StreamReport:
    """How much of one output stream was kept."""

    bytes: int  #: bytes captured
    cap: int
    truncated: bool
    complete: bool  #: read to end-of-file (not cut by a kill)


@attrs.frozen
class CgroupFigures:
    version: int
    memory_limit: int
    memory_peak: int | None
    memory_limit_hits: int
    oom_kills: int
    cpu_usage: float  #: seconds
    pids_limit: int
    pids_limit_hits: int
    pids_peak: int | None


@attrs.frozen
class Evidence:
    """Everything a verdict rests on, for audits and appeals."""

    mode: str  #: "strict" or "permissive"
    wait_status: int | None
    exit_code: int | None
    signal: int | None
    cgroup: CgroupFigures | None
    rusage_user: float
    rusage_sys: float
    rusage_maxrss: int  #: bytes (the kernel's ru_maxrss of the payload tree)
    wall_time: float
    actions: tuple[Action, ...]
    stdout: StreamReport
    stderr: StreamReport
    setup: tuple[tuple[str, float], ...]  #: (stage, milliseconds) in order
    controls: tuple[str, ...]  #: every control that was applied
    uid: int
    error: str | None = None  #: what failed, for IE

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        values = dict(data)
        if values.get("cgroup") is not None:
            values["cgroup"] = CgroupFigures(**values["cgroup"])
        values["actions"] = tuple(Action(**a) for a in values.get("actions", ()))
        values["stdout"] = StreamReport(**values["stdout"])
        values["stderr"] = StreamReport(**values["stderr"])
        values["setup"] = tuple((str(s), float(ms)) for s, ms in values.get("setup", ()))
        values["controls"] = tuple(values.get("controls", ()))
        return cls(**values)


def _bytes_to_json(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"text": data.decode("utf-8", "replace"), "b64": base64.b64encode(data).decode()}


@attrs.frozen
class Result:
    """The outcome of one run: verdict, figures, output and evidence.

    ``stdout``/``stderr`` are bytes; in JSON they are text, plus a lossless
    ``*_b64`` twin when the bytes are not valid UTF-8.
    """

    status: Status
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    cpu_time: float  #: seconds of cpu used by the payload tree (cgroup figure)
    wall_time: float  #: seconds from exec to the end of the run
    memory_peak: int  #: bytes, peak of the run's memory cgroup
    tle: str | None  #: "cpu" or "wall" when status is TLE
    evidence: Evidence
    files: Mapping[str, bytes] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "cpu_time": self.cpu_time,
            "wall_time": self.wall_time,
            "memory_peak": self.memory_peak,
            "tle": self.tle,
        }
        for name in ("stdout", "stderr"):
            encoded = _bytes_to_json(getattr(self, name))
            out[name] = encoded["text"]
            if "b64" in encoded:
                out[f"{name}_b64"] = encoded["b64"]
        out["files"] = {
            path: base64.b64encode(data).decode() for path, data in sorted(self.files.items())
        }
        out["evidence"] = self.evidence.to_dict()
        return out

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        def stream(name: str) -> bytes:
            if f"{name}_b64" in data:
                return base64.b64decode(data[f"{name}_b64"])
            return str(data[name]).encode("utf-8")

        return cls(
            status=Status(data["status"]),
            exit_code=data["exit_code"],
            signal=data["signal"],
            stdout=stream("stdout"),
            stderr=stream("stderr"),
            cpu_time=float(data["cpu_time"]),
            wall_time=float(data["wall_time"]),
            memory_peak=int(data["memory_peak"]),
            tle=data.get("tle"),
            evidence=Evidence.from_dict(data["evidence"]),
            files={k: base64.b64decode(v) for k, v in data.get("files", {}).items()},
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Result:
        return cls.from_dict(json.loads(text))
