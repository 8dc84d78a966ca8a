"""Judging: compile once, run every test case, check the output, give a verdict."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import attrs

from rustbox._errors import InvalidInput
from rustbox._judge._checkers import (
    Checked,
    Checker,
    CustomChecker,
    parse_checker,
)
from rustbox._judge._languages import LanguageTable, executor_profile
from rustbox._limits import Limits
from rustbox._result import Result, Status
from rustbox._supervisor import File
from rustbox._supervisor import Supervisor as _CoreSupervisor

MAX_CODE = 64 * 1024


class Verdict(enum.StrEnum):
    AC = "AC"  #: accepted
    WA = "WA"  #: wrong answer (the checker said so)
    CE = "CE"  #: compilation error
    RE = "RE"  #: runtime error (non-zero exit; also a refused fork, PLE)
    TLE = "TLE"
    MLE = "MLE"
    OLE = "OLE"  #: output over its cap, or a file over the size limit (FSE)
    SIG = "SIG"
    IE = "IE"  #: the judge itself failed (sandbox, or a crashing custom checker)


_FROM_STATUS = {
    Status.OK: Verdict.AC,
    Status.RE: Verdict.RE,
    Status.SIG: Verdict.SIG,
    Status.TLE: Verdict.TLE,
    Status.MLE: Verdict.MLE,
    Status.OLE: Verdict.OLE,
    Status.FSE: Verdict.OLE,
    Status.PLE: Verdict.RE,
    Status.IE: Verdict.IE,
}


def _text(value: bytes | str, field: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidInput(field, f"expected bytes or str, got {type(value).__name__}")


@attrs.frozen
class Submission:
    """Source code in a language the judge knows (by name or alias)."""

    language: str
    code: str

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise InvalidInput("code", f"expected source text, got {type(self.code).__name__}")
        if not self.code.strip():
            raise InvalidInput("code", "is empty")
        size = len(self.code.encode())
        if size > MAX_CODE:
            raise InvalidInput("code", f"{size} bytes is over the {MAX_CODE}-byte limit")


def _stdin(value: bytes | str) -> bytes:
    return _text(value, "stdin")


def _expected(value: bytes | str | None) -> bytes | None:
    return None if value is None else _text(value, "expected")


@attrs.frozen
class TestCase:
    """One test: stdin, the expected output (None: any output is accepted), limits."""

    stdin: bytes = attrs.field(default=b"", converter=_stdin)
    expected: bytes | None = attrs.field(default=None, converter=_expected)
    limits: Limits | None = None
    name: str = ""


class _RunView:
    """The figures of the run a step wraps, and its JSON in the Rust rustbox's names."""

    result: Result

    @property
    def status(self) -> Status:
        return self.result.status

    @property
    def cpu_time(self) -> float:
        return self.result.cpu_time

    @property
    def wall_time(self) -> float:
        return self.result.wall_time

    @property
    def memory_peak(self) -> int:
        return self.result.memory_peak

    @property
    def stdout(self) -> bytes:
        return self.result.stdout

    @property
    def stderr(self) -> bytes:
        return self.result.stderr

    def _run_dict(self, **head: Any) -> dict[str, Any]:
        run = self.result.to_dict()
        evidence = run.pop("evidence")
        return {**head, **run, "evidence_bundle": evidence}


@attrs.frozen
class CaseResult(_RunView):
    index: int
    name: str
    verdict: Verdict
    result: Result
    checker: str | None  #: the checker's message, when one ran

    def to_dict(self) -> dict[str, Any]:
        out = self._run_dict(index=self.index, name=self.name, verdict=self.verdict.value)
        out["checker"] = self.checker
        return out


@attrs.frozen
class CompileResult(_RunView):
    """The compile step's own run: its figures never count against the program."""

    ok: bool
    result: Result

    def to_dict(self) -> dict[str, Any]:
        return self._run_dict(ok=self.ok)


@attrs.frozen
class JudgeReport:
    """The verdict of a submission, each case's figures, and how the verdict came about."""

    language: str
    verdict: Verdict
    verdict_provenance: str
    compile: CompileResult | None
    cases: tuple[CaseResult, ...]

    @property
    def deciding(self) -> CaseResult | None:
        """The case the verdict comes from: the first one not accepted, else the last."""
        for case in self.cases:
            if case.verdict is not Verdict.AC:
                return case
        return self.cases[-1] if self.cases else None

    def to_dict(self) -> dict[str, Any]:
        """Rust rustbox field names where they overlap, plus the cases and the compile step."""
        out: dict[str, Any] = {
            "language": self.language,
            "verdict": self.verdict.value,
            "verdict_provenance": self.verdict_provenance,
        }
        deciding = self.deciding
        source = deciding.result if deciding else (self.compile.result if self.compile else None)
        if source is not None:
            run = source.to_dict()
            for key in (
                "status",
                "exit_code",
                "signal",
                "stdout",
                "stderr",
                "cpu_time",
                "wall_time",
                "memory_peak",
            ):
                out[key] = run[key]
            out["evidence_bundle"] = run["evidence"]
        out["compile"] = self.compile.to_dict() if self.compile else None
        out["cases"] = [case.to_dict() for case in self.cases]
        return out

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)


