"""The service's logger: structlog when the application configured it, else stdlib's."""

from __future__ import annotations

import logging
from typing import Any

import structlog


def service_logger() -> Any:
    """Bound per request and per submission by the callers.

    The library never configures logging (unconfigured structlog would print to
    stdout); without structlog configuration events go to the stdlib logger
    ``rustbox.service``, which the ``rustbox serve`` command line enables.
    """
    if structlog.is_configured():
        return structlog.get_logger("rustbox.service")
    return structlog.wrap_logger(
        logging.getLogger("rustbox.service"),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
    )
