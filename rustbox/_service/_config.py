"""The service's settings: one frozen value, from keyword arguments or RUSTBOX_* variables."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rustbox._errors import InvalidInput
from rustbox._limits import parse_size

KiB = 1024
MiB = 1024 * KiB
DAY = 24 * 3600.0

#: The judge's own bound on source size (``rustbox._judge._judge.MAX_CODE``).
MAX_CODE = 64 * KiB


def _positive_int(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(name, f"must be a positive integer, got {value!r}")

    return check


def _count(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(name, f"must be an integer >= 0, got {value!r}")

    return check


def _non_negative(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidInput(name, f"must be a number >= 0, got {value!r}")

    return check


def _check_port(_instance: Any, _attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise InvalidInput("port", f"must be 0-65535, got {value!r}")


def _check_backend(_instance: Any, _attribute: Any, value: Any) -> None:
    if value not in ("asyncio", "trio"):
        raise InvalidInput("backend", f"must be 'asyncio' or 'trio', got {value!r}")


def _check_key(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidInput("api_key", "must be a non-empty string or None")


@attrs.frozen
class ServiceConfig:
    """Everything ``rustbox serve`` can be told; see docs/http-api.md for each setting.

    Every field has a ``RUSTBOX_<FIELD>`` environment variable
    (:meth:`from_env`); the command line overrides the environment.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=4096, validator=_check_port)
    #: Submissions judged at once; also the shared Supervisor's max_concurrency.
    workers: int = attrs.field(
        factory=lambda: os.cpu_count() or 1, validator=_positive_int("workers")
    )
    #: SQLite file (":memory:" keeps nothing across restarts).
    db: str = "rustbox-service.db"
    api_key: str | None = attrs.field(default=None, validator=_check_key)
    backend: str = attrs.field(default="asyncio", validator=_check_backend)
    #: Submissions waiting for a worker before POST /api/submit answers 503.
    queue_size: int = attrs.field(default=1000, validator=_positive_int("queue_size"))
    #: How long ``?wait=true`` holds the request before answering 408.
    sync_wait_timeout: float = attrs.field(
        default=30.0, validator=_non_negative("sync_wait_timeout")
    )
    #: On shutdown, how long running submissions may finish before they are killed.
    drain_timeout: float = attrs.field(default=30.0, validator=_non_negative("drain_timeout"))
    #: After the drain, how long open HTTP connections get to finish their responses.
    graceful_timeout: float = attrs.field(default=5.0, validator=_non_negative("graceful_timeout"))
    #: Requests per second per client address (token bucket refill); 0 disables the limit.
    rate_limit: float = attrs.field(default=50.0, validator=_non_negative("rate_limit"))
    #: Bucket size: the burst a client may send at once.
    rate_burst: int = attrs.field(default=100, validator=_positive_int("rate_burst"))
    #: Proxies in front of the service whose X-Forwarded-For is believed (0: use the peer).
    trust_proxies: int = attrs.field(default=0, validator=_count("trust_proxies"))
    #: Allow http:// webhooks to loopback addresses (development and tests only).
    allow_localhost_webhooks: bool = False
    #: Signing secret for webhooks whose submission gave none.
    webhook_secret: str | None = None
    webhook_attempts: int = attrs.field(default=5, validator=_positive_int("webhook_attempts"))
    #: First retry delay in seconds; doubles per attempt (capped at 60 s).
    webhook_backoff: float = attrs.field(default=1.0, validator=_non_negative("webhook_backoff"))
    webhook_timeout: float = attrs.field(default=10.0, validator=_non_negative("webhook_timeout"))
    #: Seconds past a run's wall-time budget before the reaper marks it as an error.
    reap_margin: float = attrs.field(default=60.0, validator=_non_negative("reap_margin"))
    reap_interval: float = attrs.field(default=10.0, validator=_non_negative("reap_interval"))
    #: Seconds an ended submission is kept after ``completed_at``; 0 keeps it forever.
    result_ttl: float = attrs.field(default=7 * DAY, validator=_non_negative("result_ttl"))
    #: Seconds an Idempotency-Key replays its submission (from ``created_at``); 0: as long
    #: as the submission is kept.
    idempotency_ttl: float = attrs.field(default=DAY, validator=_non_negative("idempotency_ttl"))
    node_id: str = attrs.field(factory=socket.gethostname)
    #: A TOML file of language overrides (as ``rustbox judge --config``).
    languages_config: str | None = None
    max_body: int = attrs.field(default=1 * MiB, validator=_positive_int("max_body"))
    max_stdin: int = attrs.field(default=256 * KiB, validator=_positive_int("max_stdin"))
    max_tests: int = attrs.field(default=100, validator=_positive_int("max_tests"))
    #: Bytes of stdout and of stderr kept per submission (the rest is cut, and flagged).
    max_output: int = attrs.field(default=1 * MiB, validator=_positive_int("max_output"))

    @property
    def max_code(self) -> int:
        return MAX_CODE

    def evolve(self, **changes: Any) -> ServiceConfig:
        return attrs.evolve(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServiceConfig:
        """Settings from ``RUSTBOX_*`` variables, then ``overrides`` (e.g. the command line)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            name = f"RUSTBOX_{field.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(name, field.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_INTS = {
    "port",
    "workers",
    "queue_size",
    "rate_burst",
    "webhook_attempts",
    "max_tests",
}
_SIZES = {"max_body", "max_stdin", "max_output"}
_FLOATS = {
    "sync_wait_timeout",
    "drain_timeout",
    "graceful_timeout",
    "rate_limit",
    "webhook_backoff",
    "webhook_timeout",
    "reap_margin",
    "reap_interval",
    "result_ttl",
    "idempotency_ttl",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(variable: str, field: str, raw: str) -> Any:
    text = raw.strip()
    if field in _INTS:
        try:
            return int(text)
        except ValueError:
            raise InvalidInput(variable, f"expected an integer, got {raw!r}") from None
    if field in _SIZES:
        return parse_size(text, variable)
    if field in _FLOATS:
        try:
            return float(text)
        except ValueError:
            raise InvalidInput(variable, f"expected a number, got {raw!r}") from None
    if field == "allow_localhost_webhooks":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InvalidInput(variable, f"expected true or false, got {raw!r}")
    if field == "trust_proxies":
        if text.lower() in _TRUE - {"1"}:
            return 1
        if text.lower() in _FALSE - {"0"}:
            return 0
        try:
            return int(text)
        except ValueError:
            raise InvalidInput(
                variable, f"expected a number of proxies or true/false, got {raw!r}"
            ) from None
    return raw
