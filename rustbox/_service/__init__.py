"""The HTTP judge service (``rustbox serve``), REST-compatible with the Rust rustbox's.

::

    from rustbox._service import ServiceConfig, serve
    anyio.run(serve, ServiceConfig(port=4096, workers=4, db="/var/lib/rustbox/service.db"))

or mount ``create_app(config)`` in any ASGI server. See docs/http-api.md.
"""

from rustbox._service._app import create_app
from rustbox._service._config import ServiceConfig
from rustbox._service._model import Outcome, Status, SubmissionRecord, SubmitRequest, WebhookState
from rustbox._service._serve import serve
from rustbox._service._service import Service
from rustbox._service._store import SqliteStore, Store
from rustbox._service._webhooks import sign

__all__ = [
    "Outcome",
    "Service",
    "ServiceConfig",
    "SqliteStore",
    "Status",
    "Store",
    "SubmissionRecord",
    "SubmitRequest",
    "WebhookState",
    "create_app",
    "serve",
    "sign",
]