async def _check(
    sv: _CoreSupervisor, checker: Checker, test: TestCase, result: Result
) -> tuple[Verdict, str]:
    assert test.expected is not None
    if not isinstance(checker, CustomChecker):
        checked: Checked = checker.check(test.expected, result.stdout)
        verdict = Verdict.AC if checked.accepted else Verdict.WA
        return verdict, f"{checker.name}: {checked.message}"
    files: dict[str, bytes | File] = {
        "input": test.stdin,
        "expected": test.expected,
        "output": result.stdout,
    }
    for name, data in checker.files:
        files[name] = File(data, executable=True)
    verdict_run = await sv.run(
        checker.argv(),
        files=files,
        limits=Limits(memory="512M", cpu_time=10, wall_time=20, processes=16),
    )
    said = (verdict_run.stdout + verdict_run.stderr).decode(errors="replace").strip()[:500]
    if verdict_run.status is Status.OK:
        return Verdict.AC, f"custom checker accepted: {said}"
    if verdict_run.status is Status.RE and verdict_run.exit_code == 1:
        return Verdict.WA, f"custom checker rejected: {said}"
    status = verdict_run.status.value
    return Verdict.IE, f"custom checker failed ({status}, exit {verdict_run.exit_code}): {said}"


async def judge(
    sv: _CoreSupervisor,
    submission: Submission,
    tests: Sequence[TestCase] | None,
    *,
    languages: LanguageTable,
    checker: str | Checker | None = None,
    stop_on_first_failure: bool = False,
    profile: str = "judge",
    limits: Limits | None = None,
) -> JudgeReport:
    """Compile once, run the cases concurrently (up to the supervisor's limit), check them."""
    if not isinstance(submission, Submission):
        raise InvalidInput("submission", f"expected rustbox.Submission, got {submission!r}")
    language = languages.get(submission.language)
    if profile == "executor":
        language = executor_profile(language)
    elif profile != "judge":
        raise InvalidInput("profile", f"unknown profile {profile!r}: use 'judge' or 'executor'")
    cases = list(tests) if tests is not None else [TestCase()]
    if not cases:
        raise InvalidInput("tests", "no test cases")
    for i, test in enumerate(cases):
        if not isinstance(test, TestCase):
            raise InvalidInput(
                f"tests[{i}]", f"expected rustbox.TestCase, got {type(test).__name__}"
            )
    the_checker = parse_checker(checker)
    code = submission.code
    env = dict(language.env)
    files: dict[str, bytes | File] = {language.source_name(code): code.encode()}

    compiled: CompileResult | None = None
    if language.compile is not None:
        result = await sv.run(
            list(language.fill(language.compile, code)),
            files=files,
            limits=language.compile_limits,
            env=env,
            collect=language.artifacts,
        )
        missing = [a for a in language.artifacts if a not in result.files]
        compiled = CompileResult(ok=result.ok and not missing, result=result)
        if not compiled.ok:
            why = f"compile step {result.status.value}"
            if result.status is Status.OK and missing:
                why += f" but produced no {', '.join(missing)}"
            elif result.exit_code is not None:
                why += f" (exit {result.exit_code})"
            if result.tle:
                why += f" ({result.tle} time limit)"
            return JudgeReport(language.name, Verdict.CE, why, compiled, ())
        files = {name: File(result.files[name], executable=True) for name in language.artifacts}

    results: list[CaseResult | None] = [None] * len(cases)
    cutoff = len(cases)  # cases past the first failure are not needed when stopping early
    scopes: dict[int, anyio.CancelScope] = {}

    async def one(index: int, test: TestCase) -> None:
        nonlocal cutoff
        with anyio.CancelScope() as scope:
            scopes[index] = scope
            if index > cutoff:
                return
            run_limits = test.limits or limits or language.run_limits
            result = await sv.run(
                list(language.fill(language.run, code, run_limits)),
                files=files,
                stdin=test.stdin,
                limits=run_limits,
                env=env,
            )
            message = None
            verdict = _FROM_STATUS[result.status]
            if verdict in (Verdict.RE, Verdict.SIG) and language.reports_oom(result.stderr):
                verdict, message = Verdict.MLE, "the runtime reported running out of memory"
            if verdict is Verdict.AC and test.expected is not None:
                verdict, message = await _check(sv, the_checker, test, result)
            results[index] = CaseResult(
                index, test.name or str(index + 1), verdict, result, message
            )
            if stop_on_first_failure and verdict is not Verdict.AC and index < cutoff:
                cutoff = index
                for later, other in scopes.items():
                    if later > index:
                        other.cancel()
        scopes.pop(index, None)

    async with anyio.create_task_group() as tg:
        for index, test in enumerate(cases):
            tg.start_soon(one, index, test)
    done = tuple(r for r in results[: cutoff + 1] if r is not None)
    return JudgeReport(language.name, *_overall(done, cases), compiled, done)


def _overall(done: Sequence[CaseResult], cases: Sequence[TestCase]) -> tuple[Verdict, str]:
    for case in done:
        if case.verdict is not Verdict.AC:
            how = case.checker or f"run status {case.status.value}"
            if case.result.tle:
                how += f" ({case.result.tle} time)"
            if case.result.evidence.error:
                how += f": {case.result.evidence.error}"
            return case.verdict, f"case {case.name}: {how}"
    checked = sum(1 for c in cases if c.expected is not None)
    if checked:
        return (
            Verdict.AC,
            f"all {len(done)} cases accepted ({checked} checked against expected output)",
        )
    return Verdict.AC, f"all {len(done)} runs OK (no expected output given)"


def tests_from_mapping(items: Sequence[Mapping[str, Any]]) -> list[TestCase]:
    """TestCase objects from JSON-like dicts (``stdin``, ``expected``/``expected_output``)."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"tests[{i}]", "expected an object")
        expected = item.get("expected", item.get("expected_output"))
        out.append(TestCase(stdin=item.get("stdin", b""), expected=expected, name=str(i + 1)))
    return out
