"""A small thread-safe LRU cache whose concurrent misses on one key compute the value once.

verl's agent loop runs a GRPO group's n samples (R1-AQA: 8) in executor threads at the same moment, and each one
decodes the same clip and extracts the same features. A plain cache misses 8 times at once; here the first thread
computes and the others wait for its value (or its exception).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class _Flight(Generic[V]):
    """One computation in progress: waiters read its value or error once ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class OnceCache(Generic[V]):
    """LRU of ``capacity`` values; ``get(key, compute)`` runs ``compute`` once per key, however many threads ask."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"OnceCache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._flights: dict[Hashable, _Flight[V]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value of ``key``, computing it with ``compute`` unless another thread has or is doing so.

        An exception reaches every thread that waited for that computation and is not cached: the next call
        computes again.
        """
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                return self._values[key]
            flight = self._flights.get(key)
            owner = flight is None
            if owner:
                flight = self._flights[key] = _Flight()
                self.misses += 1
            else:
                self.hits += 1
        if not owner:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[return-value]
        try:
            flight.value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
                if flight.error is None:
                    self._values[key] = flight.value  # type: ignore[assignment]
                    while len(self._values) > self.capacity:
                        self._values.popitem(last=False)
            flight.done.set()
        return flight.value

    def clear(self) -> None:
        """Forget every value (computations in flight finish and are stored)."""
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
