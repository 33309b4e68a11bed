"""Token buckets and keyed limiters (sans-io)."""

from __future__ import annotations

from locshare.proto._ratelimit import KeyedLimiter, TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(10.0, 10.0, now=0.0)
    assert all(bucket.take(0.0) for _ in range(10))
    assert not bucket.take(0.0)
    assert bucket.take(0.1)  # one token back after 100 ms
    assert not bucket.take(0.1)
    assert bucket.is_full(5.0)


def test_keyed_limiter_per_key_and_window() -> None:
    limiter = KeyedLimiter(3, 60.0)
    assert [limiter.hit("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.hit("b", 0.0)  # other keys unaffected
    assert limiter.hit("a", 20.0)  # 60 s / 3 = one event per 20 s
    assert limiter.refused == 1


def test_keyed_limiter_memory_is_bounded() -> None:
    limiter = KeyedLimiter(5, 60.0, max_keys=100)
    for i in range(10_000):
        limiter.hit(f"addr-{i}", float(i) * 0.001)
        assert len(limiter) <= 100
    # A key that is actively limited survives pruning of idle ones when possible.
    limiter = KeyedLimiter(2, 60.0, max_keys=10)
    limiter.hit("busy", 0.0)
    limiter.hit("busy", 0.0)
    for i in range(5):
        limiter.hit(f"idle-{i}", 0.0)
    assert not limiter.hit("busy", 0.0)


def test_retry_after_is_when_the_bucket_admits_again() -> None:
    limiter = KeyedLimiter(3, 60.0)  # one event per 20 s
    for _ in range(3):
        assert limiter.hit("a", 0.0)
    assert not limiter.hit("a", 0.5)
    wait = limiter.retry_after_s("a", 0.5)
    assert wait == 20  # 19.5 s, rounded up to whole seconds
    assert not limiter.hit("a", 0.5 + wait - 1)
    assert limiter.retry_after_s("a", 0.5 + wait - 1) == 1
    assert limiter.hit("a", 0.5 + wait)
    # A key without a bucket, or with tokens, may retry at once (never "0" seconds).
    assert limiter.retry_after_s("unknown", 0.0) == 1
    bucket = TokenBucket(2.0, 4.0, now=0.0)
    assert bucket.wait_s(0.0) == 0.0
    for _ in range(4):
        bucket.take(0.0)
    assert bucket.wait_s(0.0) == 0.5
