"""Per-stage wall-clock seconds of the retrieval (what the grid benchmark's stage table reads).

A ``perf_counter`` pair per stage call: no device synchronisation, so on CUDA a stage's time is
when its work was queued, not when it ran (the CPU figures are exact); cost ~1 µs per call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimes:
    """Seconds and calls per named stage, summed since the last :meth:`reset`.

    Attributes:
        seconds: stage name -> summed wall seconds.
        calls: stage name -> number of timed calls.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block under ``name`` (nested stages are counted in both)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def merge(self, other: StageTimes) -> None:
        for name, seconds in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.calls[name] = self.calls.get(name, 0) + other.calls.get(name, 0)

    def total(self) -> float:
        return sum(self.seconds.values())
