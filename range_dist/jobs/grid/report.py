"""The run report of the grid job: counts and rates, printed at the end and stored in the cube."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from range_dist.cube.store import TILE_SKIPPED
from range_dist.jobs.grid.steps import TileResult
from range_dist.retrieval.fast.retriever import FastStats


@dataclass
class RunReport:
    """Counts and rates of a run (printed at the end and stored in the cube)."""

    tiles_total: int = 0
    tiles_already_done: int = 0
    tiles_computed: int = 0
    tiles_skipped: int = 0
    points: int = 0
    kernel_seconds: float = 0.0
    bytes_written: int = 0
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0
    parallel_workers: int = 1
    executor: str = "local"
    fast_checks: FastStats | None = None
    tiles_computed_total: int = 0
    lease: dict[str, Any] | None = None
    fast_plan: dict[str, Any] | None = None
    # where each tile was computed: node id → {"tiles", "points", "workers", "payload_bytes"}, and
    # per tile {"tile": [row, col], "node_id", "worker"} (the executor fills them; see TileResult)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tile_nodes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: TileResult) -> None:
        if result.fast_checks is not None:
            if self.fast_checks is None:
                self.fast_checks = FastStats()
            self.fast_checks.merge(result.fast_checks)
        if result.status == TILE_SKIPPED:
            self.tiles_skipped += 1
        else:
            self.tiles_computed += 1
        self.points += result.points
        self.kernel_seconds += result.kernel_seconds
        self.bytes_written += result.bytes_written
        self._place(result)

    def _place(self, result: TileResult) -> None:
        """Count the tile on the node(s) that computed it; a node's payload copy is counted once."""
        if not result.node_id:
            return
        self.tile_nodes.append({"tile": [result.tile.row, result.tile.col], "node_id": result.node_id,
                                "worker": result.worker})
        for node in result.node_id.split("+"):  # shards of one tile on several nodes
            entry = self.nodes.setdefault(node, {"tiles": 0, "points": 0, "workers": [], "payload_bytes": 0})
            entry["tiles"] += 1
            entry["points"] += result.points
            for worker in result.worker.split("+"):
                if worker and worker not in entry["workers"]:
                    entry["workers"].append(worker)
            entry["payload_bytes"] = max(entry["payload_bytes"], result.node_payload_bytes)

    @property
    def payload_bytes_moved(self) -> int:
        """Bytes of payload (location weights + database) moved to the nodes: one copy per node."""
        return sum(int(n["payload_bytes"]) for n in self.nodes.values())

    @property
    def points_per_second(self) -> float:
        """End-to-end points/s of the tile loop (Ray start-up and model loading excluded)."""
        loop = self.wall_seconds - self.startup_seconds
        return self.points / loop if loop > 0 else 0.0

    @property
    def kernel_points_per_second(self) -> float:
        """Points/s over the summed time spent in the kernel (``RangeEncoder.encode``) per worker.

        Each actor runs two tiles at a time so that writes overlap compute; overlapping kernel
        calls then share the CPUs and this figure understates the kernel's own rate. The grid
        benchmark measures the kernel alone for the ratio it reports.
        """
        per_worker = self.kernel_seconds / max(self.parallel_workers, 1)
        return self.points / per_worker if per_worker > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "fast_checks": None if self.fast_checks is None else asdict(self.fast_checks),
            "payload_bytes_moved": self.payload_bytes_moved,
            "points_per_second": round(self.points_per_second, 1),
            "kernel_points_per_second": round(self.kernel_points_per_second, 1),
            "write_mb_per_second": round(
                self.bytes_written / 2**20 / max(self.wall_seconds - self.startup_seconds, 1e-9), 1
            ),
        }

    def summary(self, store: Path, assets_label: str | None = None) -> str:
        d = self.as_dict()
        return (
            (f"{assets_label}: " if assets_label else "")
            + f"run report: {self.tiles_computed} tiles computed, {self.tiles_skipped} skipped (no land), "
            f"{self.tiles_already_done} already done, of {self.tiles_total}; {self.points:,} points in "
            f"{self.wall_seconds:.1f} s ({self.startup_seconds:.1f} s start-up) = "
            f"{d['points_per_second']:,.0f} points/s (kernel "
            f"{d['kernel_points_per_second']:,.0f} points/s on {self.parallel_workers} worker(s)); "
            f"{self.bytes_written / 2**20:,.1f} MiB written ({d['write_mb_per_second']} MiB/s); "
            + self._nodes_text() + f"cube: {store}"
            + ("" if self.fast_checks is None else "\n" + self.fast_checks.summary())
            + self._fast_line()
        )

    def _nodes_text(self) -> str:
        """Which Ray nodes computed how many tiles, and the payload bytes moved to each (empty when local)."""
        ray_nodes = {k: v for k, v in self.nodes.items() if k != "local"}
        if not ray_nodes:
            return ""
        per_node = ", ".join(f"{k[:8]} {v['tiles']} tiles / {len(v['workers'])} actor(s) / "
                             f"{v['payload_bytes'] / 2**20:,.1f} MiB payload" for k, v in sorted(ray_nodes.items()))
        return (f"{len(ray_nodes)} Ray node(s) ({per_node}); {self.payload_bytes_moved / 2**20:,.1f} MiB payload "
                "moved in all (once per node, through the object store); ")

    def _fast_line(self) -> str:
        """What the fast mode decided (planned once per run, or reused on resume), if it was asked for."""
        plan = self.fast_plan
        if plan is None:
            return ""
        if plan.get("mode") != "fast":
            return f"\nfast mode fell back to exact: {plan.get('reason')}"
        estimate = plan.get("estimated_seconds") or {}
        fast, exact = estimate.get("fast", float("nan")), estimate.get("exact", float("nan"))
        return (f"\nfast mode planned in {plan.get('planning_seconds', 0.0):.1f} s (once per run; a resume reuses "
                f"it); estimated {fast:.1f} s against {exact:.1f} s exact")
