"""The HTTP face: Starlette routes in the Rust rustbox judge-service's REST shape.

Starlette is a small ASGI toolkit built on anyio, so the same app runs on
asyncio and on trio. Routes parse, call the :class:`Service`, and answer;
auth, rate limits and the open-API warning sit in one ASGI middleware in
front of them.
"""

from __future__ import annotations

import hmac
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rustbox._errors import InvalidInput
from rustbox._service._config import ServiceConfig
from rustbox._service._model import parse_submit
from rustbox._service._ratelimit import RateLimiter, client_address
from rustbox._service._service import IdempotencyConflict, Service, Unavailable
from rustbox._service._webhooks import Resolver, system_resolver

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WARNING_HEADER = "x-rustbox-warning"
WARNING_TEXT = "no API key is configured: anyone who can reach this service can use it"
MAX_IDEMPOTENCY_KEY = 255
_DRAIN_FACTOR = 4  #: an oversized streamed body is read up to this many times the limit


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading (Content-Length) or while."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _BodyTooLarge
        except ValueError:
            pass  # h11/h2 refuse a malformed length before we see it
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            # Read (and drop) a bounded rest so the client, still sending, gets the
            # 400 rather than a reset connection; past that, the connection is cut.
            if size > limit * _DRAIN_FACTOR:
                raise _BodyTooLarge
            chunks.clear()
            continue
        chunks.append(chunk)
    if size > limit:
        raise _BodyTooLarge
    return b"".join(chunks)


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def submit(request: Request) -> Response:
    service = _service(request)
    config = service.config
    try:
        body = await _read_body(request, config.max_body)
    except _BodyTooLarge:
        response = _error(400, f"body: over the {config.max_body}-byte limit")
        response.headers["connection"] = "close"  # the unread rest makes the connection unusable
        return response
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, f"body: not valid JSON: {exc}")
    except RecursionError:
        return _error(400, "body: JSON nested too deeply")
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        return _error(400, f"Idempotency-Key: must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    try:
        parsed = parse_submit(payload, config)
        language = await service.check(parsed)
    except InvalidInput as exc:
        return _error(400, str(exc))
    try:
        record, created = await service.submit(parsed, language, key, log=request.state.log)
    except Unavailable as exc:
        return _error(503, str(exc))
    except IdempotencyConflict as exc:
        return _error(422, str(exc), id=exc.submission_id)
    headers = {"location": f"/api/result/{record.id}"}
    if not created:
        headers["idempotent-replayed"] = "true"
    if request.query_params.get("wait", "").lower() in ("true", "1", "yes"):
        done = await service.wait(record, config.sync_wait_timeout)
        if done.done:
            return JSONResponse(done.public(), status_code=200, headers=headers)
        return _error(
            408,
            f"not finished after {config.sync_wait_timeout:g} s; poll GET /api/result/{record.id}",
            id=record.id,
        )
    return JSONResponse({"id": record.id}, status_code=202, headers=headers)


async def result(request: Request) -> Response:
    record = await _service(request).get(request.path_params["id"])
    if record is None:
        return _error(404, "submission not found")
    return JSONResponse(record.public())


async def languages(request: Request) -> Response:
    service = _service(request)
    toolchains = {t.language: t for t in await service.toolchains()}
    out = []
    for language in service.languages.languages.values():
        toolchain = toolchains.get(language.name)
        limits = language.run_limits
        out.append(
            {
                "name": language.name,
                "aliases": list(language.aliases),
                "compiled": language.compile is not None,
                "available": toolchain.available if toolchain else False,
                "version": toolchain.version if toolchain else None,
                "limits": {
                    "memory": limits.memory,
                    "cpu_time": limits.cpu_time,
                    "wall_time": limits.wall_time,
                    "processes": limits.processes,
                },
            }
        )
    return JSONResponse({"languages": out})


async def health(request: Request) -> Response:
    return JSONResponse(_service(request).health())


async def ready(request: Request) -> Response:
    ok, why = _service(request).ready()
    if ok:
        return JSONResponse({"ready": True})
    return _error(503, why or "not ready", ready=False)


async def metrics(request: Request) -> Response:
    return PlainTextResponse(
        _service(request).render_metrics(), media_type="text/plain; version=0.0.4"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return _error(exc.status_code, message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    _service(request).log.exception("request failed", path=request.url.path)
    return _error(500, "internal error")


class _Guard:
    """Rate limit, then API key, on the data endpoints; the warning header everywhere.

    The rate limit comes first so that guessing keys is rate limited too.
    Health and metrics stay open: probes and scrapers carry no key.
    """

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        config = service.config
        self.key = config.api_key.encode() if config.api_key else None
        self.limiter = RateLimiter(config.rate_limit, config.rate_burst)
        self.trust = config.trust_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counter = self.service.metrics.http
        key = self.key

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                counter[str(message["status"])] += 1
                if key is None:
                    headers = list(message.get("headers", []))
                    headers.append((WARNING_HEADER.encode(), WARNING_TEXT.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        path: str = scope["path"]
        guarded = path.startswith("/api/") and not path.startswith("/api/health")
        if guarded:
            headers = [(k.lower(), v) for k, v in scope.get("headers", [])]
            peer = scope.get("client")
            forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
            client = client_address(peer[0] if peer else None, forwarded, self.trust)
            allowed, wait = self.limiter.allow(client)
            if not allowed:
                response: Response = _error(429, "rate limit exceeded; slow down")
                response.headers["retry-after"] = str(max(1, math.ceil(wait)))
                await response(scope, receive, send_with_headers)
                return
            if key is not None:
                given = next((v for k, v in headers if k == b"x-api-key"), None)
                if given is None or not hmac.compare_digest(given, key):
                    what = "missing" if given is None else "invalid"
                    response = _error(401, f"{what} API key (send it in the x-api-key header)")
                    await response(scope, receive, send_with_headers)
                    return
        peer = scope.get("client")
        scope.setdefault("state", {})["log"] = self.service.log.bind(
            request_id=uuid.uuid4().hex[:12],
            method=scope.get("method"),
            path=path,
            client=peer[0] if peer else None,
        )
        await self.app(scope, receive, send_with_headers)


def create_app(
    config: ServiceConfig | None = None,
    *,
    service: Service | None = None,
    manage_service: bool = True,
    resolver: Resolver = system_resolver,
) -> Starlette:
    """The ASGI app, for any ASGI server. ``app.state.service`` is its :class:`Service`.

    With ``manage_service`` the app's lifespan starts the service and stops
    it (draining); :func:`serve` starts it itself instead, so it can drain
    before the server closes the connections.
    """
    if service is None:
        service = Service(config or ServiceConfig.from_env(), resolver=resolver)
    the_service = service

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not manage_service:
            yield
            return
        async with the_service:
            yield

    app = Starlette(
        routes=[
            Route("/api/submit", submit, methods=["POST"]),
            Route("/api/result/{id}", result, methods=["GET"]),
            Route("/api/languages", languages, methods=["GET"]),
            Route("/api/health", health, methods=["GET"]),
            Route("/api/health/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        middleware=[Middleware(_Guard, service=the_service)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.service = the_service
    return app
