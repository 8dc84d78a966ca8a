"""Webhooks, Standard Webhooks style: signed, retried, and never aimed inside the network.

A webhook URL comes from whoever can submit, so the service must not become
a way to reach what only it can reach: loopback, private networks,
link-local addresses and cloud metadata endpoints are refused. The host is
resolved and every address checked when the submission arrives (to refuse
early) and again at each delivery, because DNS may answer differently by
then (rebinding). The delivery connects to the address that was checked,
with the original Host header and TLS server name, so nothing re-resolves
in between. Redirects are not followed and proxy variables are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import random
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import httpx

from rustbox._errors import InvalidInput
from rustbox._service._model import WebhookState

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud metadata services (AWS, GCP, Azure... on 169.254.169.254; AWS's IPv6 one).
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
MAX_BACKOFF = 60.0

Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnresolvedHost(InvalidInput):
    """The name did not resolve: refused at submit time, retried at delivery time."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host``."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


def address_problem(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why the service must not connect to ``address``, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    if address.is_loopback:
        return None if allow_loopback else f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_private:
        return f"{address} is a private address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return f"{address} is not a unicast address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


@attrs.frozen
class Target:
    """A checked webhook destination: where to connect, and what to call the host."""

    scheme: str
    host: str  #: as in the URL (name or literal, no brackets)
    port: int
    path: str  #: path and query
    addresses: tuple[str, ...]  #: resolved and checked

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self, address: str) -> str:
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def check_webhook_url(
    url: str, *, allow_localhost: bool, resolver: Resolver = system_resolver
) -> Target:
    """Parse, resolve and check ``url``; raises InvalidInput('webhook_url', why)."""
    field = "webhook_url"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(field, f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidInput(field, "must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(field, "must not carry credentials")
    host = parts.hostname
    if not host:
        raise InvalidInput(field, "has no host")
    port = port or (443 if scheme == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await resolver(host, port)
        except OSError as exc:
            raise UnresolvedHost(field, f"cannot resolve {host!r}: {exc}") from None
        if not addresses:
            raise InvalidInput(field, f"{host!r} resolves to no address")
    checked = []
    for address in addresses:
        ip = _literal(address.split("%", 1)[0])
        if ip is None:
            raise InvalidInput(field, f"{host!r} resolves to {address!r}, not an IP address")
        problem = address_problem(ip, allow_loopback=allow_localhost)
        if problem:
            where = problem if literal is not None else f"{host} resolves to {problem}"
            raise InvalidInput(field, f"refused: {where}")
        checked.append(ip)
    if scheme == "http" and not all(ip.is_loopback for ip in checked):
        raise InvalidInput(field, "must be an https:// URL (http only to loopback, when allowed)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, tuple(str(ip) for ip in checked))


def secret_key(secret: str) -> bytes:
    """``whsec_<base64>`` (the Standard Webhooks form) is decoded; other text is used as is."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@attrs.frozen
class Delivery:
    state: WebhookState
    attempts: int
    error: str | None


Progress = Callable[[int, str | None], Awaitable[None]]


async def _no_progress(_attempts: int, _error: str | None) -> None:
    return None


@attrs.define(eq=False)
class WebhookSender:
    """Delivers one result to one URL, retrying 5xx answers and network errors."""

    client: httpx.AsyncClient
    allow_localhost: bool = False
    attempts: int = 5
    backoff: float = 1.0
    resolver: Resolver = system_resolver
    user_agent: str = "rustbox"
    on_attempt: Callable[[str], None] = lambda _outcome: None
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep

    def delay(self, attempt: int) -> float:
        """Before retry ``attempt`` (1 = the first retry): backoff * 2^(n-1), +0-10 % jitter."""
        base = min(MAX_BACKOFF, self.backoff * 2.0 ** (attempt - 1))
        return base * (1 + random.random() / 10)

    async def deliver(
        self,
        message_id: str,
        url: str,
        secret: str | None,
        body: bytes,
        progress: Progress = _no_progress,
    ) -> Delivery:
        error: str | None = None
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await self.sleep(self.delay(attempt - 1))
            try:
                target = await check_webhook_url(
                    url, allow_localhost=self.allow_localhost, resolver=self.resolver
                )
            except UnresolvedHost as exc:  # DNS trouble may pass: retry
                target, retry, error = None, True, exc.problem
            except InvalidInput as exc:
                # refused now (e.g. the name was rebound to a private address)
                self.on_attempt("refused")
                return Delivery(WebhookState.FAILED, attempt, exc.problem)
            if target is not None:
                retry, error = await self._attempt(target, message_id, secret, body)
            if error is None:
                self.on_attempt("delivered")
                return Delivery(WebhookState.DELIVERED, attempt, None)
            if not retry:
                self.on_attempt("failed")
                return Delivery(WebhookState.FAILED, attempt, error)
            self.on_attempt("retried")
            await progress(attempt, error)
        return Delivery(WebhookState.FAILED, self.attempts, f"gave up: {error}")

    async def _attempt(
        self, target: Target, message_id: str, secret: str | None, body: bytes
    ) -> tuple[bool, str | None]:
        """(retry?, error or None when delivered)."""
        timestamp = int(time.time())
        headers = {
            "host": target.host_header,
            "content-type": "application/json",
            "user-agent": self.user_agent,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
        }
        if secret:
            headers["webhook-signature"] = sign(secret, message_id, timestamp, body)
        extensions: dict[str, Any] = {}
        if target.scheme == "https" and _literal(target.host) is None:
            extensions["sni_hostname"] = target.host  # the certificate is checked for the name
        try:
            response = await self.client.post(
                target.pinned_url(target.addresses[0]),
                content=body,
                headers=headers,
                extensions=extensions,
            )
        except httpx.HTTPError as exc:
            return True, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return False, None
        reason = f"HTTP {response.status_code}"
        return response.status_code >= 500, reason


def new_client(timeout: float) -> httpx.AsyncClient:
    """No redirects (a 3xx could point anywhere) and no proxy variables (they would
    connect to something other than the checked address)."""
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
