"""Run a database-build plan: the executor reads and encodes batches, this (the single writer) appends."""

from __future__ import annotations

import io
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from range_dist.database.append import DatabaseAppender, RowBatch
from range_dist.encoders.image import get_spec
from range_dist.errors import STOP_SIGNALS, Interrupted, StoreWriteError
from range_dist.jobs.build.plan import BuildPlan
from range_dist.jobs.build.steps import ChipOutcome
from range_dist.util import fault_injection as faults
from range_dist.util.lease import StoreLease
from range_dist.util.progress import Progress
from range_dist.util.stores import StoreLocation

#: What an executor yields per batch: the encoded rows (None when no chip was accepted) and the failures.
EncodedBatch = tuple[RowBatch | None, list[ChipOutcome]]


class BatchExecutor(Protocol):
    """HOW batches are read and encoded (:mod:`range_dist.executors`); the plan says WHAT."""

    def encode_batches(self, plan: BuildPlan) -> Iterable[EncodedBatch]:
        """Yield one :data:`EncodedBatch` per batch of ``plan.batches()``, in completion order."""
        ...


@dataclass
class BuildReport:
    """Counts and timings of a run (written to the database attributes as ``build_report``)."""

    locations: int = 0
    skipped_done: int = 0
    rows_written: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"locations": self.locations, "skipped_done": self.skipped_done, "rows_written": self.rows_written,
                "failures": dict(self.failures), "wall_s": round(self.wall_s, 3),
                "chips_per_s": round(self.rows_written / self.wall_s, 3) if self.wall_s else None}

    def summary(self) -> str:
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        rate = self.rows_written / self.wall_s if self.wall_s else 0.0
        return (f"build-db: {self.rows_written} rows written, {self.skipped_done} already done, "
                f"{sum(self.failures.values())} failed ({fails}) of {self.locations} locations in "
                f"{self.wall_s:.1f} s ({rate:.2f} chips/s)")


def run_build(plan: BuildPlan, executor: BatchExecutor, quiet: bool = False) -> BuildReport:
    """Create, replace or resume the database as planned, then append each encoded batch.

    Keeps the failure table (a location that succeeds later leaves it), reports progress, and
    records the run summary in the attributes.
    """
    config = plan.config
    with StoreLease(config.out, f"build-db -> {config.out}", takeover=config.takeover) as lease:
        if lease.replaced is not None and not quiet:
            print(f"took over the lease of {lease.replaced.describe(time.time())}: {lease.replaced_reason}",
                  file=sys.stderr)
        return _run_leased(plan, executor, quiet, lease.report())


def _run_leased(plan: BuildPlan, executor: BatchExecutor, quiet: bool, lease: dict[str, Any]) -> BuildReport:
    config = plan.config
    appender = DatabaseAppender.open_or_create(config.out, get_spec(config.key_encoder).dim,
                                               get_spec(config.value_encoder).dim, plan.attrs,
                                               overwrite=config.overwrite)
    report = BuildReport(locations=len(plan.locations), skipped_done=plan.done)
    failures = appender.failures()
    for loc_id in appender.done_ids():
        failures.pop(loc_id, None)
    progress = Progress(total=len(plan.todo), unit="locations", label="build-db",
                        stream=io.StringIO() if quiet else sys.stderr)
    start = time.perf_counter()
    try:
        _append_all(plan, executor, appender, failures, report, progress)
    except STOP_SIGNALS as exc:
        raise Interrupted.after(
            exc, f"{report.rows_written} new rows ({sum(report.failures.values())} failed, {plan.done} done before) "
            f"of {len(plan.locations)} locations; committed rows are kept", config.out) from None
    report.wall_s = time.perf_counter() - start
    appender.finish({**report.as_dict(), "lease": lease})
    if not quiet:
        print(report.summary())
    return report


def _append_all(plan: BuildPlan, executor: BatchExecutor, appender: DatabaseAppender,
                failures: dict[str, tuple[str, str]], report: BuildReport, progress: Progress) -> None:
    """Append each encoded batch (the single writer) and keep the failure table."""
    config = plan.config
    location = StoreLocation.parse(config.out)
    for rows, failed in executor.encode_batches(plan):
        try:
            if rows is not None:
                with location.errors("appending a batch to", writing=True):  # object storage: one-line errors
                    appender.append(rows)
                report.rows_written += len(rows)
                for loc_id in rows.provenance["location_id"]:
                    failures.pop(str(loc_id), None)
            for outcome in failed:
                failures[outcome.location_id] = (outcome.reason or "unknown", outcome.detail)
                report.failures[outcome.reason or "unknown"] += 1
            with location.errors("appending a batch to", writing=True):  # object storage: one-line errors
                appender.set_failures(failures)
        except OSError as exc:  # disk full, quota, I/O error: the batch's rows are not committed
            raise StoreWriteError.of(exc, f"appending a batch to {config.out}", "Its rows are not committed") from exc
        progress.update((len(rows) if rows is not None else 0) + len(failed))
        faults.after_batch()
