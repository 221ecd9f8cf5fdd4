"""OnceCache: concurrent misses on one key compute once; LRU bound; errors reach the waiters and are not cached."""

from __future__ import annotations

import threading
import time

import pytest

from r1aqa_plugin.once_cache import OnceCache


def test_concurrent_misses_compute_once_and_all_get_the_value():
    cache: OnceCache[int] = OnceCache(4)
    calls = []
    start = threading.Barrier(8)

    def compute() -> int:
        calls.append(1)
        time.sleep(0.2)  # the other seven threads arrive while this runs
        return 42

    results = []

    def worker() -> None:
        start.wait()
        results.append(cache.get("clip", compute))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42] * 8 and len(calls) == 1
    assert (cache.misses, cache.hits) == (1, 7)


def test_least_recently_used_is_evicted():
    cache: OnceCache[str] = OnceCache(2)
    cache.get("a", lambda: "A")
    cache.get("b", lambda: "B")
    cache.get("a", lambda: "not called")  # a is now the most recent
    cache.get("c", lambda: "C")
    assert len(cache) == 2 and cache.get("a", lambda: "again") == "A" and cache.get("b", lambda: "B2") == "B2"


def test_an_error_reaches_every_waiter_and_the_next_call_retries():
    cache: OnceCache[int] = OnceCache(2)
    start = threading.Barrier(3)
    errors = []

    def boom() -> int:
        time.sleep(0.2)
        raise ValueError("row 7: bad clip")

    def worker() -> None:
        start.wait()
        try:
            cache.get("k", boom)
        except ValueError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["row 7: bad clip"] * 3
    assert cache.get("k", lambda: 5) == 5  # not cached: computed again


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        OnceCache(0)
