"""The HTTP service for real: hypercorn on 127.0.0.1, real sandboxes, a real HTTP client.

Servers run in-process on an ephemeral port (both backends), except the
restart test, which kill -9s a ``python -m rustbox serve`` subprocess. No
traffic leaves 127.0.0.1: webhooks go to a receiver on loopback, and the
refused webhook URLs are IP literals (nothing is resolved).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from rustbox._service import ServiceConfig, SqliteStore, Status, serve

pytestmark = pytest.mark.root

RESULT_FIELDS = {
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
PRINT_42 = {"language": "python", "code": "print(42)"}


def sleeper(seconds: float, then: str = "done") -> dict[str, str]:
    return {"language": "python", "code": f"import time\ntime.sleep({seconds})\nprint({then!r})"}


@asynccontextmanager
async def server(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A service on 127.0.0.1:<free port>, stopped (drained) when the block ends."""
    values: dict[str, Any] = {
        "port": 0,
        "db": ":memory:",
        "workers": 2,
        "rate_limit": 0,
        "drain_timeout": 2.0,
        "graceful_timeout": 1.0,
    }
    values.update(settings)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        url = await tg.start(partial(serve, ServiceConfig(**values), shutdown_trigger=stop.wait))
        try:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                yield client
        finally:
            stop.set()


async def poll(
    client: httpx.AsyncClient, sid: str, until: Callable[[dict[str, Any]], bool], **kw: Any
) -> dict[str, Any]:
    with anyio.fail_after(60):
        while True:
            response = await client.get(f"/api/result/{sid}", **kw)
            assert response.status_code == 200, response.text
            data: dict[str, Any] = response.json()
            if until(data):
                return data
            await anyio.sleep(0.05)


def done(data: dict[str, Any]) -> bool:
    return data["status"] in ("completed", "error")


def running(data: dict[str, Any]) -> bool:
    return data["status"] == "running"


