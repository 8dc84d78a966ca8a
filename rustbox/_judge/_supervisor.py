"""The public Supervisor: the core one, plus judging."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from rustbox._judge._checkers import Checker
from rustbox._judge._judge import JudgeReport, Submission, TestCase, judge
from rustbox._judge._languages import LanguageTable
from rustbox._limits import Limits
from rustbox._supervisor import Supervisor as _CoreSupervisor


@attrs.define(eq=False)
class Supervisor(_CoreSupervisor):
    """Runs untrusted programs in kernel-enforced sandboxes, and judges submissions.

    ::

        async with rustbox.Supervisor() as sv:
            result = await sv.run(["/usr/bin/python3", "x.py"], files={"x.py": b"print(1)"})
            report = await sv.judge(rustbox.Submission("cpp", src), tests=[...])
    """

    #: Languages the judge knows; toolchain directories they name are bound read-only.
    languages: LanguageTable = attrs.field(factory=LanguageTable)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        extra = tuple(b for b in self.languages.binds() if b not in self.readonly_binds)
        self.readonly_binds = (*self.readonly_binds, *extra)

    async def judge(
        self,
        submission: Submission,
        tests: Sequence[TestCase] | None = None,
        *,
        checker: str | Checker | None = None,
        stop_on_first_failure: bool = False,
        profile: str = "judge",
        limits: Limits | None = None,
    ) -> JudgeReport:
        """Compile once (in its own sandbox), run every case, check it, give the verdict.

        ``checker``: ``"tokens"`` (default), ``"exact"``, ``"float:1e-6"`` or a
        :class:`CustomChecker`. ``profile="executor"`` relaxes the limits for
        agents and notebooks; ``limits`` replaces the run limits of every case
        that has none of its own.
        """
        return await judge(
            self,
            submission,
            tests,
            languages=self.languages,
            checker=checker,
            stop_on_first_failure=stop_on_first_failure,
            profile=profile,
            limits=limits,
        )
