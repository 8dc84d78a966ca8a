"""Submissions as the API sees them: the request body, the stored record, the result JSON."""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs

from rustbox._errors import InvalidInput
from rustbox._judge import JudgeReport, TestCase, Verdict, parse_checker, tests_from_mapping
from rustbox._result import Result
from rustbox._service._config import ServiceConfig


class Status(enum.StrEnum):
    """A submission's lifecycle, as the Rust rustbox judge-service names it."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"  #: a verdict was reached (any verdict, IE included)
    ERROR = "error"  #: no verdict: the service failed, restarted or shut down mid-run


TERMINAL = frozenset({Status.COMPLETED, Status.ERROR})


class WebhookState(enum.StrEnum):
    NONE = "none"  #: no webhook_url
    PENDING = "pending"  #: owed: delivered when the submission ends (or after a restart)
    DELIVERED = "delivered"
    FAILED = "failed"  #: gave up (refused address, 4xx, or out of attempts)


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class TestSpec:
    stdin: str = ""
    expected: str | None = None


@attrs.frozen
class SubmitRequest:
    """A validated POST /api/submit body (sizes and types checked, nothing resolved yet)."""

    language: str
    code: str
    stdin: str = ""
    expected_output: str | None = None
    tests: tuple[TestSpec, ...] | None = None
    checker: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=True)
        if self.tests is not None:
            data["tests"] = [attrs.asdict(t) for t in self.tests]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubmitRequest:
        values = dict(data)
        if values.get("tests") is not None:
            values["tests"] = tuple(TestSpec(**t) for t in values["tests"])
        return cls(**values)

    def fingerprint(self) -> str:
        """What an Idempotency-Key is bound to: the same key with another body is refused."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def test_cases(self) -> list[TestCase]:
        if self.tests is None:
            return [TestCase(stdin=self.stdin, expected=self.expected_output, name="1")]
        return tests_from_mapping([attrs.asdict(t) for t in self.tests])


def _string(payload: Mapping[str, Any], field: str, *, required: bool = False) -> str | None:
    value = payload.get(field)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, f"expected a string, got {type(value).__name__}")
    return value


def _bounded(value: str, field: str, limit: int) -> str:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidInput(field, f"{size} bytes is over the {limit}-byte limit")
    return value


def parse_submit(payload: object, config: ServiceConfig) -> SubmitRequest:
    """Check a decoded JSON body; raises InvalidInput naming the field (answered with 400).

    Unknown fields are ignored, as the Rust service's serde does, so newer
    clients keep working.
    """
    if not isinstance(payload, Mapping):
        raise InvalidInput("body", "expected a JSON object")
    language = _string(payload, "language", required=True)
    code = _string(payload, "code", required=True)
    assert language is not None and code is not None
    if not code.strip():
        raise InvalidInput("code", "is empty")
    _bounded(code, "code", config.max_code)
    stdin = _bounded(_string(payload, "stdin") or "", "stdin", config.max_stdin)
    expected = _string(payload, "expected_output")
    if expected is not None:
        _bounded(expected, "expected_output", config.max_stdin)
    tests: tuple[TestSpec, ...] | None = None
    raw_tests = payload.get("tests")
    if raw_tests is not None:
        if not isinstance(raw_tests, list):
            raise InvalidInput("tests", "expected a list of {stdin, expected_output} objects")
        if not raw_tests:
            raise InvalidInput("tests", "is empty")
        if len(raw_tests) > config.max_tests:
            raise InvalidInput(
                "tests", f"{len(raw_tests)} cases is over the {config.max_tests} limit"
            )
        if payload.get("stdin") is not None or expected is not None:
            raise InvalidInput("tests", "give either stdin/expected_output or tests, not both")
        specs = []
        for i, item in enumerate(raw_tests):
            field = f"tests[{i}]"
            if not isinstance(item, Mapping):
                raise InvalidInput(field, "expected an object")
            case_in = _string(item, "stdin") or ""
            case_out = _string(item, "expected_output")
            if case_out is None:
                case_out = _string(item, "expected")
            _bounded(case_in, f"{field}.stdin", config.max_stdin)
            if case_out is not None:
                _bounded(case_out, f"{field}.expected_output", config.max_stdin)
            specs.append(TestSpec(case_in, case_out))
        tests = tuple(specs)
    checker = _string(payload, "checker")
    if checker is not None:
        parse_checker(checker)  # only the built-in checkers: no programs from the network
    webhook_url = _string(payload, "webhook_url")
    secret = _string(payload, "webhook_secret")
    if webhook_url is not None and len(webhook_url) > 2048:
        raise InvalidInput("webhook_url", "is longer than 2048 characters")
    return SubmitRequest(
        language=language,
        code=code,
        stdin=stdin,
        expected_output=expected,
        tests=tests,
        checker=checker,
        webhook_url=webhook_url,
        webhook_secret=secret,
    )


