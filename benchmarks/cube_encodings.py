"""Cube encodings compared on one grid: bytes per cell, store size, error against float32, probe scores.

Writes the same grid (sample assets, a coarse global grid) as float32 / float16 / int8 × ``beta`` /
``heads`` layouts with the grid job, then for each: bytes per cell (raw, before compression) and the
store's size on disk; the relative error per cell ``||x - x_f32|| / ||x_f32||`` over every cell and
β level (max and mean) against the float32 beta-layout cube; the linear-probe scores of the offline
tasks (land/ocean, Köppen, country, checkerboard) from embeddings sampled from each cube at β=0.5;
and the decode (read) throughput with peak memory, with its ratio to reading the float32 cube.

    python benchmarks/cube_encodings.py [--resolution 3] [--size 2000] [--betas 0,0.5,1]

The sample assets are UNTRAINED: the probe scores say what an encoding costs relative to float32,
not what RANGE scores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from range_dist.analysis.cube import open_cube
from range_dist.analysis.probes import cube_encoder, run_probes
from range_dist.analysis.tasks import make_task
from range_dist.assets import write_sample_assets
from range_dist.cube.store import read_encoding
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig

ENCODINGS = [  # (label, dtype, quantize, layout)
    ("float32 beta", "float32", "none", "beta"),
    ("float16 beta", "float16", "none", "beta"),
    ("int8 beta", "float32", "int8", "beta"),
    ("float32 heads", "float32", "none", "heads"),
    ("float16 heads", "float16", "none", "heads"),
    ("int8 heads", "float32", "int8", "heads"),
]
TASKS = ("landocean", "koppen", "country", "checkerboard:100")


def store_bytes(path: Path) -> int:
    """Bytes of the embedding arrays' files (the tile records and metadata left out)."""
    names = {v.name for v in read_encoding(path).variables()}
    return sum(f.stat().st_size for name in names for f in (path / name).rglob("*") if f.is_file())


def relative_errors(values: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max, mean) over cells and β of ||x - ref|| / ||ref|| (cells NaN in the reference left out)."""
    norm = np.linalg.norm(ref, axis=-1)
    ok = np.isfinite(norm) & (norm > 0)
    rel = np.linalg.norm(values.astype(np.float64) - ref, axis=-1)[ok] / norm[ok]
    return float(rel.max()), float(rel.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=float, default=3.0)
    parser.add_argument("--betas", default="0,0.5,1")
    parser.add_argument("--size", type=int, default=2000, help="points per probe task (train+test)")
    args = parser.parse_args()
    betas = tuple(float(b) for b in args.betas.split(","))
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assets = write_sample_assets(root / "assets", rows=1200, seed=0)
        cubes: dict[str, Path] = {}
        cells = 0
        for label, dtype, quantize, layout in ENCODINGS:
            out = root / (label.replace(" ", "_") + ".zarr")
            cfg = GridJobConfig(resolution=args.resolution, betas=betas, satclip=assets.checkpoint,
                                db=assets.database, out=out, dtype=dtype,  # type: ignore[arg-type]
                                quantize=quantize, layout=layout,  # type: ignore[arg-type]
                                tile_size=30, chunk_size=15, executor="local")
            start = time.perf_counter()
            embed_grid(cfg, log=open("/dev/null", "w"))  # noqa: SIM115 - the run's progress is not the table
            cells = cfg.grid.points
            print(f"{label}: written in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            cubes[label] = out
        ref = open_cube(cubes["float32 beta"], beta=list(betas))["embedding"].values.astype(np.float64)
        tasks = [make_task(t, size=args.size, seed=0) for t in TASKS]
        rows = []
        for label, _, _, _ in ENCODINGS:
            path = cubes[label]
            enc = read_encoding(path)
            rss0 = proc.memory_info().rss
            start = time.perf_counter()
            values = open_cube(path, beta=list(betas))["embedding"].values
            read_s = time.perf_counter() - start
            peak_mib = max(proc.memory_info().rss - rss0, 0) / 2**20
            err_max, err_mean = relative_errors(values, ref)
            del values
            results = run_probes(tasks, [cube_encoder(open_cube(path, beta=0.5), 0.5, method="bilinear",
                                                      name=label)])
            scores = {r.task: r.score for r in results}
            rows.append((label, enc.bytes_per_cell(), store_bytes(path), err_max, err_mean, scores,
                         cells * len(betas) / read_s, peak_mib))
    ref_scores = rows[0][5]
    task_names = list(ref_scores)
    print(f"\nGrid: {args.resolution}° global, {cells:,} cells, β = {list(betas)} (K = {len(betas)}), "
          "UNTRAINED sample assets (D = 1024 values + 256 q̂); probes at β = 0.5, "
          f"{args.size} points per task, bilinear sampling.\n")
    head = ("| encoding | bytes/cell (raw, K β) | store (MiB, compressed) | max rel. err | mean rel. err | "
            + " | ".join(f"{t} (Δ vs f32)" for t in task_names) + " | decode cells·β/s (× f32) |")
    print(head)
    print("|" + "---|" * (6 + len(task_names)))
    ref_rate = rows[0][6]  # decoding the float32 beta cube: the reference, same run, same data
    for label, bpc, size, emax, emean, scores, rate, _peak in rows:
        ratio = rate / ref_rate
        cols = " | ".join(f"{scores[t]:.3f} ({scores[t] - ref_scores[t]:+.3f})" for t in task_names)
        print(f"| {label} | {bpc:,} | {size / 2**20:.2f} | {emax:.2e} | {emean:.2e} | {cols} | "
              f"{rate:,.0f} ({ratio:.2f}×) |")
    print(f"\npeak RSS growth while decoding: {max(r[7] for r in rows):.0f} MiB; "
          f"process peak RSS {proc.memory_info().rss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
