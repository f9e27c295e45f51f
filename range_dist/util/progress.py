"""Progress lines (done, rate, ETA) for long work, and the closing run report."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def _fmt_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class Progress:
    """Prints ``label: done/total units (pct), rate/s, ETA`` at most every ``interval`` seconds.

    Attributes:
        total: units of work expected (tiles, chips, ...).
        unit: name of a unit.
        points_total: optional second counter (points), reported as a rate.
    """

    total: int
    unit: str = "items"
    label: str = "progress"
    points_total: int = 0
    interval: float = 2.0
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    points: int = 0
    start: float = field(default_factory=time.perf_counter)
    _last: float = 0.0

    def update(self, units: int = 1, points: int = 0, force: bool = False) -> None:
        self.done += units
        self.points += points
        now = time.perf_counter()
        if force or self.done >= self.total or now - self._last >= self.interval:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def line(self) -> str:
        elapsed = max(self.elapsed, 1e-9)
        frac = self.done / self.total if self.total else 1.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("inf")
        parts = [f"{self.label}: {self.done}/{self.total} {self.unit} ({100 * frac:.0f}%)"]
        if self.points:
            parts.append(f"{self.points / elapsed:,.0f} points/s")
        else:
            parts.append(f"{self.done / elapsed:.2f} {self.unit}/s")
        parts.append(f"elapsed {_fmt_seconds(elapsed)}, ETA {_fmt_seconds(eta)}")
        return ", ".join(parts)