@attrs.frozen
class Outcome:
    """How a submission ended: a verdict with its figures, or an error without one."""

    status: Status
    verdict: str | None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    error_message: str | None = None
    cpu_time: float | None = None
    wall_time: float | None = None
    memory_peak: int | None = None
    #: verdict_provenance, cases, *_truncated: extras beyond the Rust service's fields.
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @classmethod
    def failed(cls, message: str) -> Outcome:
        """No verdict was reached (verdict IE: the judge, not the program, failed)."""
        return cls(Status.ERROR, Verdict.IE.value, error_message=message)


def _clip(data: bytes, limit: int) -> tuple[str, bool]:
    cut = len(data) > limit
    return data[:limit].decode("utf-8", "replace"), cut


def outcome_from_report(report: JudgeReport, max_output: int) -> Outcome:
    """The deciding case's output and exit, the largest figures over all cases."""
    deciding = report.deciding
    source: Result | None = deciding.result if deciding else None
    if source is None and report.compile is not None:
        source = report.compile.result
    runs = [case.result for case in report.cases] or ([source] if source else [])
    stdout, out_cut = _clip(source.stdout, max_output) if source else ("", False)
    stderr, err_cut = _clip(source.stderr, max_output) if source else ("", False)
    details: dict[str, Any] = {
        "verdict_provenance": report.verdict_provenance,
        "cases": [
            {
                "name": case.name,
                "verdict": case.verdict.value,
                "status": case.status.value,
                "exit_code": case.result.exit_code,
                "signal": case.result.signal,
                "cpu_time": case.cpu_time,
                "wall_time": case.wall_time,
                "memory_peak": case.memory_peak,
                "checker": case.checker,
            }
            for case in report.cases
        ],
    }
    if out_cut:
        details["stdout_truncated"] = True
    if err_cut:
        details["stderr_truncated"] = True
    error = None
    if report.verdict is Verdict.IE:
        error = next((r.evidence.error for r in runs if r.evidence.error), None) or (
            report.verdict_provenance
        )
    return Outcome(
        status=Status.COMPLETED,
        verdict=report.verdict.value,
        stdout=stdout,
        stderr=stderr,
        exit_code=source.exit_code if source else None,
        signal=source.signal if source else None,
        error_message=error,
        cpu_time=max((r.cpu_time for r in runs), default=None),
        wall_time=max((r.wall_time for r in runs), default=None),
        memory_peak=max((r.memory_peak for r in runs), default=None),
        details=details,
    )


@attrs.frozen
class SubmissionRecord:
    """One row of the store."""

    id: str
    status: Status
    language: str
    request: SubmitRequest
    created_at: float
    idempotency_key: str | None = None
    fingerprint: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    deadline: float | None = None  #: past this a running submission is reaped
    outcome: Outcome | None = None
    webhook_state: WebhookState = WebhookState.NONE
    webhook_attempts: int = 0
    webhook_error: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def public(self, *, webhook: bool = True) -> dict[str, Any]:
        """The result JSON of GET /api/result/{id} (and of webhooks, without ``webhook``)."""
        o = self.outcome
        data: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "language": self.language,
            "verdict": o.verdict if o else None,
            "stdout": o.stdout if o else None,
            "stderr": o.stderr if o else None,
            "exit_code": o.exit_code if o else None,
            "signal": o.signal if o else None,
            "error_message": o.error_message if o else None,
            "cpu_time": o.cpu_time if o else None,
            "wall_time": o.wall_time if o else None,
            "memory_peak": o.memory_peak if o else None,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "completed_at": rfc3339(self.completed_at),
        }
        if o is not None:
            data.update(o.details)
        if webhook and self.webhook_state is not WebhookState.NONE:
            data["webhook"] = {
                "state": self.webhook_state.value,
                "attempts": self.webhook_attempts,
                "error": self.webhook_error,
            }
        return data
