"""Who a client is (its address, or the one a trusted proxy forwarded) and how fast it may send (a token bucket).

A client is its socket's peer address. Behind a reverse proxy (a Hugging Face Space sits behind one) every peer is
the proxy, so the address the proxy saw is read from `X-Forwarded-For` — but only when the peer is one of the proxies
named in UNET3D_TRUSTED_PROXIES: anyone else could write any address there. The header is read from the right (the
entry the nearest proxy added) and the first address that is not itself a trusted proxy is the client.

uvicorn applies the same rule to `scope["client"]` for the peers in its `--forwarded-allow-ips` (default 127.0.0.1);
`unet3d serve` and the image set that option from UNET3D_TRUSTED_PROXIES, so both layers trust the same peers and
reading the header again here changes nothing when uvicorn already did.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from starlette.types import Scope

from .errors import RateLimitedError

UNKNOWN_CLIENT = "unknown"
_MAX_BUCKETS = 100_000  # a bound on the limiter's memory under a flood from many addresses
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_proxies(entries: list[str]) -> list[str]:
    """Validate UNET3D_TRUSTED_PROXIES: IP addresses or networks (CIDR).

    There is no "trust everyone": with every hop trusted the client would be whatever it wrote into the header.

    Raises:
        ValueError: an entry is neither (pydantic reports it as an invalid setting).
    """
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as e:
            raise ValueError(f"'{entry}' is not an IP address or a network like 10.0.0.0/8") from e
    return entries


class TrustedProxies:
    """The peers whose `X-Forwarded-For` is believed (see the module docstring)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(e, strict=False) for e in entries]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_of(self, scope: Scope) -> str:
        """The client's address for per-client limits: the peer, or what a trusted proxy forwarded."""
        peer = scope.get("client")
        address = str(peer[0]) if peer else UNKNOWN_CLIENT
        if address not in self:
            return address
        forwarded = [
            hop.strip()
            for name, value in scope.get("headers", ())
            if name == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
        ]
        hops = [_host_of(hop) for hop in forwarded if hop]
        for hop in reversed(hops):
            if hop not in self:
                return hop
        return hops[0] if hops else address  # every hop is a trusted proxy: the farthest is the best we know


def _host_of(hop: str) -> str:
    """An X-Forwarded-For entry without its port: `1.2.3.4:5678` → `1.2.3.4`, `[::1]:80` → `::1`."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


class RateLimiter:
    """A token bucket per client: `burst` requests at once, then `rate` per second (rate 0: no limit).

    Args:
        rate: tokens added per second (UNET3D_RATE_LIMIT).
        burst: the bucket's size (UNET3D_RATE_BURST).
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (tokens, when)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, client: str) -> None:
        """Spend one token of `client`'s bucket.

        Raises:
            RateLimitedError: the bucket is empty; `retry_after_s` is when the next token arrives.
        """
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                wait_s = math.ceil((1 - tokens) / self.rate)
                raise RateLimitedError(
                    f"too many requests from {client}: at most {self.rate:g} per second (bursts of {self.burst}); "
                    "retry after the number of seconds in the Retry-After header",
                    wait_s,
                )
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.popitem(last=False)  # the least recently seen client: its bucket has refilled most

    def __len__(self) -> int:
        return len(self._buckets)
