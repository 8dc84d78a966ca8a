"""Serving the app with hypercorn, on whichever event loop is running (asyncio or trio)."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import anyio
import sniffio
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework

from rustbox._errors import InvalidInput
from rustbox._service._app import create_app
from rustbox._service._config import ServiceConfig
from rustbox._service._service import Service
from rustbox._service._webhooks import Resolver, system_resolver


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, not in hypercorn, to learn the port when port 0 asks for any free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise InvalidInput("host/port", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def _until_signalled(service: Service) -> None:
    """SIGINT or SIGTERM starts the drain; a second one cuts it short."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            service.log.info("signal received: draining", signal=signal.Signals(signum).name)
            break
        async with anyio.create_task_group() as tg:

            async def second() -> None:
                async for _ in signals:
                    service.log.warning("second signal: killing running submissions now")
                    service.cut_drain()
                    return

            tg.start_soon(second)
            await service.shutdown()
            tg.cancel_scope.cancel()


async def serve(
    config: ServiceConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    resolver: Resolver = system_resolver,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until ``shutdown_trigger`` returns (default: SIGINT/SIGTERM).

    Binds ``config.host:config.port`` (port 0: any free port), starts the
    :class:`Service`, reports ``http://host:port`` through ``task_status``
    (``url = await tg.start(serve, config)``), then serves HTTP/1.1 and h2c
    with hypercorn. On shutdown the service drains first (new submissions get
    503, results are still served), then hypercorn closes the connections.
    """
    service = Service(config, resolver=resolver)
    sock = _listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    app = cast(ASGIFramework, create_app(service=service, manage_service=False))
    hyper = HypercornConfig()
    hyper.graceful_timeout = config.graceful_timeout
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.accesslog = None

    async def trigger() -> None:
        if shutdown_trigger is not None:
            await shutdown_trigger()
            await service.shutdown()
        else:
            await _until_signalled(service)

    if sniffio.current_async_library() == "trio":
        import hypercorn.trio

        hypercorn_serve = hypercorn.trio.serve
    else:
        import hypercorn.asyncio

        hypercorn_serve = hypercorn.asyncio.serve  # type: ignore[assignment]

    try:
        async with service:
            hyper.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here on
            task_status.started(url)
            service.log.info("listening", url=url)
            # In a task of its own: on Python 3.11, hypercorn's asyncio TaskGroup leaves
            # its task with a cancellation request pending, which would cancel what follows.
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(hypercorn_serve, app, hyper, shutdown_trigger=trigger, mode="asgi")
                )
    finally:
        sock.close()  # only if the service failed to start (detached otherwise)
