"""``rustbox batch``: grade a folder of submissions into a JSONL file, resumably.

Each result is one JSON line, written and fsync'ed as soon as it is ready, so a
crash or Ctrl-C loses only runs in flight; ``--resume`` skips every
(submission, problem) already in the file.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any, TextIO

import anyio
import attrs
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rustbox._batch._grade import Graded, grade_all
from rustbox._batch._layout import load_entries, load_problems
from rustbox._batch._supervisor import Supervisor
from rustbox._errors import InvalidInput


@attrs.frozen
class BatchOptions:
    submissions: str
    problems: str
    out: str
    concurrency: int | None = None
    resume: bool = False
    json: bool = False
    backend: str = "asyncio"


def read_records(path: str) -> Iterator[dict[str, Any]]:
    """The records of a results file; a torn last line (a crash mid-write) is skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    return  # the write that a crash cut short
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    yield record
    except FileNotFoundError:
        return


def _drop_torn_tail(path: str) -> None:
    """Cut a last line a crash left half-written, so appends start on a fresh line."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        return


def _key(record: dict[str, Any]) -> str:
    return f"{record.get('submission')}\0{record.get('problem')}"


class _Sink:
    """Appends results to the JSONL file and keeps the counts the display shows."""

    def __init__(self, out: TextIO, progress: Progress | None, task: Any) -> None:
        self.out = out
        self.progress = progress
        self.task = task
        self.counts: Counter[str] = Counter()

    def __call__(self, graded: Graded) -> None:
        self.out.write(json.dumps(graded.to_record()) + "\n")
        self.out.flush()
        os.fsync(self.out.fileno())
        self.counts[graded.verdict or "error"] += 1
        if self.progress is not None:
            counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            self.progress.update(self.task, advance=1, counts=counts)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per problem: submissions, AC count, verdicts, mean and max case cpu time."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_problem[str(record.get("problem"))].append(record)
    problems = {}
    for problem, items in sorted(by_problem.items()):
        times = [c["cpu_time"] for r in items for c in r.get("cases") or []]
        verdicts = Counter(r.get("verdict") or "error" for r in items)
        problems[problem] = {
            "submissions": len(items),
            "accepted": verdicts.get("AC", 0),
            "verdicts": dict(sorted(verdicts.items())),
            "mean_cpu_time": round(statistics.fmean(times), 4) if times else None,
            "max_cpu_time": round(max(times), 4) if times else None,
        }
    total = Counter(r.get("verdict") or "error" for r in records)
    return {"graded": len(records), "verdicts": dict(sorted(total.items())), "problems": problems}


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['graded']} submissions graded")
    for column in ("problem", "submissions", "AC", "verdicts", "mean cpu s", "max cpu s"):
        table.add_column(column, justify="left" if column in ("problem", "verdicts") else "right")
    for problem, row in summary["problems"].items():
        verdicts = " ".join(f"{k}={v}" for k, v in row["verdicts"].items())
        mean = "-" if row["mean_cpu_time"] is None else f"{row['mean_cpu_time']:.3f}"
        peak = "-" if row["max_cpu_time"] is None else f"{row['max_cpu_time']:.3f}"
        table.add_row(problem, str(row["submissions"]), str(row["accepted"]), verdicts, mean, peak)
    return table


def run_batch(options: BatchOptions) -> dict[str, Any]:
    """Grade, append to ``out``, and return the summary of everything in ``out``."""
    problems = load_problems(options.problems)
    entries = load_entries(options.submissions, problems)
    if not entries:
        raise InvalidInput("submissions", f"{options.submissions}: no submission folders")
    done = {_key(r) for r in read_records(options.out)}
    if done and not options.resume:
        raise InvalidInput(
            "--out", f"{options.out} already holds results: add --resume, or choose a new file"
        )
    todo = [e for e in entries if f"{e.id}\0{e.problem}" not in done]
    _drop_torn_tail(options.out)
    console = Console(stderr=True)
    started = time.monotonic()

    async def main() -> None:
        with open(options.out, "a", encoding="utf-8") as out:
            progress = (
                None
                if options.json
                else Progress(
                    TextColumn("grading"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[counts]}"),
                    console=console,
                )
            )
            task = None
            if progress is not None:
                progress.start()
                task = progress.add_task("grading", total=len(todo), counts="", rate="")
            sink = _Sink(out, progress, task)

            def record(graded: Graded) -> None:
                sink(graded)
                if progress is not None and task is not None:
                    rate = sum(sink.counts.values()) / max(time.monotonic() - started, 1e-9)
                    progress.update(task, rate=f"{rate:.1f}/s")

            try:
                sv = (
                    Supervisor()
                    if options.concurrency is None
                    else Supervisor(max_concurrency=options.concurrency)
                )
                async with sv:
                    await grade_all(sv, todo, problems, record, concurrency=options.concurrency)
            finally:
                if progress is not None:
                    progress.stop()

    anyio.run(main, backend=options.backend)
    summary = summarize(list(read_records(options.out)))
    summary["skipped_as_done"] = len(entries) - len(todo)
    summary["seconds"] = round(time.monotonic() - started, 3)
    if not options.json:
        console.print(_table(summary))
    return summary
