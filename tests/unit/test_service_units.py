"""The HTTP service's parts without a server: config, parsing, buckets, metrics, webhooks, store.

No network traffic at all: webhook deliveries go to an httpx.MockTransport
and host names resolve through a fake resolver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import attrs
import httpx
import pytest

import rustbox
from rustbox._host._probe import HostReport
from rustbox._judge import CaseResult, CompileResult, JudgeReport, Verdict
from rustbox._service import ServiceConfig, SqliteStore
from rustbox._service._metrics import Histogram, Metrics
from rustbox._service._model import (
    Outcome,
    Status,
    SubmissionRecord,
    SubmitRequest,
    WebhookState,
    outcome_from_report,
    parse_submit,
    rfc3339,
)
from rustbox._service._queue import WorkQueue
from rustbox._service._ratelimit import RateLimiter, client_address
from rustbox._service._service import Service
from rustbox._service._webhooks import (
    WebhookSender,
    address_problem,
    check_webhook_url,
    secret_key,
    sign,
)

MiB = 1 << 20
CONFIG = ServiceConfig()


# -- config -----------------------------------------------------------------------


def test_config_defaults_match_the_issue() -> None:
    config = ServiceConfig()
    assert (config.host, config.port) == ("127.0.0.1", 4096)
    assert config.sync_wait_timeout == 30
    assert (config.max_code, config.max_stdin, config.max_body) == (64 << 10, 256 << 10, MiB)
    assert config.api_key is None
    assert config.trust_proxies == 0
    assert config.allow_localhost_webhooks is False


def test_config_from_environment_and_overrides() -> None:
    env = {
        "RUSTBOX_HOST": "0.0.0.0",
        "RUSTBOX_PORT": "8080",
        "RUSTBOX_WORKERS": "3",
        "RUSTBOX_DB": "/tmp/x.db",
        "RUSTBOX_API_KEY": "k",
        "RUSTBOX_BACKEND": "trio",
        "RUSTBOX_SYNC_WAIT_TIMEOUT": "2.5",
        "RUSTBOX_MAX_BODY": "2M",
        "RUSTBOX_ALLOW_LOCALHOST_WEBHOOKS": "yes",
        "RUSTBOX_TRUST_PROXIES": "true",
        "RUSTBOX_RATE_LIMIT": "0",
        "RUSTBOX_NODE_ID": "",  # empty: not set
    }
    config = ServiceConfig.from_env(env, port=9000, workers=None)
    assert config.host == "0.0.0.0"
    assert config.port == 9000  # an override wins; None means "not given"
    assert config.workers == 3
    assert config.db == "/tmp/x.db"
    assert config.api_key == "k"
    assert config.backend == "trio"
    assert config.sync_wait_timeout == 2.5
    assert config.max_body == 2 * MiB
    assert config.allow_localhost_webhooks is True
    assert config.trust_proxies == 1
    assert config.rate_limit == 0
    assert config.node_id  # the hostname


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"RUSTBOX_PORT": "http"}, "RUSTBOX_PORT"),
        ({"RUSTBOX_PORT": "70000"}, "port"),
        ({"RUSTBOX_WORKERS": "0"}, "workers"),
        ({"RUSTBOX_BACKEND": "curio"}, "backend"),
        ({"RUSTBOX_DRAIN_TIMEOUT": "-1"}, "drain_timeout"),
        ({"RUSTBOX_ALLOW_LOCALHOST_WEBHOOKS": "maybe"}, "RUSTBOX_ALLOW_LOCALHOST_WEBHOOKS"),
        ({"RUSTBOX_MAX_STDIN": "lots"}, "RUSTBOX_MAX_STDIN"),
        ({"RUSTBOX_TRUST_PROXIES": "some"}, "RUSTBOX_TRUST_PROXIES"),
    ],
)
def test_config_errors_name_the_setting(env: dict[str, str], field: str) -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        ServiceConfig.from_env(env)
    assert info.value.field == field


# -- request bodies ------------------------------------------------------------------


def test_parse_submit_minimal_and_full() -> None:
    request = parse_submit({"language": "py", "code": "print(1)", "extra": 1}, CONFIG)
    assert request == SubmitRequest(language="py", code="print(1)")
    full = parse_submit(
        {
            "language": "cpp",
            "code": "int main(){}",
            "tests": [{"stdin": "1", "expected_output": "2"}, {"stdin": "3", "expected": "4"}, {}],
            "checker": "float:1e-3",
            "webhook_url": "https://example.com/hook",
            "webhook_secret": "s",
        },
        CONFIG,
    )
    cases = full.test_cases()
    assert [(c.stdin, c.expected) for c in cases] == [(b"1", b"2"), (b"3", b"4"), (b"", None)]
    assert SubmitRequest.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    single = parse_submit(
        {"language": "py", "code": "x", "stdin": "a", "expected_output": "b"}, CONFIG
    )
    assert [(c.stdin, c.expected) for c in single.test_cases()] == [(b"a", b"b")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"code": "x"}, "language"),
        ({"language": "py"}, "code"),
        ({"language": 3, "code": "x"}, "language"),
        ({"language": "py", "code": "  \n"}, "code"),
        ({"language": "py", "code": "x" * (64 * 1024 + 1)}, "code"),
        ({"language": "py", "code": "x", "stdin": "y" * (256 * 1024 + 1)}, "stdin"),
        ({"language": "py", "code": "x", "stdin": 5}, "stdin"),
        ({"language": "py", "code": "x", "tests": "1 2"}, "tests"),
        ({"language": "py", "code": "x", "tests": []}, "tests"),
        ({"language": "py", "code": "x", "tests": [{}] * 101}, "tests"),
        ({"language": "py", "code": "x", "tests": [{}], "stdin": "1"}, "tests"),
        ({"language": "py", "code": "x", "tests": [3]}, "tests[0]"),
        ({"language": "py", "code": "x", "tests": [{"stdin": 1}]}, "stdin"),
        ({"language": "py", "code": "x", "checker": "/bin/true"}, "checker"),
        ({"language": "py", "code": "x", "webhook_url": 7}, "webhook_url"),
    ],
)
def test_parse_submit_refuses_bad_bodies(body: object, field: str) -> None:
    with pytest.raises(rustbox.InvalidInput) as info:
        parse_submit(body, CONFIG)
    assert info.value.field == field


def test_code_limit_counts_utf8_bytes() -> None:
    parse_submit({"language": "py", "code": "é" * (32 * 1024)}, CONFIG)
    with pytest.raises(rustbox.InvalidInput):
        parse_submit({"language": "py", "code": "é" * (32 * 1024 + 1)}, CONFIG)


def test_fingerprint_binds_the_whole_body() -> None:
    a = SubmitRequest(language="py", code="print(1)")
    assert a.fingerprint() == SubmitRequest(language="py", code="print(1)").fingerprint()
    assert a.fingerprint() != SubmitRequest(language="py", code="print(2)").fingerprint()
    assert a.fingerprint() != SubmitRequest("py", "print(1)", stdin="x").fingerprint()


def test_rfc3339() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(None) is None


# -- results -------------------------------------------------------------------------


def make_result(
    status: rustbox.Status = rustbox.Status.OK,
    stdout: bytes = b"7\n",
    exit_code: int | None = 0,
    cpu: float = 0.01,
    peak: int = 3 * MiB,
    error: str | None = None,
) -> rustbox.Result:
    stream = rustbox.StreamReport(bytes=len(stdout), cap=64 * MiB, truncated=False, complete=True)
    evidence = rustbox.Evidence(
        mode="strict",
        wait_status=0,
        exit_code=exit_code,
        signal=None,
        cgroup=None,
        rusage_user=cpu,
        rusage_sys=0.0,
        rusage_maxrss=peak,
        wall_time=0.02,
        actions=(),
        stdout=stream,
        stderr=rustbox.StreamReport(bytes=0, cap=64 * MiB, truncated=False, complete=True),
        setup=(),
        controls=(),
        uid=60001,
        error=error,
    )
    return rustbox.Result(
        status=status,
        exit_code=exit_code,
        signal=None,
        stdout=stdout,
        stderr=b"",
        cpu_time=cpu,
        wall_time=0.02,
        memory_peak=peak,
        tle=None,
        evidence=evidence,
    )


def test_outcome_takes_the_deciding_case_and_the_largest_figures() -> None:
    first = CaseResult(0, "1", Verdict.AC, make_result(cpu=0.5, peak=9 * MiB), "tokens: ok")
    second = CaseResult(
        1, "2", Verdict.WA, make_result(stdout=b"8\n", cpu=0.1), "tokens: expected 7"
    )
    report = JudgeReport("python", Verdict.WA, "case 2: tokens", None, (first, second))
    outcome = outcome_from_report(report, max_output=1)
    assert outcome.status is Status.COMPLETED
    assert outcome.verdict == "WA"
    assert outcome.stdout == "8"  # the deciding case's, cut at max_output
    assert outcome.details["stdout_truncated"] is True
    assert (outcome.cpu_time, outcome.memory_peak) == (0.5, 9 * MiB)
    assert [c["verdict"] for c in outcome.details["cases"]] == ["AC", "WA"]
    assert outcome.details["verdict_provenance"] == "case 2: tokens"


def test_outcome_of_a_compile_error_shows_the_compiler() -> None:
    failed = make_result(rustbox.Status.RE, stdout=b"main.c:1: error", exit_code=1)
    compiled = CompileResult(False, failed)
    report = JudgeReport("c", Verdict.CE, "compile step RE (exit 1)", compiled, ())
    outcome = outcome_from_report(report, max_output=MiB)
    assert (outcome.verdict, outcome.exit_code, outcome.stdout) == ("CE", 1, "main.c:1: error")


def test_outcome_of_an_internal_error_says_where() -> None:
    broken = make_result(rustbox.Status.IE, stdout=b"", exit_code=None, error="mount failed")
    case = CaseResult(0, "1", Verdict.IE, broken, None)
    report = JudgeReport("python", Verdict.IE, "case 1", None, (case,))
    outcome = outcome_from_report(report, max_output=MiB)
    assert (outcome.status, outcome.error_message) == (Status.COMPLETED, "mount failed")


def test_public_result_has_the_rust_service_fields() -> None:
    record = SubmissionRecord(
        id="x",
        status=Status.PENDING,
        language="python",
        request=SubmitRequest("python", "print(1)", webhook_url="https://e.com/"),
        created_at=1.0,
        webhook_state=WebhookState.PENDING,
    )
    data = record.public()
    assert set(data) >= {
        "id",
        "status",
        "language",
        "verdict",
        "stdout",
        "stderr",
        "exit_code",
        "signal",
        "error_message",
        "cpu_time",
        "wall_time",
        "memory_peak",
        "created_at",
        "started_at",
        "completed_at",
    }
    assert data["status"] == "pending" and data["verdict"] is None
    assert data["webhook"] == {"state": "pending", "attempts": 0, "error": None}
    assert "webhook" not in record.public(webhook=False)
    assert "webhook_secret" not in json.dumps(data)


# -- rate limits -----------------------------------------------------------------------


def test_token_bucket_burst_refusal_and_refill() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, True]
    allowed, wait = limiter.allow("a")
    assert not allowed and wait == pytest.approx(0.5)
    assert limiter.allow("b")[0]  # buckets are per client
    now[0] += 0.5
    assert limiter.allow("a")[0]
    assert not limiter.allow("a")[0]
    now[0] += 100
    assert [limiter.allow("a")[0] for _ in range(4)] == [True, True, True, False]  # capped


def test_token_bucket_disabled_and_swept() -> None:
    assert RateLimiter(rate=0, burst=1).allow("a") == (True, 0.0)
    now = [0.0]
    limiter = RateLimiter(rate=1000.0, burst=1, clock=lambda: now[0])
    for i in range(5000):
        now[0] += 0.01
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) < 4096  # refilled buckets are dropped


def test_client_address_trusts_forwarded_for_only_when_told() -> None:
    xff = ["203.0.113.9, 198.51.100.7", "192.0.2.1"]
    assert client_address("10.0.0.5", xff, 0) == "10.0.0.5"
    assert client_address("10.0.0.5", xff, 1) == "192.0.2.1"
    assert client_address("10.0.0.5", xff, 2) == "198.51.100.7"
    assert client_address("10.0.0.5", xff, 9) == "203.0.113.9"
    assert client_address("10.0.0.5", [], 1) == "10.0.0.5"
    assert client_address(None, [], 0) == "unknown"


# -- metrics ---------------------------------------------------------------------------


def test_histogram_is_cumulative() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 7.0):
        h.observe(value)
    assert list(h.lines("x")) == [
        'x_bucket{le="0.1"} 1',
        'x_bucket{le="1"} 3',
        'x_bucket{le="+Inf"} 4',
        "x_sum 8.05",
        "x_count 4",
    ]


def test_metrics_text_format() -> None:
    metrics = Metrics()
    metrics.finished("completed", "AC", 0.03, 0.02)
    metrics.finished("error", None, 1.0, None)
    metrics.http["200"] += 2
    metrics.webhooks['odd"one'] += 1
    text = metrics.render([("rustbox_queue_depth", "Waiting.", 3)])
    assert 'rustbox_runs_total{status="completed",verdict="AC"} 1' in text
    assert 'rustbox_runs_total{status="error",verdict="none"} 1' in text
    assert "# TYPE rustbox_queue_depth gauge\nrustbox_queue_depth 3\n" in text
    assert 'rustbox_submission_latency_seconds_bucket{le="+Inf"} 2' in text
    assert "rustbox_run_duration_seconds_count 1" in text
    assert 'rustbox_http_responses_total{code="200"} 2' in text
    assert 'outcome="odd\\"one"' in text
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


# -- webhooks: signatures and addresses --------------------------------------------------


def test_signature_is_standard_webhooks() -> None:
    body = b'{"id":"1"}'
    digest = hmac.new(b"secret", b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert sign("secret", "msg_1", 1700000000, body) == "v1," + base64.b64encode(digest).decode()
    raw = os.urandom(24)
    whsec = "whsec_" + base64.b64encode(raw).decode()
    assert secret_key(whsec) == raw
    assert secret_key("whsec_not base64!") == b"whsec_not base64!"


@pytest.mark.parametrize(
    ("address", "loopback_ok", "refused"),
    [
        ("93.184.216.34", False, None),
        ("2606:4700:4700::1111", False, None),
        ("127.0.0.1", False, "loopback"),
        ("127.0.0.1", True, None),
        ("::1", False, "loopback"),
        ("::ffff:127.0.0.1", False, "loopback"),
        ("10.1.2.3", True, "private"),
        ("172.16.0.1", True, "private"),
        ("192.168.1.1", True, "private"),
        ("fd12::1", True, "private"),
        ("169.254.169.254", True, "metadata"),
        ("fd00:ec2::254", True, "metadata"),
        ("169.254.1.1", True, "link-local"),
        ("fe80::1", True, "link-local"),
        ("0.0.0.0", True, "private"),
        ("224.0.0.1", True, "unicast"),
        ("100.64.0.1", True, "public"),
    ],
)
def test_address_policy(address: str, loopback_ok: bool, refused: str | None) -> None:
    problem = address_problem(ipaddress.ip_address(address), allow_loopback=loopback_ok)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem


def fake_resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        answers = table[host]
        if not answers:
            raise OSError("no such host")
        # a list in the table is consumed answer by answer (for rebinding)
        return [answers.pop(0)] if len(answers) > 1 else list(answers)

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.anyio
async def test_webhook_url_checks() -> None:
    resolver = fake_resolver(
        {
            "hooks.example.com": ["93.184.216.34"],
            "internal.example.com": ["10.0.0.7"],
            "gone.example.com": [],
        }
    )
    target = await check_webhook_url(
        "https://hooks.example.com:8443/x?y=1", allow_localhost=False, resolver=resolver
    )
    assert target.addresses == ("93.184.216.34",)
    assert target.pinned_url("93.184.216.34") == "https://93.184.216.34:8443/x?y=1"
    assert target.host_header == "hooks.example.com:8443"
    six = await check_webhook_url("https://[2606:4700::1]/", allow_localhost=False)
    assert six.pinned_url(six.addresses[0]) == "https://[2606:4700::1]:443/"
    assert six.host_header == "[2606:4700::1]"
    local = await check_webhook_url("http://127.0.0.1:9/h", allow_localhost=True)
    assert local.addresses == ("127.0.0.1",)
    refusals = {
        "http://hooks.example.com/": "https",
        "ftp://hooks.example.com/": "https",
        "https://user:pw@hooks.example.com/": "credentials",
        "https://internal.example.com/": "private",
        "https://gone.example.com/": "cannot resolve",
        "https://169.254.169.254/latest/meta-data/": "metadata",
        "https://[fd00:ec2::254]/": "metadata",
        "http://127.0.0.1:9/": "loopback",
        "https://[::1]/": "loopback",
        "https:///nohost": "no host",
        "https://hooks.example.com:99999/": "valid URL",
    }
    for url, why in refusals.items():
        with pytest.raises(rustbox.InvalidInput) as info:
            await check_webhook_url(url, allow_localhost=False, resolver=resolver)
        assert info.value.field == "webhook_url"
        assert why in info.value.problem, (url, info.value.problem)
    with pytest.raises(rustbox.InvalidInput, match="private"):  # allowed loopback only
        await check_webhook_url("http://10.0.0.1/", allow_localhost=True)


class Hook:
    """A fake receiver behind httpx.MockTransport: answers with the given statuses."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


