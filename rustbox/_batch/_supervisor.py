"""The public Supervisor: runs, judging, and grading batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

import attrs

from rustbox._batch._grade import Graded, grade_iter
from rustbox._batch._layout import Entry, Problem
from rustbox._judge import Supervisor as _JudgeSupervisor


@attrs.define(eq=False)
class Supervisor(_JudgeSupervisor):
    """Runs untrusted programs in kernel-enforced sandboxes; judges and grades them.

    ::

        async with rustbox.Supervisor() as sv:
            result = await sv.run(["/usr/bin/python3", "x.py"], files={"x.py": b"print(1)"})
            report = await sv.judge(rustbox.Submission("cpp", src), tests=[...])
            async for graded in sv.grade(entries, problems):
                ...
    """

    def grade(
        self,
        submissions: Iterable[Entry],
        problems: Mapping[str, Problem],
        *,
        concurrency: int | None = None,
    ) -> AsyncIterator[Graded]:
        """Grade many submissions; yields each :class:`Graded` as its window finishes.

        Each submission compiles once and its cases run concurrently; a
        submission that cannot be graded (bad file, unknown language) yields a
        ``Graded`` with ``error`` set and the rest go on.
        """
        return grade_iter(self, submissions, problems, concurrency=concurrency)
