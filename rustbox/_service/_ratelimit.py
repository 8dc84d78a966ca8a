"""Per-client token buckets, and which address a request comes from."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

_SWEEP_EVERY = 4096  #: requests between sweeps of idle buckets


class RateLimiter:
    """A token bucket per client: ``rate`` tokens a second, at most ``burst`` saved up.

    Each request takes one token; without one it is refused, and the caller
    learns how long until the next token. Buckets that have refilled are
    dropped now and then, so a scan from many addresses cannot grow the map
    for ever (a full bucket and a missing one behave the same).
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._calls = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, client: str) -> tuple[bool, float]:
        """(allowed, seconds until a token is free when refused)."""
        if not self.enabled:
            return True, 0.0
        now = self._clock()
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return True, 0.0
        self._buckets[client] = (tokens, now)
        return False, (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        full = [
            client
            for client, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for client in full:
            del self._buckets[client]

    def __len__(self) -> int:
        return len(self._buckets)


def client_address(peer: str | None, forwarded_for: Iterable[str], trust_proxies: int) -> str:
    """The socket peer, unless ``trust_proxies`` proxies stand in front of the service.

    Each trusted proxy appends the address it saw to X-Forwarded-For, so the
    client is the entry ``trust_proxies`` places from the right; entries to its
    left were written by the client itself and prove nothing. With fewer
    entries than proxies, the left-most one is used.
    """
    if trust_proxies <= 0:
        return peer or "unknown"
    hops = [h.strip() for header in forwarded_for for h in header.split(",") if h.strip()]
    if not hops:
        return peer or "unknown"
    return hops[-min(trust_proxies, len(hops))]
