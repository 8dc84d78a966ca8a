"""Grading many submissions: each compiles once, its cases run concurrently."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import attrs

from rustbox._batch._layout import Entry, Problem
from rustbox._errors import InvalidInput
from rustbox._judge import JudgeReport
from rustbox._judge import Supervisor as _JudgeSupervisor


@attrs.frozen
class Graded:
    """One submission's outcome: a report, or why it could not be graded."""

    submission: str
    problem: str | None
    language: str | None
    report: JudgeReport | None
    error: str | None
    seconds: float  #: wall time the grading took, compile included

    @property
    def verdict(self) -> str | None:
        return self.report.verdict.value if self.report else None

    @property
    def key(self) -> str:
        return f"{self.submission}\0{self.problem}"

    def to_record(self) -> dict[str, Any]:
        """The JSONL line: the verdict, the per-case figures, and the compile step."""
        record: dict[str, Any] = {
            "submission": self.submission,
            "problem": self.problem,
            "language": self.language,
            "verdict": self.verdict,
            "error": self.error,
            "seconds": round(self.seconds, 4),
        }
        report = self.report
        if report is not None:
            record["verdict_provenance"] = report.verdict_provenance
            record["compile"] = (
                None
                if report.compile is None
                else {
                    "ok": report.compile.ok,
                    "cpu_time": report.compile.result.cpu_time,
                    "stderr": report.compile.stderr.decode(errors="replace")[-4000:],
                }
            )
            record["cases"] = [
                {
                    "name": case.name,
                    "verdict": case.verdict.value,
                    "status": case.status.value,
                    "cpu_time": case.cpu_time,
                    "wall_time": case.wall_time,
                    "memory_peak": case.memory_peak,
                }
                for case in report.cases
            ]
        return record


async def grade_one(sv: _JudgeSupervisor, entry: Entry, problems: Mapping[str, Problem]) -> Graded:
    """Judge one entry; bad input becomes ``error``, so the rest of a batch goes on."""
    started = time.monotonic()
    language = entry.submission.language if entry.submission else None
    if entry.error is not None or entry.submission is None or entry.problem is None:
        return Graded(
            entry.id, entry.problem, language, None, entry.error or "nothing to grade", 0.0
        )
    problem = problems.get(entry.problem)
    if problem is None:
        return Graded(
            entry.id, entry.problem, language, None, f"unknown problem {entry.problem!r}", 0.0
        )
    try:
        report = await sv.judge(
            entry.submission, problem.tests, checker=problem.checker, limits=problem.limits
        )
    except InvalidInput as exc:
        return Graded(entry.id, entry.problem, language, None, str(exc), time.monotonic() - started)
    return Graded(
        entry.id, entry.problem, report.language, report, None, time.monotonic() - started
    )


async def grade_all(
    sv: _JudgeSupervisor,
    entries: Sequence[Entry],
    problems: Mapping[str, Problem],
    on_result: Callable[[Graded], Awaitable[None] | None],
    *,
    concurrency: int | None = None,
) -> None:
    """Grade every entry, ``concurrency`` submissions at a time, reporting each as it ends."""
    limiter = anyio.CapacityLimiter(concurrency or sv.max_concurrency)

    async def one(entry: Entry) -> None:
        async with limiter:
            graded = await grade_one(sv, entry, problems)
        outcome = on_result(graded)
        if outcome is not None:
            await outcome

    async with anyio.create_task_group() as tg:
        for entry in entries:
            tg.start_soon(one, entry)


async def grade_iter(
    sv: _JudgeSupervisor,
    entries: Iterable[Entry],
    problems: Mapping[str, Problem],
    *,
    concurrency: int | None = None,
) -> AsyncIterator[Graded]:
    """Results as they are ready, in windows of ``concurrency`` submissions.

    Each window's task group closes before its results are yielded: a task
    group must never stay open across a ``yield`` of an async generator.
    """
    window = max(1, concurrency or sv.max_concurrency)
    pending = list(entries)
    for start in range(0, len(pending), window):
        done: list[Graded] = []
        await grade_all(sv, pending[start : start + window], problems, done.append)
        for graded in done:
            yield graded
