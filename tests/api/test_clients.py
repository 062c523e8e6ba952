"""Client identity (the peer, or what a trusted proxy forwarded) and the per-client token bucket."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from api.admission import Admission
from api.clients import RateLimiter, TrustedProxies
from api.errors import RateLimitedError, error_response
from api.lifecycle import Lifecycle
from api.settings import Settings
from api.tempfiles import TempQuota


def scope(peer: str, *forwarded: str) -> dict:
    return {"client": (peer, 5000), "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says():
    proxies = TrustedProxies([])
    assert proxies.client_of(scope("203.0.113.7", "198.51.100.1")) == "203.0.113.7"
    assert proxies.client_of({"headers": []}) == "unknown"  # a Unix socket has no peer address


def test_behind_a_trusted_proxy_the_client_is_the_nearest_untrusted_hop():
    proxies = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    # the client wrote "1.1.1.1" itself; the proxy appended the address it saw
    assert proxies.client_of(scope("10.1.2.3", "1.1.1.1, 203.0.113.9")) == "203.0.113.9"
    assert proxies.client_of(scope("10.1.2.3", "1.1.1.1", "203.0.113.9, 10.4.4.4")) == "203.0.113.9"  # two proxies
    assert proxies.client_of(scope("10.1.2.3", "203.0.113.9:4711")) == "203.0.113.9"
    assert proxies.client_of(scope("10.1.2.3", "[2001:db8::1]:80")) == "2001:db8::1"
    assert proxies.client_of(scope("10.1.2.3")) == "10.1.2.3"  # a proxy that forwarded nothing: itself
    assert proxies.client_of(scope("203.0.113.5", "1.1.1.1")) == "203.0.113.5"  # not a proxy: header ignored


def test_trusted_proxies_must_be_addresses_or_networks():
    assert Settings(trusted_proxies="10.0.0.0/8, 127.0.0.1").trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    with pytest.raises(ValidationError, match="'\\*' is not an IP address or a network"):
        Settings(trusted_proxies="*")


def test_the_bucket_allows_a_burst_then_the_rate_and_says_when_to_retry():
    limiter = RateLimiter(rate=2.0, burst=3)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimitedError) as refused:
        limiter.take("a")
    limiter.take("b")  # another client has its own bucket
    answer = error_response(refused.value)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
    time.sleep(0.55)  # half a second at 2 per second: one token back
    limiter.take("a")
    with pytest.raises(RateLimitedError):
        limiter.take("a")


def test_a_rate_of_zero_limits_nothing_and_the_buckets_stay_bounded():
    off = RateLimiter(rate=0.0, burst=1)
    for _ in range(100):
        off.take("a")
    assert len(off) == 0
    on = RateLimiter(rate=1.0, burst=1)
    for i in range(1000):
        on.take(f"client-{i}")
    assert len(on) == 1000


def test_the_rate_limit_counts_work_and_the_api_never_probes_nor_the_pages_files():
    admission = Admission(Settings(rate_limit=1), TempQuota(2**30, kept=[]), Lifecycle())

    def counts(method: str, path: str, root: str = "") -> bool:
        return admission.counts_toward_rate({"method": method, "path": root + path, "root_path": root})

    assert counts("GET", "/v1/model") and counts("POST", "/v1/predict") and counts("PUT", "/v1/cases/1/review")
    assert counts("POST", "/ui/gradio_api/upload") and counts("POST", "/ui/gradio_api/queue/join")
    assert not any(counts("GET", path) for path in ("/health", "/ready", "/metrics", "/ui/", "/ui/assets/index.js"))
    assert not counts("GET", "/health", root="/unet3d") and counts("GET", "/v1/model", root="/unet3d")
