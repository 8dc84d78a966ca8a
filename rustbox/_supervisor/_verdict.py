"""From the proxy's report and the supervisor's own observations to a verdict."""

from __future__ import annotations

import os
import signal

from rustbox._host import CgroupStats
from rustbox._limits import Limits
from rustbox._result import Action, CgroupFigures, Evidence, Result, Status, StreamReport
from rustbox._sandbox._spec import ProxyReport


def _exit_and_signal(wait_status: int | None) -> tuple[int | None, int | None]:
    if wait_status is None:
        return None, None
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status), None
    if os.WIFSIGNALED(wait_status):
        return None, os.WTERMSIG(wait_status)
    return None, None


def _process_limit_reached(stats: CgroupStats, processes: int | None) -> bool:
    """The kernel refused a fork (pids.events), or the run reached its limit (pids.peak:
    RLIMIT_NPROC equals pids.max and is checked first, so its refusals leave no event)."""
    if stats.pids_limit_hits > 0:
        return True
    return processes is not None and stats.pids_peak is not None and stats.pids_peak >= processes


def classify(
    report: ProxyReport,
    exit_code: int | None,
    sig: int | None,
    output_over_cap: bool = False,
    memory_limit: int | None = None,
    processes: int | None = None,
) -> tuple[Status, str | None]:
    """The verdict and, for TLE, which clock ran out.

    Kernel evidence comes first (an OOM kill is MLE whatever happened next),
    then the kills rustbox performed, then the payload's own exit.
    """
    if report.error is not None:
        return Status.IE, None
    stats = report.stats
    if stats is not None and stats.oom_kills > 0:
        return Status.MLE, None
    if (
        sig == signal.SIGKILL
        and report.kill_reason is None
        and stats is not None
        and memory_limit is not None
        and (stats.memory_peak or 0) >= memory_limit
    ):
        return Status.MLE, None  # killed at the limit though the OOM counter missed it
    if report.kill_reason == "output" or output_over_cap:
        return Status.OLE, None  # over the cap, whether or not the kill came in time
    if report.kill_reason == "cpu" or sig == signal.SIGXCPU:
        return Status.TLE, "cpu"
    if report.kill_reason == "wall":
        return Status.TLE, "wall"
    if sig == signal.SIGXFSZ:
        return Status.FSE, None
    failed = sig is not None or exit_code != 0
    if failed and stats is not None and _process_limit_reached(stats, processes):
        return Status.PLE, None
    if report.kill_reason is not None:
        return Status.IE, None  # killed for a reason that is no verdict (supervisor gone)
    if sig is not None:
        return Status.SIG, None
    if exit_code != 0:
        return Status.RE, None
    return Status.OK, None


def build_result(
    report: ProxyReport,
    *,
    limits: Limits,
    stdout: bytes,
    stderr: bytes,
    stdout_report: StreamReport,
    stderr_report: StreamReport,
    supervisor_actions: list[Action],
    cgroup_version: int,
    uid: int,
    mode: str,
    slot_setup: tuple[tuple[str, float], ...] = (),
    slot_controls: tuple[str, ...] = (),
) -> Result:
    """The verdict and its evidence; a run that reached its program also gets
    the set-up stages and controls of the slot that served it."""
    exit_code, sig = _exit_and_signal(report.wait_status)
    over_cap = stdout_report.truncated or stderr_report.truncated
    status, tle = classify(report, exit_code, sig, over_cap, limits.memory, limits.processes)
    stats = report.stats
    figures = None
    if stats is not None:
        figures = CgroupFigures(
            version=cgroup_version,
            memory_limit=limits.memory,
            memory_peak=stats.memory_peak,
            memory_limit_hits=stats.memory_limit_hits,
            oom_kills=stats.oom_kills,
            cpu_usage=stats.cpu_usage_ns / 1e9,
            pids_limit=limits.processes,
            pids_limit_hits=stats.pids_limit_hits,
            pids_peak=stats.pids_peak,
        )
    actions = [Action(at, "proxy", action, reason) for at, action, reason in report.actions]
    actions += supervisor_actions
    error = None
    if report.error is not None:
        error = f"{report.error_stage}: {report.error}"
    if report.missing_files:
        missing = ", ".join(report.missing_files)
        actions.append(
            Action(report.wall_time, "proxy", "collect", f"not regular files or absent: {missing}")
        )
    evidence = Evidence(
        mode=mode,
        wait_status=report.wait_status,
        exit_code=exit_code,
        signal=sig,
        cgroup=figures,
        rusage_user=report.rusage_user,
        rusage_sys=report.rusage_sys,
        rusage_maxrss=report.rusage_maxrss,
        wall_time=report.wall_time,
        actions=tuple(sorted(actions, key=lambda a: a.at)),
        stdout=stdout_report,
        stderr=stderr_report,
        setup=report.setup if report.error_stage else slot_setup + report.setup,
        controls=report.controls if report.error_stage else slot_controls + report.controls,
        uid=uid,
        error=error,
    )
    return Result(
        status=status,
        exit_code=exit_code,
        signal=sig,
        stdout=stdout,
        stderr=stderr,
        cpu_time=(stats.cpu_usage_ns / 1e9) if stats else 0.0,
        wall_time=report.wall_time,
        memory_peak=(stats.memory_peak or 0) if stats else 0,
        tle=tle,
        evidence=evidence,
        files=dict(report.files),
    )
