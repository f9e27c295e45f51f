"""The write-behind of the local executor: each tile's write overlaps the next tile's compute, one write
in flight, results in order from the caller's thread, errors raised with their own message, and no
writer left running when the executor stops."""

from __future__ import annotations

import threading
import time

import pytest

from range_dist.executors.write_behind import WriteBehind
from range_dist.grid.spec import TileKey
from range_dist.jobs.grid.steps import TileResult


def _result(n: int) -> TileResult:
    return TileResult(TileKey(0, n, 0, 1, n, n + 1), 1, n, 0.0, 0)


class Writes:
    """Writes that record which thread ran them and how many ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.threads: set[str] = set()
        self.finished: list[int] = []

    def write(self, n: int, seconds: float = 0.05, fail: bool = False) -> TileResult:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
        if fail:
            raise OSError(28, "No space left on device", f"tile {n}")
        self.finished.append(n)
        return _result(n)


def _writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tile-writer")]


def test_writes_overlap_the_next_compute_one_at_a_time_reported_in_order() -> None:
    writes, reported, reporters = Writes(), [], set()
    started = [threading.Event() for _ in range(6)]
    computed = [threading.Event() for _ in range(6)]

    def on_result(result: TileResult) -> None:
        reported.append(result.points)
        reporters.add(threading.current_thread().name)

    def write(n: int) -> TileResult:
        started[n].set()
        # a write finishes only once the next tile's compute has run: without the overlap this waits in vain
        assert n == 4 or computed[n + 1].wait(timeout=10)
        return writes.write(n, seconds=0.01)

    with WriteBehind(on_result) as writer:
        for n in range(5):
            if n:  # this tile's compute runs while the previous tile is being written
                assert started[n - 1].wait(timeout=10)
            computed[n].set()
            writer.submit(lambda n=n: write(n))
    assert reported == [0, 1, 2, 3, 4]
    assert reporters == {threading.current_thread().name}  # on_result need not be thread-safe
    assert writes.threads and all(name.startswith("tile-writer") for name in writes.threads)
    assert writes.most_at_once == 1  # at most two tile blocks held: one written, one computed
    assert _writer_threads() == []


def test_a_failed_write_is_raised_with_its_own_error_and_stops_the_loop() -> None:
    writes, reported = Writes(), []
    computed = []
    with pytest.raises(OSError, match="No space left on device"), WriteBehind(lambda r: reported.append(r.points)) as w:
        for n in range(5):
            computed.append(n)
            w.submit(lambda n=n: writes.write(n, fail=n == 1))
    # tile 1's error surfaces when tile 2 is handed over: tile 2 was computed, never written
    assert reported == [0] and writes.finished == [0]
    assert computed == [0, 1, 2]
    assert _writer_threads() == []


def test_the_last_write_failing_is_raised_at_the_end() -> None:
    writes = Writes()
    with pytest.raises(OSError, match="tile 2"), WriteBehind(lambda r: None) as writer:
        for n in range(3):
            writer.submit(lambda n=n: writes.write(n, fail=n == 2))
    assert writes.finished == [0, 1]


def test_stopping_early_finishes_and_reports_the_write_in_flight() -> None:
    writes, reported = Writes(), []
    with pytest.raises(KeyboardInterrupt), WriteBehind(lambda r: reported.append(r.points)) as writer:
        writer.submit(lambda: writes.write(0, seconds=0.3))
        raise KeyboardInterrupt  # a stop signal during the next tile's compute
    # the tile was written and marked: reported, so the run report and the store agree
    assert reported == [0] and writes.finished == [0]
    assert _writer_threads() == []


def test_stopping_early_keeps_the_stop_when_the_write_in_flight_fails() -> None:
    writes, reported = Writes(), []
    with pytest.raises(KeyboardInterrupt), WriteBehind(lambda r: reported.append(r.points)) as writer:
        writer.submit(lambda: writes.write(0, fail=True))
        raise KeyboardInterrupt
    assert reported == []  # that tile stays missing: the resume redoes it
    assert _writer_threads() == []
