"""An asyncio web service that runs Python snippets in rustbox sandboxes.

One ``rustbox.Supervisor`` is opened in the app's lifespan and shared by every
request; each request awaits its own sandbox run, and the Supervisor's
``max_concurrency`` queues the runs beyond it. ::

    python examples/web_service.py --port 8080        # as root
    curl -s localhost:8080/run -d '{"code": "print(input()[::-1])", "stdin": "hello"}'
    {"status": "OK", "tle": null, "exit_code": 0, "stdout": "olleh\\n", ...}

``POST /run`` takes a JSON object: ``code`` (required), ``stdin``, ``limits``
(any of ``cpu_time``, ``wall_time``, ``memory``, ``processes``, capped by the
service) and ``evidence`` (true for the full evidence bundle). ``GET /health``
says whether the service is up. The app is built by ``create_app()``; ``app``
is a module-level instance for ASGI servers (``hypercorn examples.web_service:app``).

This is an example, not the ``rustbox serve`` HTTP API: it has no
authentication, and it trusts whoever can reach its port with cpu time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import rustbox

MAX_CODE = 64 * 1024
DEFAULT_LIMITS: dict[str, Any] = {"cpu_time": 2.0, "wall_time": 5.0, "memory": "256M"}
MAX_LIMITS: dict[str, float] = {
    "cpu_time": 10.0,
    "wall_time": 20.0,
    "memory": float(rustbox.parse_size("512M")),
    "processes": 64,
}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _limits(requested: Any) -> rustbox.Limits:
    """The request's limits over the defaults, each within the service's maximum."""
    if requested is None:
        requested = {}
    if not isinstance(requested, dict):
        raise rustbox.InvalidInput("limits", "expected an object")
    values = dict(DEFAULT_LIMITS)
    for key, value in requested.items():
        if key not in MAX_LIMITS:
            raise rustbox.InvalidInput(f"limits.{key}", f"not one of {', '.join(MAX_LIMITS)}")
        values[key] = value
    derive_wall = "cpu_time" in requested and "wall_time" not in requested
    if derive_wall:
        values["wall_time"] = 1e6  # a placeholder, so that any cpu_time validates
    limits = rustbox.Limits(**values)  # validates (and converts) every field
    for key, maximum in MAX_LIMITS.items():
        if getattr(limits, key) > maximum and not (derive_wall and key == "wall_time"):
            raise rustbox.InvalidInput(f"limits.{key}", f"at most {maximum:g} here")
    if derive_wall:  # twice the cpu time, at least the default, at most the maximum
        wall = min(MAX_LIMITS["wall_time"], max(DEFAULT_LIMITS["wall_time"], 2 * limits.cpu_time))
        limits = attrs.evolve(limits, wall_time=wall)
    return limits


def _summary(result: rustbox.Result, *, evidence: bool) -> dict[str, Any]:
    out = result.to_dict()
    full = out.pop("evidence")
    out.pop("files")
    out["actions"] = full["actions"]
    out["cgroup"] = full["cgroup"]
    if evidence:
        out["evidence"] = full
    return out


async def run_code(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"the body is not JSON: {exc}")
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return _error(400, 'expected a JSON object with a string "code"')
    code: str = body["code"]
    if len(code.encode()) > MAX_CODE:
        return _error(413, f"code is over {MAX_CODE} bytes")
    stdin = body.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        return _error(400, '"stdin" must be a string')
    sv: rustbox.Supervisor = request.state.supervisor
    try:
        result = await sv.run(
            ["/usr/bin/python3", "main.py"],
            files={"main.py": code},
            stdin=stdin,
            limits=_limits(body.get("limits")),
        )
    except rustbox.InvalidInput as exc:
        return _error(422, str(exc), field=exc.field)
    return JSONResponse(_summary(result, evidence=bool(body.get("evidence"))))


async def health(request: Request) -> JSONResponse:
    sv: rustbox.Supervisor = request.state.supervisor
    return JSONResponse({"ok": True, "max_concurrency": sv.max_concurrency})


def create_app(*, max_concurrency: int | None = None) -> Starlette:
    """The ASGI app; its lifespan owns the one Supervisor every request uses."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # The lifespan runs in one task from start-up to shutdown, so the
        # Supervisor's task group is entered and left in the same task.
        if max_concurrency is None:
            supervisor = rustbox.Supervisor()  # max_concurrency: the number of cpus
        else:
            supervisor = rustbox.Supervisor(max_concurrency=max_concurrency)
        async with supervisor as sv:
            yield {"supervisor": sv}  # request.state.supervisor in every handler

    return Starlette(
        routes=[Route("/run", run_code, methods=["POST"]), Route("/health", health)],
        lifespan=lifespan,
    )


app = create_app()


def main() -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--concurrency", type=int, default=None, help="max sandboxes at once")
    args = parser.parse_args()
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = "-"
    # hypercorn stops gracefully on SIGINT/SIGTERM: the lifespan's shutdown
    # closes the Supervisor, which kills and removes any sandbox still running.
    asyncio.run(serve(create_app(max_concurrency=args.concurrency), config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