def sender(hook: Hook, resolver: object = None, **kw: object) -> tuple[WebhookSender, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = httpx.AsyncClient(transport=httpx.MockTransport(hook))
    extra = {"resolver": resolver} if resolver is not None else {}
    return WebhookSender(client, sleep=sleep, **extra, **kw), slept  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_delivery_is_pinned_signed_and_retried() -> None:
    hook = Hook(503, httpx.ConnectError("refused"), 200)
    resolver = fake_resolver({"hooks.example.com": ["93.184.216.34"]})
    the_sender, slept = sender(hook, resolver, attempts=5, backoff=1.0)
    progress: list[tuple[int, str | None]] = []

    async def note(attempts: int, error: str | None) -> None:
        progress.append((attempts, error))

    before = int(time.time())
    delivery = await the_sender.deliver(
        "sub-1", "https://hooks.example.com/cb", "topsecret", b'{"a":1}', note
    )
    assert (delivery.state, delivery.attempts, delivery.error) == (WebhookState.DELIVERED, 3, None)
    assert [p[0] for p in progress] == [1, 2] and progress[0][1] == "HTTP 503"
    assert 1.0 <= slept[0] <= 1.1 and 2.0 <= slept[1] <= 2.2  # exponential backoff
    assert resolver.calls == ["hooks.example.com"] * 3  # checked again before every attempt
    request = hook.requests[-1]
    assert request.url == "https://93.184.216.34/cb"  # connects to the checked address
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["webhook-id"] == "sub-1"
    timestamp = int(request.headers["webhook-timestamp"])
    assert before <= timestamp <= int(time.time())
    expected = sign("topsecret", "sub-1", timestamp, b'{"a":1}')
    assert request.headers["webhook-signature"] == expected
    assert request.content == b'{"a":1}'


@pytest.mark.anyio
async def test_delivery_gives_up_on_4xx_and_after_the_attempts() -> None:
    hook = Hook(410)
    the_sender, _ = sender(hook, attempts=5)
    delivery = await the_sender.deliver("s", "https://93.184.216.34/", None, b"{}")
    assert (delivery.state, delivery.attempts, delivery.error) == (
        WebhookState.FAILED,
        1,
        "HTTP 410",
    )
    assert "webhook-signature" not in hook.requests[0].headers  # no secret: unsigned
    hook = Hook(500, 502, 503)
    the_sender, slept = sender(hook, attempts=3, backoff=0.5)
    delivery = await the_sender.deliver("s", "https://93.184.216.34/", "k", b"{}")
    assert delivery.state is WebhookState.FAILED and delivery.attempts == 3
    assert delivery.error == "gave up: HTTP 503"
    assert len(slept) == 2


@pytest.mark.anyio
async def test_delivery_refuses_a_name_rebound_to_a_private_address() -> None:
    hook = Hook()
    resolver = fake_resolver({"rebind.example.com": ["93.184.216.34", "127.0.0.1"]})
    await check_webhook_url(  # at submit time the name looked public
        "https://rebind.example.com/", allow_localhost=False, resolver=resolver
    )
    the_sender, _ = sender(hook, resolver, allow_localhost=False)
    delivery = await the_sender.deliver("s", "https://rebind.example.com/", "k", b"{}")
    assert delivery.state is WebhookState.FAILED
    assert delivery.error is not None and "loopback" in delivery.error
    assert hook.requests == []  # nothing was sent


@pytest.mark.anyio
async def test_delivery_retries_a_name_that_does_not_resolve_yet() -> None:
    answers: list[list[str] | OSError] = [OSError("temporary failure"), ["93.184.216.34"]]

    async def flaky(host: str, port: int) -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    hook = Hook()
    the_sender, slept = sender(hook, flaky)
    delivery = await the_sender.deliver("s", "https://hooks.example.com/", "k", b"{}")
    assert (delivery.state, delivery.attempts) == (WebhookState.DELIVERED, 2)
    assert len(slept) == 1 and len(hook.requests) == 1


# -- queue -------------------------------------------------------------------------------


def record(sid: str, status: Status = Status.PENDING, **kw: object) -> SubmissionRecord:
    return SubmissionRecord(
        id=sid,
        status=status,
        language="python",
        request=SubmitRequest("python", "print(1)"),
        created_at=time.time(),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_work_queue_bound_reservations_and_order() -> None:
    queue = WorkQueue(2)
    assert queue.try_reserve() and queue.try_reserve()
    assert not queue.try_reserve() and queue.depth == 2
    queue.put_reserved(record("a"))
    queue.release()
    assert queue.depth == 1
    queue.put(record("b"))
    queue.put(record("c"))  # recovered submissions go in past the bound
    assert queue.depth == 3 and not queue.try_reserve()
    with anyio.move_on_after(0.05):
        assert [(await queue.get()).id for _ in range(3)] == ["a", "b", "c"]
    got: list[str] = []
    async with anyio.create_task_group() as tg:

        async def take() -> None:
            got.append((await queue.get()).id)

        tg.start_soon(take)
        await anyio.sleep(0.01)
        queue.put(record("d"))
    assert got == ["d"]


# -- store -------------------------------------------------------------------------------


def test_sqlite_store_lifecycle(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SqliteStore(path)
    store.open_sync()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    _, created = store.create_sync(record("a", idempotency_key="k1", fingerprint="f"))
    assert created
    again, created = store.create_sync(record("b", idempotency_key="k1", fingerprint="g"))
    assert not created and again.id == "a" and again.fingerprint == "f"
    store.create_sync(record("c"))
    assert store.get_sync("b") is None
    assert store.get_by_key_sync("k1") is not None
    assert [r.id for r in store.pending_sync()] == ["a", "c"]
    claimed = store.claim_sync("a", 10.0, 20.0)
    assert claimed is not None and claimed.status is Status.RUNNING
    assert store.claim_sync("a", 10.0, 20.0) is None  # not pending any more
    assert store.stuck_sync(19.0) == [] and store.stuck_sync(21.0) == ["a"]
    outcome = Outcome(
        Status.COMPLETED,
        "AC",
        stdout="1\n",
        stderr="",
        exit_code=0,
        cpu_time=0.01,
        wall_time=0.02,
        memory_peak=123,
        details={"verdict_provenance": "ok"},
    )
    done = store.finish_sync("a", outcome, 30.0)
    assert done is not None and done.outcome == outcome and done.completed_at == 30.0
    assert store.finish_sync("a", Outcome.failed("late"), 31.0) is None  # already ended
    assert store.fail_running_sync("restarted", 40.0) == []
    store.claim_sync("c", 10.0, 20.0)
    assert store.fail_running_sync("restarted", 40.0) == ["c"]
    failed = store.get_sync("c")
    assert failed is not None and failed.status is Status.ERROR
    assert failed.outcome is not None and failed.outcome.error_message == "restarted"
    store.close_sync()


@pytest.mark.anyio
async def test_sqlite_store_async_face_and_webhook_state(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "w.db"))
    await store.open()
    hooked = record(
        "h",
        webhook_state=WebhookState.PENDING,
    )
    await store.create(hooked)
    assert await store.webhooks_owed() == []  # not ended yet
    await store.claim("h", 1.0, 2.0)
    await store.finish("h", Outcome.failed("x"), 3.0)
    owed = await store.webhooks_owed()
    assert [r.id for r in owed] == ["h"]
    await store.set_webhook("h", WebhookState.DELIVERED, 2, None)
    assert await store.webhooks_owed() == []
    got = await store.get("h")
    assert got is not None and (got.webhook_state, got.webhook_attempts) == (
        WebhookState.DELIVERED,
        2,
    )
    await store.close()


@pytest.mark.anyio
async def test_sqlite_store_runs_queued_calls_as_one_batch_each_with_its_own_outcome(
    tmp_path: Path,
) -> None:
    """Calls queued behind a stalled write run as one transaction; one failing fails alone."""
    path = str(tmp_path / "b.db")
    store = SqliteStore(path)
    await store.open()
    long_ago = time.time() - 3600
    await store.create(
        attrs.evolve(record("held", idempotency_key="k", fingerprint="f"), created_at=long_ago)
    )
    await store.create(record("x"))
    statements: list[str] = []
    store._db().set_trace_callback(statements.append)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock: writes stall
    results: dict[str, object] = {}

    async def call(name: str, make: Callable[[], Awaitable[object]]) -> None:
        try:
            results[name] = await make()
        except Exception as exc:
            results[name] = exc

    try:
        # frees the expired key "k" from "held", then its INSERT fails: "x" exists
        expired = record("x", idempotency_key="k", fingerprint="g")
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("claim", lambda: store.claim("x", 10.0, 20.0)),  # runs alone, and stalls
            ("create", lambda: store.create(record("a"))),
            ("taken id", lambda: store.create(expired, long_ago + 1)),
            ("get", lambda: store.get("a")),
            ("finish", lambda: store.finish("x", Outcome.failed("no"), 30.0)),
        ]
        async with anyio.create_task_group() as tg:
            for name, make in calls:  # one at a time: queued in this order
                tg.start_soon(call, name, make)
                await anyio.wait_all_tasks_blocked()
            assert results == {}  # the event loop goes on while the write stalls
            other.execute("COMMIT")
    finally:
        other.close()
    claimed = results["claim"]
    assert isinstance(claimed, SubmissionRecord) and claimed.status is Status.RUNNING
    created = results["create"]
    assert isinstance(created, tuple) and created[0].id == "a" and created[1] is True
    assert isinstance(results["taken id"], sqlite3.IntegrityError)
    got = results["get"]
    assert isinstance(got, SubmissionRecord) and got.id == "a"  # after the create before it
    finished = results["finish"]
    assert isinstance(finished, SubmissionRecord) and finished.status is Status.ERROR
    # the four queued calls: one transaction, one commit
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    held = await store.get("held")  # the failed call's key release was undone with it
    assert held is not None and held.idempotency_key == "k" and held.fingerprint == "f"
    x = await store.get("x")
    assert x is not None and x.status is Status.ERROR and x.idempotency_key is None
    await store.close()


@pytest.mark.anyio
async def test_sqlite_store_cancelled_calls_and_reopening(tmp_path: Path) -> None:
    """A cancelled call still queued never runs; one already running is seen through."""
    path = str(tmp_path / "c.db")
    store = SqliteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    running, queued = anyio.CancelScope(), anyio.CancelScope()
    got: list[str] = []

    async def create(scope: anyio.CancelScope, sid: str) -> None:
        with scope:
            stored, _ = await store.create(record(sid))
            got.append(stored.id)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(create, running, "a")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(create, queued, "b")
            await anyio.wait_all_tasks_blocked()
            running.cancel()
            queued.cancel()
            await anyio.wait_all_tasks_blocked()
            other.execute("COMMIT")
    finally:
        other.close()
    assert got == ["a"]  # the row written reached its caller, cancelled or not
    assert await store.get("a") is not None and await store.get("b") is None
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.get("a")
    await store.open()  # a new thread for the reopened store
    assert await store.get("a") is not None
    await store.close()


# -- service without sandboxes ----------------------------------------------------------


@pytest.mark.anyio
async def test_reaper_errors_out_runs_past_their_deadline(tmp_path: Path) -> None:
    config = ServiceConfig(db=str(tmp_path / "r.db"), reap_margin=5)
    service = Service(config)
    await service.store.open()
    await service.store.create(record("old"))
    await service.store.claim("old", 100.0, 200.0)
    assert await service.reap(now=150.0) == []
    assert await service.reap(now=250.0) == ["old"]
    reaped = await service.store.get("old")
    assert reaped is not None and reaped.status is Status.ERROR
    assert reaped.outcome is not None and "reaped" in (reaped.outcome.error_message or "")
    await service.store.close()


def test_ready_needs_strict_isolation() -> None:
    service = Service(ServiceConfig(db=":memory:"))
    assert service.ready() == (False, "the service is starting")
    service.unavailable = None
    service.host = HostReport(
        root=True,
        kernel="6",
        machine="x86_64",
        cgroup=None,
        namespaces={},
        seccomp="",
        pidfd="",
        uid_pool={},
        missing=("cgroups: no memory controller",),
    )
    ok, why = service.ready()
    assert not ok and why is not None and "no memory controller" in why
    assert service.health()["status"] == "starting"
    assert service.health()["enforcement_mode"] == "unavailable"