async def submit_wait(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    response = await client.post("/api/submit?wait=true", json=body, **kw)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def parse_time(value: str) -> datetime.datetime:
    assert value.endswith("Z")
    return datetime.datetime.fromisoformat(value)


# -- the endpoints -------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_poll_wait_and_every_read_endpoint() -> None:
    async with server() as client:
        response = await client.post("/api/submit", json=PRINT_42)
        assert response.status_code == 202
        assert set(response.json()) == {"id"}
        sid = response.json()["id"]
        assert response.headers["location"] == f"/api/result/{sid}"
        assert "no API key" in response.headers["x-rustbox-warning"]
        result = await poll(client, sid, done)
        assert set(result) >= RESULT_FIELDS
        assert result["id"] == sid
        assert (result["status"], result["verdict"], result["language"]) == (
            "completed",
            "AC",
            "python",
        )
        assert (result["stdout"], result["stderr"], result["exit_code"]) == ("42\n", "", 0)
        assert result["signal"] is None and result["error_message"] is None
        assert isinstance(result["memory_peak"], int) and result["memory_peak"] > 100_000  # bytes
        assert 0 < result["cpu_time"] < 5 and 0 < result["wall_time"] < 7
        created, started, finished = (
            parse_time(result[k]) for k in ("created_at", "started_at", "completed_at")
        )
        assert created <= started <= finished

        waited = await submit_wait(client, {**PRINT_42, "language": "py"})
        assert (waited["status"], waited["verdict"]) == ("completed", "AC")

        echo = {"language": "python", "code": "print(input()[::-1])", "stdin": "abc\n"}
        ok = await submit_wait(client, {**echo, "expected_output": "cba"})
        assert ok["verdict"] == "AC"
        wrong = await submit_wait(client, {**echo, "expected_output": "abc"})
        assert (wrong["status"], wrong["verdict"], wrong["stdout"]) == ("completed", "WA", "cba\n")
        cases = await submit_wait(
            client,
            {
                "language": "python",
                "code": "print(int(input()) * 2)",
                "tests": [
                    {"stdin": "1", "expected_output": "2"},
                    {"stdin": "5", "expected_output": "11"},
                ],
            },
        )
        assert (cases["verdict"], cases["stdout"]) == ("WA", "10\n")
        assert [c["verdict"] for c in cases["cases"]] == ["AC", "WA"]
        crash = await submit_wait(client, {"language": "python", "code": "raise SystemExit(3)"})
        assert (crash["verdict"], crash["exit_code"]) == ("RE", 3)
        broken = await submit_wait(client, {"language": "c", "code": "int main( {"})
        assert broken["verdict"] == "CE" and "error" in broken["stderr"]

        missing = await client.get("/api/result/no-such-id")
        assert (missing.status_code, missing.json()) == (404, {"error": "submission not found"})
        assert (await client.get("/api/nothing")).status_code == 404
        wrong_method = await client.get("/api/submit")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()

        languages = (await client.get("/api/languages")).json()["languages"]
        python = next(lang for lang in languages if lang["name"] == "python")
        assert python["available"] and "py" in python["aliases"]
        assert python["limits"]["memory"] == 256 << 20

        health = (await client.get("/api/health")).json()
        assert health["status"] == "ok" and health["enforcement_mode"] == "strict"
        assert health["cgroup_backend"] in ("v1", "v2")
        assert health["workers"] == 2 and health["queue_depth"] == 0
        assert health["node_id"]
        ready = await client.get("/api/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})

        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'rustbox_runs_total{status="completed",verdict="AC"} 3' in text
        assert 'rustbox_runs_total{status="completed",verdict="CE"} 1' in text
        assert "rustbox_queue_depth 0" in text
        assert 'rustbox_submission_latency_seconds_bucket{le="+Inf"} 7' in text
        assert 'rustbox_http_responses_total{code="404"}' in text


@pytest.mark.anyio
async def test_bad_bodies_and_size_limits_are_400() -> None:
    async with server() as client:

        async def refused(why: str, **kw: Any) -> None:
            response = await client.post("/api/submit", **kw)
            assert response.status_code == 400, response.text
            assert why in response.json()["error"]

        await refused("not valid JSON", content=b"{nope")
        await refused("JSON object", json=[1, 2])
        await refused("nested too deeply", content=b"[" * 100_000)
        await refused("language: is required", json={"code": "print(1)"})
        await refused("code: is required", json={"language": "python"})
        await refused("unknown language 'cobol'", json={"language": "cobol", "code": "x"})
        await refused("code: 65537 bytes", json={"language": "python", "code": "#" * 65537})
        await refused(
            "stdin: 262145 bytes",
            json={**PRINT_42, "stdin": "x" * (256 * 1024 + 1)},
        )
        await refused("stdin: expected a string", json={**PRINT_42, "stdin": 12})
        await refused("tests: expected a list", json={**PRINT_42, "tests": "1 2"})
        await refused("unknown checker", json={**PRINT_42, "checker": "./mine"})
        big = json.dumps({**PRINT_42, "pad": "x" * (1 << 20)}).encode()
        await refused("body: over the 1048576-byte limit", content=big)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"language": "python", "code": "print(1)", "pad": "'
            for _ in range(20):
                yield b"x" * 65536

        await refused("body: over the 1048576-byte limit", content=chunks())
        # the largest legal body still works
        fits = await client.post(
            "/api/submit?wait=true",
            json={**PRINT_42, "code": "print(42)\n" + "#" * (65536 - 11)},
        )
        assert fits.status_code == 200 and fits.json()["verdict"] == "AC"


@pytest.mark.anyio
async def test_wait_times_out_with_408_then_the_client_polls() -> None:
    async with server(sync_wait_timeout=0.3) as client:
        response = await client.post("/api/submit?wait=true", json=sleeper(1.5))
        assert response.status_code == 408
        body = response.json()
        assert set(body) == {"id", "error"} and "poll" in body["error"]
        result = await poll(client, body["id"], done)
        assert (result["verdict"], result["stdout"]) == ("AC", "done\n")


@pytest.mark.anyio
async def test_api_key_is_required_on_data_endpoints_only() -> None:
    async with server(api_key="s3cret-key") as client:
        missing = await client.post("/api/submit", json=PRINT_42)
        assert missing.status_code == 401 and "missing API key" in missing.json()["error"]
        wrong = await client.post("/api/submit", json=PRINT_42, headers={"x-api-key": "s3cret"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]
        good = await client.post(
            "/api/submit?wait=true", json=PRINT_42, headers={"x-api-key": "s3cret-key"}
        )
        assert good.status_code == 200 and good.json()["verdict"] == "AC"
        assert "x-rustbox-warning" not in good.headers
        sid = good.json()["id"]
        assert (await client.get(f"/api/result/{sid}")).status_code == 401
        assert (
            await client.get(f"/api/result/{sid}", headers={"X-API-Key": "s3cret-key"})
        ).status_code == 200
        assert (await client.get("/api/languages")).status_code == 401
        for open_path in ("/api/health", "/api/health/ready", "/metrics"):
            assert (await client.get(open_path)).status_code == 200


@pytest.mark.anyio
async def test_rate_limit_per_client_address() -> None:
    async with server(rate_limit=0.2, rate_burst=3) as client:
        codes = [(await client.get("/api/result/x")).status_code for _ in range(3)]
        assert codes == [404, 404, 404]
        limited = await client.get("/api/result/x", headers={"x-forwarded-for": "192.0.2.1"})
        assert limited.status_code == 429  # X-Forwarded-For is not believed by default
        assert limited.json() == {"error": "rate limit exceeded; slow down"}
        assert int(limited.headers["retry-after"]) >= 1
        assert (await client.post("/api/submit", json=PRINT_42)).status_code == 429
        assert (await client.get("/api/health")).status_code == 200  # probes are not limited
    async with server(rate_limit=0.2, rate_burst=2, trust_proxies=1) as client:

        async def get(address: str) -> int:
            response = await client.get(
                "/api/result/x", headers={"x-forwarded-for": f"198.51.100.9, {address}"}
            )
            return response.status_code

        assert [await get("192.0.2.1") for _ in range(3)] == [404, 404, 429]
        assert await get("192.0.2.2") == 404  # another client behind the same proxy


@pytest.mark.anyio
async def test_idempotency_key_returns_the_same_submission() -> None:
    async with server() as client:
        key = {"idempotency-key": "order-7"}
        first = await client.post("/api/submit", json=PRINT_42, headers=key)
        again = await client.post("/api/submit", json=PRINT_42, headers=key)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        waited = await client.post("/api/submit?wait=true", json=PRINT_42, headers=key)
        assert waited.status_code == 200
        assert (waited.json()["id"], waited.json()["verdict"]) == (first.json()["id"], "AC")
        conflict = await client.post(
            "/api/submit", json={**PRINT_42, "stdin": "other"}, headers=key
        )
        assert conflict.status_code == 422 and conflict.json()["id"] == first.json()["id"]
        other = await client.post("/api/submit", json=PRINT_42, headers={"idempotency-key": "o"})
        assert other.json()["id"] != first.json()["id"]
        await poll(client, other.json()["id"], done)
        text = (await client.get("/metrics")).text
        assert 'rustbox_runs_total{status="completed",verdict="AC"} 2' in text  # one run per key


async def gone(client: httpx.AsyncClient, sid: str) -> float:
    """Poll until the result is purged (404); returns when that was seen."""
    with anyio.fail_after(10):
        while True:
            response = await client.get(f"/api/result/{sid}")
            if response.status_code == 404:
                assert response.json() == {"error": "submission not found"}
                return time.time()
            assert response.status_code == 200, response.text
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_results_and_idempotency_keys_expire() -> None:
    result_ttl, key_ttl = 1.0, 0.3
    async with server(result_ttl=result_ttl, idempotency_ttl=key_ttl) as client:
        key = {"idempotency-key": "retained-1"}
        first = await submit_wait(client, PRINT_42, headers=key)
        replay = await client.post("/api/submit", json=PRINT_42, headers=key)
        assert replay.json()["id"] == first["id"] and "idempotent-replayed" in replay.headers
        expired = parse_time(first["created_at"]).timestamp() + key_ttl + 0.05
        await anyio.sleep(max(0.0, expired - time.time()))
        # the key has expired, its submission has not
        kept = await client.get(f"/api/result/{first['id']}")
        assert (kept.status_code, kept.json()["stdout"]) == (200, "42\n")
        again = await client.post("/api/submit?wait=true", json=PRINT_42, headers=key)
        assert again.status_code == 200 and "idempotent-replayed" not in again.headers
        second = again.json()
        assert second["id"] != first["id"] and second["verdict"] == "AC"
        for result in (first, second):
            seen = await gone(client, result["id"])
            assert seen >= parse_time(result["completed_at"]).timestamp() + result_ttl
        text = (await client.get("/metrics")).text
        assert "rustbox_submissions_purged_total 2\n" in text
        assert 'rustbox_runs_total{status="completed",verdict="AC"} 2' in text
        # a purged key is free: it makes a new submission, not a replay
        third = await client.post("/api/submit", json=PRINT_42, headers=key)
        assert third.status_code == 202 and third.json()["id"] not in (first["id"], second["id"])


# -- webhooks --------------------------------------------------------------------------


class Receiver:
    """A tiny HTTP/1.1 server on 127.0.0.1 that records requests and answers with statuses."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = anyio.Event()
        self.port = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            while len(body) < int(headers.get("content-length", "0")):
                body += await stream.receive()
            self.requests.append((lines[0], headers, body))
            status = self.statuses.pop(0) if self.statuses else 200
            await stream.send(
                f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
            self.arrived.set()
            self.arrived = anyio.Event()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, self.handle)
            try:
                yield f"http://127.0.0.1:{self.port}"
            finally:
                tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_webhook_is_signed_retried_and_recorded() -> None:
    raw_secret = os.urandom(24)
    secret = "whsec_" + base64.b64encode(raw_secret).decode()
    receiver = Receiver(500)  # the first attempt fails: the service retries
    async with (
        receiver.running() as hook_url,
        server(allow_localhost_webhooks=True, webhook_backoff=0.05) as client,
    ):
        response = await client.post(
            "/api/submit",
            json={**PRINT_42, "webhook_url": f"{hook_url}/hook?x=1", "webhook_secret": secret},
        )
        assert response.status_code == 202, response.text
        sid = response.json()["id"]
        with anyio.fail_after(30):
            while len(receiver.requests) < 2:
                await receiver.arrived.wait()
        result = await poll(client, sid, lambda d: d.get("webhook", {}).get("state") == "delivered")
    assert result["webhook"] == {"state": "delivered", "attempts": 2, "error": None}
    request_line, headers, body = receiver.requests[-1]
    assert request_line == "POST /hook?x=1 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == sid
    timestamp = int(headers["webhook-timestamp"])
    assert abs(time.time() - timestamp) < 60
    signed = f"{sid}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(raw_secret, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    payload = json.loads(body)
    assert payload == {k: v for k, v in result.items() if k != "webhook"}
    assert (payload["verdict"], payload["stdout"]) == ("AC", "42\n")


@pytest.mark.anyio
async def test_webhooks_to_internal_addresses_are_refused() -> None:
    async with server() as client:  # allow_localhost_webhooks is off by default
        for url, why in [
            ("http://127.0.0.1:9/hook", "loopback"),
            ("https://127.0.0.1/hook", "loopback"),
            ("https://[::1]/hook", "loopback"),
            ("https://10.0.0.1/hook", "private"),
            ("https://192.168.0.10/hook", "private"),
            ("https://169.254.169.254/latest/meta-data/", "metadata"),
            ("https://[fd00:ec2::254]/", "metadata"),
            ("https://[fe80::1]/", "link-local"),
            ("ftp://203.0.113.5/hook", "https"),
        ]:
            response = await client.post("/api/submit", json={**PRINT_42, "webhook_url": url})
            assert response.status_code == 400, (url, response.text)
            error = response.json()["error"]
            assert error.startswith("webhook_url:") and why in error, (url, error)
    async with server(allow_localhost_webhooks=True) as client:
        response = await client.post(
            "/api/submit", json={**PRINT_42, "webhook_url": "http://10.0.0.1/hook"}
        )
        assert response.status_code == 400  # loopback is allowed; private networks never


# -- load and abuse ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_full_queue_is_503() -> None:
    async with server(workers=1, queue_size=1, drain_timeout=0.2) as client:
        busy = (await client.post("/api/submit", json=sleeper(3))).json()["id"]
        await poll(client, busy, running)
        queued = await client.post("/api/submit", json=PRINT_42)
        assert queued.status_code == 202
        full = await client.post("/api/submit", json=PRINT_42)
        assert full.status_code == 503 and "queue is full" in full.json()["error"]
        health = (await client.get("/api/health")).json()
        assert (health["queue_depth"], health["running"]) == (1, 1)
        assert "rustbox_queue_depth 1" in (await client.get("/metrics")).text


@pytest.mark.anyio
async def test_fork_bomb_then_a_normal_submission_is_accepted() -> None:
    async with server() as client:
        bomb = await submit_wait(
            client, {"language": "python", "code": "import os\nwhile True:\n    os.fork()\n"}
        )
        assert bomb["status"] == "completed"
        assert bomb["verdict"] in ("RE", "SIG", "TLE", "MLE")
        after = await submit_wait(client, {**PRINT_42, "expected_output": "42"})
        assert (after["verdict"], after["stdout"]) == ("AC", "42\n")
        assert (await client.get("/api/health/ready")).status_code == 200


@pytest.mark.anyio
async def test_create_app_runs_the_service_in_its_lifespan(anyio_backend: str) -> None:
    """Any ASGI server will do: here hypercorn, driving the lifespan itself."""
    from hypercorn.config import Config

    from rustbox._service import create_app

    app = create_app(ServiceConfig(db=":memory:", workers=1, rate_limit=0))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    if anyio_backend == "trio":
        from hypercorn.trio import serve as hypercorn_serve
    else:
        from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            with anyio.fail_after(30):
                while (await client.get("/api/health")).json()["status"] != "ok":
                    await anyio.sleep(0.05)  # the lifespan is still starting the service
            result = await submit_wait(client, PRINT_42)
            assert result["verdict"] == "AC"
        stop.set()
    assert app.state.service.draining  # the lifespan's end drained and stopped it


# -- shutdown and restarts --------------------------------------------------------------


@pytest.mark.anyio
async def test_shutdown_drains_kills_late_runs_and_a_restart_runs_the_pending(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "service.db")
    settings: dict[str, Any] = {
        "port": 0,
        "db": db,
        "workers": 1,
        "rate_limit": 0,
        "graceful_timeout": 1.0,
    }
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        config = ServiceConfig(**settings, drain_timeout=1.0)
        url = await tg.start(partial(serve, config, shutdown_trigger=stop.wait))
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            late = (await client.post("/api/submit", json=sleeper(20))).json()["id"]
            await poll(client, late, running)
            waiting = (await client.post("/api/submit", json=PRINT_42)).json()["id"]
            stop.set()
            await anyio.sleep(0.2)
            refused = await client.post("/api/submit", json=PRINT_42)
            assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
            assert (await client.get("/api/health/ready")).status_code == 503
            assert (await client.get("/api/health")).json()["status"] == "draining"
            assert (await client.get(f"/api/result/{waiting}")).json()["status"] == "pending"
    store = SqliteStore(db)
    store.open_sync()
    killed = store.get_sync(late)
    assert killed is not None and killed.status is Status.ERROR
    assert killed.outcome is not None
    assert "shut down before the run finished" in (killed.outcome.error_message or "")
    pending = store.get_sync(waiting)
    assert pending is not None and pending.status is Status.PENDING
    store.close_sync()

    async with server(**{**settings, "drain_timeout": 30.0}) as client:
        finished = await poll(client, waiting, done)  # the pending one runs after the restart
        assert (finished["verdict"], finished["stdout"]) == ("AC", "42\n")
        assert (await client.get(f"/api/result/{late}")).json()["status"] == "error"
        slow = (await client.post("/api/submit", json=sleeper(1))).json()["id"]
        await poll(client, slow, running)
    # leaving the block drained: the running submission was allowed to finish
    store.open_sync()
    drained = store.get_sync(slow)
    assert drained is not None and drained.status is Status.COMPLETED
    assert drained.outcome is not None and drained.outcome.verdict == "AC"
    store.close_sync()


def _start(db: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rustbox",
            "serve",
            "--port",
            "0",
            "--db",
            db,
            "--workers",
            "1",
            "--rate-limit",
            "0",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, line
    return proc, line.split("listening on ", 1)[1].split()[0]


def _wait_for(client: httpx.Client, sid: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data: dict[str, Any] = client.get(f"/api/result/{sid}").json()
        if data["status"] in statuses:
            return data
        time.sleep(0.05)
    raise AssertionError(f"{sid} never reached {statuses}: {data}")


def test_restart_after_kill_9_marks_running_as_error_and_runs_pending(tmp_path: Path) -> None:
    db = str(tmp_path / "service.db")
    proc, url = _start(db)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            in_flight = client.post("/api/submit", json=sleeper(5)).json()["id"]
            _wait_for(client, in_flight, {"running"})
            queued = [client.post("/api/submit", json=PRINT_42).json()["id"] for _ in range(2)]
            assert all(
                client.get(f"/api/result/{sid}").json()["status"] == "pending" for sid in queued
            )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    proc, url = _start(db)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            lost = client.get(f"/api/result/{in_flight}").json()
            assert (lost["status"], lost["verdict"]) == ("error", "IE")
            assert "restarted" in lost["error_message"]
            for sid in queued:
                result = _wait_for(client, sid, {"completed", "error"})
                assert (result["status"], result["verdict"], result["stdout"]) == (
                    "completed",
                    "AC",
                    "42\n",
                )
            fresh = client.post("/api/submit?wait=true", json=PRINT_42)
            assert fresh.status_code == 200 and fresh.json()["verdict"] == "AC"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
