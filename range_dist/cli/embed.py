"""Embedding commands: ``embed-points`` (a file of points) and ``embed-grid`` (the main job)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any


def run_embed_points(args: argparse.Namespace) -> int:
    """Embed the points of a CSV/Parquet file with RANGE / RANGE+."""
    from range_dist import RangeEncoder, RetrievalDatabase, __version__, load_satclip_location_encoder
    from range_dist.config.values import check_tolerance, parse_betas, parse_device
    from range_dist.locations.points_io import read_points, write_embeddings
    from range_dist.util.downloads import fetch_input
    from range_dist.util.outputs import check_output_location
    from range_dist.util.progress import Progress

    betas = parse_betas(args.betas)
    tolerance = check_tolerance(args.mode, args.tolerance)
    parse_device(args.device)
    out = Path(args.out)
    check_output_location(out, overwrite=args.overwrite)  # before any computing
    points = read_points(args.points)
    # --satclip / --db may be URLs: downloaded once into the cache, SHA-256 checked (as embed-grid)
    checkpoint = fetch_input(args.satclip, "--satclip")
    location = load_satclip_location_encoder(checkpoint.path, harmonics=args.harmonics, trust=args.trust_checkpoint)
    db = RetrievalDatabase.open(args.db)
    if args.dry_run:
        print(f"embed-points plan: read {args.points} ({len(points):,} points), {checkpoint.source}, {db.source} "
              f"({db.rows:,} rows); compute {args.variant} at β={list(betas)}, {args.mode} mode; write {out} "
              f"({len(betas)} × {len(points):,} × {db.value_dim + db.key_dim} float32)")
        return 0
    encoder = RangeEncoder(location, db, variant=args.variant, device=args.device, mode=args.mode,
                           tolerance=tolerance, precision=args.precision)
    retrieval: dict[str, object] = {"mode": "exact"}
    if args.mode == "fast":
        start = time.perf_counter()
        plan = encoder.plan_fast(points, betas)
        retrieval = plan.describe()
        print(f"fast mode: measured error {plan.measured_error:.2e} <= tolerance {plan.tolerance:g} on "
              f"{plan.validation_points} of the points (value rank {plan.value_rank}, interpolated "
              f"{plan.spacing or 'none'}; planned in {time.perf_counter() - start:.1f} s)")
    progress = Progress(total=len(points), unit="points", label="embed-points")
    start = time.perf_counter()
    embeddings = encoder.encode(points, betas, on_progress=lambda n: progress.update(n))
    wall = time.perf_counter() - start
    attrs = {
        "range_dist_version": __version__,
        "retrieval": retrieval,
        "precision": encoder.precision_used,
        "variant": args.variant,
        "betas": list(betas),
        "satclip": checkpoint.source,  # the URL when given one (never a secret), else the path
        "satclip_sha256": checkpoint.sha256,
        "database": db.source,
        "database_rows": db.rows,
        "harmonics": location.config.harmonics,
    }
    if encoder.fast is not None:
        attrs["fast_checks"] = dataclasses.asdict(encoder.fast.stats)
        print(encoder.fast.stats.summary())
    write_embeddings(out, points, betas, embeddings, attrs, overwrite=args.overwrite)
    print(f"embedded {len(points)} points x {len(betas)} β levels in {wall:.1f} s "
          f"({len(points) / max(wall, 1e-9):,.0f} points/s); wrote {out} {embeddings.shape}")
    return 0


def run_embed_grid(args: argparse.Namespace) -> int:
    """Embed a global (or bbox) lat/lon grid into a Zarr cube at several β levels (Ray or local)."""
    from range_dist.assets import materialize, resolve_assets, sample_models
    from range_dist.config.schema import from_sources
    from range_dist.jobs.grid.config import GridJobConfig
    from range_dist.jobs.grid.plan import GridInputs, build_plan, load_inputs

    config = from_sources(GridJobConfig, yaml_path=args.config, flags=args)
    assets = resolve_assets(config.satclip, config.db, config.sample_assets)
    if assets.origin != "given":
        print(f"using {assets.describe()}", file=sys.stderr)
    sample = assets.origin == "sample"
    resolved = dataclasses.replace(config, satclip=assets.checkpoint, db=assets.database)
    if args.dry_run:
        if assets.to_write:  # describe the run on the samples as they would be written, write nothing
            location, database = sample_models()
            inputs = GridInputs(location, database, Path(assets.checkpoint), assets.database, None, sample=True)
        else:
            inputs = load_inputs(resolved, sample=sample)
        print(build_plan(resolved, inputs).describe())
        return 0
    from range_dist.executors import executor_for
    from range_dist.jobs.grid.run import run_grid

    materialize(assets)  # writes the sample assets when they were asked for and are not there yet
    plan = build_plan(resolved, load_inputs(resolved, sample=sample))
    run_grid(plan, executor_for(config.executor, config.ray_address))
    return 0


def add_parsers(sub: Any) -> None:
    """Register the embedding commands."""
    from range_dist.config.schema import add_arguments
    from range_dist.config.values import MODES, PRECISIONS, VARIANTS
    from range_dist.jobs.grid.config import GridJobConfig

    p = sub.add_parser("embed-points", help=run_embed_points.__doc__, description=run_embed_points.__doc__)
    p.add_argument("--satclip", type=Path, required=True,
                   help="SatCLIP checkpoint (.ckpt or .safetensors): a local path, or an s3://, gs://, az://, "
                        "https:// URL (downloaded once into the cache, SHA-256 checked; pin with #sha256=HEX)")
    p.add_argument("--db", type=Path, required=True,
                   help="retrieval database (.npz or .zarr): a local path, or a URL (an .npz is downloaded like "
                        "--satclip; a .zarr on s3://, gs://, az:// is read in place)")
    p.add_argument("--variant", choices=VARIANTS, default="range+")
    p.add_argument("--betas", default="0.5", help="comma-separated β levels in [0, 1] (default 0.5)")
    p.add_argument("--points", type=Path, required=True, help="CSV or Parquet with lon, lat columns (degrees)")
    p.add_argument("--out", type=Path, required=True, help=".npz, .parquet or .zarr")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--harmonics", choices=["published", "exact", "closed-form"], default=None,
                   help="how to compute spherical harmonics (default: as the checkpoint was trained)")
    p.add_argument("--mode", choices=MODES, default="exact",
                   help="retrieval: exact (default), or fast = approximations validated to --tolerance")
    p.add_argument("--tolerance", type=float, default=None,
                   help="fast mode: largest relative error per point, ||fast - exact|| / ||exact|| (e.g. 1e-3)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="matrix products on a GPU (default fp32); a CPU always uses fp32")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs full pickle loading (can run code: only files you know)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the plan (reads only); write nothing")
    p.set_defaults(handler=run_embed_points)

    p = sub.add_parser("embed-grid", help=run_embed_grid.__doc__, description=run_embed_grid.__doc__)
    p.add_argument("--config", type=Path, default=None, help="YAML file (workflows/*.yaml); flags override it")
    add_arguments(p, GridJobConfig)
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (reads only): no store, no asset written, no fast-mode planning")
    p.set_defaults(handler=run_embed_grid)
