"""The ``range-dist`` command line: parse, load, call the library, report; nothing more.

Every :class:`~range_dist.errors.RangeDistError` becomes a one-paragraph message on stderr and
exit code 2 (no traceback); other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from range_dist.errors import ConfigError, RangeDistError

Handler = Callable[[argparse.Namespace], int]
_HANDLERS: dict[str, Handler] = {}


def parse_betas(text: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` -> (0.0, 0.5, 1.0), each in [0, 1], no duplicates."""
    try:
        betas = tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"--betas {text!r}: expected comma-separated numbers in [0, 1], e.g. 0,0.5,1") from exc
    if not betas:
        raise ConfigError("--betas is empty; give at least one β in [0, 1], e.g. 0.5")
    bad = [b for b in betas if not 0.0 <= b <= 1.0]
    if bad:
        raise ConfigError(f"--betas {text!r}: {bad[0]} is outside [0, 1]")
    if len(set(betas)) != len(betas):
        raise ConfigError(f"--betas {text!r}: a β level is repeated")
    return betas


def _command(name: str, help_text: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[name] = func
        func.__doc__ = help_text
        return func

    return register


# ---------------------------------------------------------------------------- assets
@_command("fetch-assets", "download the published SatCLIP checkpoint and RANGE database (huggingface_hub)")
def _fetch_assets(args: argparse.Namespace) -> int:
    from range_dist.assets import fetch_published_assets

    paths = fetch_published_assets(args.database, args.cache_dir)
    print(f"checkpoint: {paths.checkpoint}\ndatabase:   {paths.database}")
    return 0


@_command("sample-assets", "write an untrained SatCLIP-format checkpoint and a sample database (npz)")
def _sample_assets(args: argparse.Namespace) -> int:
    from range_dist.assets import SAMPLE_LABEL, write_sample_assets

    paths = write_sample_assets(args.dir, rows=args.rows, seed=args.seed, legendre_polys=args.legendre_polys,
                                capacity=args.capacity)
    print(f"{SAMPLE_LABEL}\ncheckpoint: {paths.checkpoint}\ndatabase:   {paths.database}")
    return 0


# ---------------------------------------------------------------------------- database
def _print_db_info(db: object, sample: int) -> None:
    from range_dist.database import RetrievalDatabase, check_row_alignment

    assert isinstance(db, RetrievalDatabase)
    info = db.describe()
    print(f"database:   {db.source}")
    print(f"rows:       {db.rows}")
    print(f"dims:       keys {db.key_dim}, values {db.value_dim}")
    print(f"key model:  {info.get('key_model', 'unknown')}")
    print(f"value model:{' ' if info.get('value_model') else ''}{info.get('value_model', 'unknown')}")
    print(f"origin:     {info.get('origin', 'unknown')}")
    if info.get("sample"):
        print("NOTE:       sample database (synthetic rows), not the published one")
    lon, lat = db.locations[:, 0], db.locations[:, 1]
    print(f"extent:     lon [{lon.min():.2f}, {lon.max():.2f}], lat [{lat.min():.2f}, {lat.max():.2f}]")
    print(f"provenance: {', '.join(sorted(db.provenance)) or 'none'}")
    print(check_row_alignment(db, sample=sample).summary())


@_command("import-db", "import a published-layout .npz database into the Zarr form")
def _import_db(args: argparse.Namespace) -> int:
    from range_dist.database import RetrievalDatabase

    db = RetrievalDatabase.open(args.npz)
    if Path(args.out).suffix != ".zarr":
        raise ConfigError(f"--out {args.out}: the database store must end in .zarr")
    db.to_zarr(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    _print_db_info(RetrievalDatabase.open(args.out), args.sample)
    return 0


@_command("export-db", "export a database to the published .npz layout or to GeoParquet")
def _export_db(args: argparse.Namespace) -> int:
    from range_dist.database import RetrievalDatabase

    db = RetrievalDatabase.open(args.db)
    out = Path(args.out)
    if out.suffix == ".npz":
        db.to_npz(out, overwrite=args.overwrite)
    elif out.suffix in (".parquet", ".geoparquet"):
        from range_dist.database.geoparquet import to_geoparquet

        to_geoparquet(db, out, overwrite=args.overwrite)
    else:
        raise ConfigError(f"--out {out}: unsupported export type {out.suffix!r}; use .npz or .parquet (GeoParquet)")
    print(f"wrote {out} ({db.rows} rows)")
    return 0


@_command("db-info", "print rows, dimensions, models and a row-alignment sanity check")
def _db_info(args: argparse.Namespace) -> int:
    from range_dist.database import RetrievalDatabase

    _print_db_info(RetrievalDatabase.open(args.db), args.sample)
    return 0


# ---------------------------------------------------------------------------- embedding
def _add_mode_arguments(p: argparse.ArgumentParser, default_mode: str | None) -> None:
    p.add_argument("--mode", choices=["exact", "fast"], default=default_mode,
                   help="retrieval: exact (default), or fast = approximations validated to --tolerance")
    p.add_argument("--tolerance", type=float, default=None,
                   help="fast mode: largest relative error per point, ||fast - exact|| / ||exact|| (e.g. 1e-3)")
    from range_dist.retrieval.engine import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="fp32" if default_mode else None,
                   help="matrix products on a GPU (default fp32); a CPU always uses fp32")


@_command("embed-points", "embed the points of a CSV/Parquet file with RANGE / RANGE+")
def _embed_points(args: argparse.Namespace) -> int:
    from range_dist import RangeEncoder, RetrievalDatabase, __version__, load_satclip_location_encoder
    from range_dist.points_io import read_points, write_embeddings
    from range_dist.progress import Progress

    betas = parse_betas(args.betas)
    points = read_points(args.points)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"output {out} already exists; pass --overwrite to replace it")
    location = load_satclip_location_encoder(args.satclip, harmonics=args.harmonics)
    db = RetrievalDatabase.open(args.db)
    encoder = RangeEncoder(location, db, variant=args.variant, device=args.device, mode=args.mode,
                           tolerance=args.tolerance, precision=args.precision)
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
        "satclip": str(args.satclip),
        "database": str(args.db),
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


@_command("embed-grid", "embed a global (or bbox) lat/lon grid into a Zarr cube at several β levels on Ray")
def _embed_grid(args: argparse.Namespace) -> int:
    from range_dist.grid.config import GridJobConfig
    from range_dist.grid.job import build_plan, run_plan

    overrides = {name: getattr(args, name, None) for name in GridJobConfig.field_names()}
    config = GridJobConfig.load(args.config, overrides)
    plan = build_plan(config)
    if args.dry_run:
        print(repr(plan))
        return 0
    run_plan(plan, executor=config.executor)
    return 0


# ---------------------------------------------------------------------------- building a database
@_command("sample-locations", "sample locations uniformly on the sphere's land, with ids (CSV/Parquet)")
def _sample_locations(args: argparse.Namespace) -> int:
    from range_dist.sampling import sample_locations, write_locations

    locs = sample_locations(args.count, seed=args.seed, land_only=not args.include_ocean)
    write_locations(locs, args.out, overwrite=args.overwrite)
    print(f"wrote {len(locs)} locations to {args.out}")
    return 0


@_command("build-db", "build a retrieval database from Sentinel-2 L2A on a STAC API (SatCLIP keys, SatMAE values)")
def _build_db(args: argparse.Namespace) -> int:
    from range_dist.database.build import BuildConfig, build_plan, run_build

    names = BuildConfig.field_names()
    overrides = {name: getattr(args, name, None) for name in names}
    if args.gdal:
        overrides["gdal"] = tuple(tuple(kv.split("=", 1)) for kv in args.gdal)
    config = BuildConfig.load(args.config, overrides)
    plan, appender = build_plan(config)
    print(repr(plan))
    if args.dry_run:
        return 0
    report = run_build(plan, appender)
    return 0 if report.rows_written + report.skipped_done > 0 or not plan.todo else 1


# ---------------------------------------------------------------------------- demo
@_command("demo", "the whole chain offline on a generated sample world: STAC build, Ray grid, maps, probes")
def _demo(args: argparse.Namespace) -> int:
    from range_dist.demo.run import DemoSettings, run_demo

    settings = DemoSettings(out=args.out, per_scene=args.per_scene, resolution=args.resolution,
                            satmae_depth=args.satmae_depth, probe_size=args.probe_size,
                            keep_serving=args.keep_serving)
    result = run_demo(settings)
    if not args.keep_serving:
        print(result.summary())
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from range_dist import __version__

    parser = argparse.ArgumentParser(prog="range-dist", description="RANGE geo-embeddings at planet scale.")
    parser.add_argument("--version", action="version", version=f"range-dist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=_HANDLERS[name].__doc__, description=_HANDLERS[name].__doc__)

    p = add("fetch-assets")
    p.add_argument("--database", choices=["med", "large"], default="med")
    p.add_argument("--cache-dir", type=Path, default=None, help="default $RANGE_DIST_CACHE or ~/.cache/range_dist")

    p = add("sample-assets")
    p.add_argument("dir", type=Path)
    p.add_argument("--rows", type=int, default=2000, help="database rows (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--legendre-polys", type=int, default=10, help="L of the sample checkpoint (default 10)")
    p.add_argument("--capacity", type=int, default=256, help="SIREN width of the sample checkpoint")

    p = add("import-db")
    p.add_argument("npz", type=Path, help="published-layout database (.npz)")
    p.add_argument("--out", type=Path, required=True, help="Zarr database to write (.zarr)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--sample", type=int, default=2000, help="rows used by the alignment check")

    p = add("export-db")
    p.add_argument("db", type=Path)
    p.add_argument("--out", type=Path, required=True, help=".npz (published layout) or .parquet (GeoParquet)")
    p.add_argument("--overwrite", action="store_true")

    p = add("db-info")
    p.add_argument("db", type=Path)
    p.add_argument("--sample", type=int, default=2000, help="rows used by the alignment check")

    p = add("embed-points")
    p.add_argument("--satclip", type=Path, required=True, help="SatCLIP checkpoint (.ckpt or .safetensors)")
    p.add_argument("--db", type=Path, required=True, help="retrieval database (.npz or .zarr)")
    p.add_argument("--variant", choices=["range+", "range"], default="range+")
    p.add_argument("--betas", default="0.5", help="comma-separated β levels in [0, 1] (default 0.5)")
    p.add_argument("--points", type=Path, required=True, help="CSV or Parquet with lon, lat columns (degrees)")
    p.add_argument("--out", type=Path, required=True, help=".npz, .parquet or .zarr")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--harmonics", choices=["published", "exact", "closed-form"], default=None,
                   help="how to compute spherical harmonics (default: as the checkpoint was trained)")
    _add_mode_arguments(p, "exact")
    p.add_argument("--overwrite", action="store_true")

    p = add("embed-grid")
    p.add_argument("--config", type=Path, default=None, help="YAML file (workflows/*.yaml); flags override it")
    p.add_argument("--resolution", type=float, default=None, help="cell size in degrees (default 1)")
    p.add_argument("--bbox", default=None, help="WEST,SOUTH,EAST,NORTH degrees (default: the globe)")
    p.add_argument("--land-only", action=argparse.BooleanOptionalAction, default=None,
                   help="embed land cells only; ocean cells are NaN and all-ocean tiles are skipped")
    p.add_argument("--variant", choices=["range+", "range"], default=None)
    p.add_argument("--betas", default=None, help="comma-separated β levels (default 0,0.5,1)")
    p.add_argument("--satclip", type=Path, default=None, help="SatCLIP checkpoint (default: published or sample)")
    p.add_argument("--db", type=Path, default=None, help="retrieval database (default: published or sample)")
    p.add_argument("--out", type=Path, default=None, help="output Zarr store (.zarr)")
    p.add_argument("--dtype", choices=["float16", "float32"], default=None, help="cube dtype (default float16)")
    p.add_argument("--tile-size", type=int, default=None, help="cells per tile side = one shard (default 256)")
    p.add_argument("--chunk-size", type=int, default=None, help="cells per inner chunk side (default 32)")
    p.add_argument("--num-actors", type=int, default=None, help="database replicas (default: one per GPU, or 1)")
    p.add_argument("--gpus-per-actor", type=float, default=None, help="default 1 when GPUs exist, else 0")
    p.add_argument("--cpus-per-actor", type=int, default=None, help="CPUs and torch threads per actor")
    p.add_argument("--db-shards", type=int, default=None, help="actors per replica, each with 1/S of the rows")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join ('auto', host:port); default: local Ray, or $RAY_ADDRESS in a Ray job")
    p.add_argument("--harmonics", choices=["published", "exact", "closed-form"], default=None)
    p.add_argument("--max-in-flight", type=int, default=None, help="tiles queued per replica (default 2)")
    p.add_argument("--memory-budget-mb", type=float, default=None, help="retrieval working memory per actor")
    p.add_argument("--executor", choices=["ray", "local"], default=None, help="default ray; local = no Ray")
    _add_mode_arguments(p, None)
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing store made with other settings")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")

    p = add("sample-locations")
    p.add_argument("--count", type=int, required=True, help="number of locations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-ocean", action="store_true", help="do not restrict to land")
    p.add_argument("--out", type=Path, required=True, help=".parquet or .csv (location_id, lon, lat)")
    p.add_argument("--overwrite", action="store_true")

    p = add("build-db")
    p.add_argument("--config", type=Path, default=None, help="YAML file (BuildConfig fields); flags override it")
    p.add_argument("--locations", type=Path, default=None, help="CSV/Parquet of location_id, lon, lat")
    p.add_argument("--out", type=Path, default=None, help="Zarr database to create or resume (.zarr)")
    p.add_argument("--stac-url", default=None, help="STAC API root (default: from --preset)")
    p.add_argument("--preset", choices=["earth-search", "planetary-computer"], default=None)
    p.add_argument("--collection", default=None, help="default sentinel-2-l2a")
    p.add_argument("--datetime", default=None, help="START/END (default 2021-01-01/2023-05-17)")
    p.add_argument("--max-cloud", type=float, default=None, help="percent, scene and chip (default 20)")
    p.add_argument("--max-nodata", type=float, default=None, help="fraction of a chip (default 0.1)")
    p.add_argument("--chip-size", type=int, default=None, help="10 m pixels per side (default 256)")
    p.add_argument("--radiometry", choices=["faithful", "harmonised"], default=None, help="default faithful")
    p.add_argument("--key-encoder", default=None, help="satclip-vit16 (default), satclip-resnet18, satclip-resnet50")
    p.add_argument("--key-checkpoint", type=Path, default=None, help="SatCLIP Lightning .ckpt (model.visual.*)")
    p.add_argument("--value-encoder", default=None, help="default satmae-vitl16-fmow-rgb")
    p.add_argument("--value-checkpoint", type=Path, default=None, help="SatMAE .pth or .safetensors")
    p.add_argument("--candidates", type=int, default=None, help="scenes tried per location (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="locations per batch/append (default 16)")
    p.add_argument("--executor", choices=["local", "ray"], default=None, help="default local")
    p.add_argument("--ray-address", default=None)
    p.add_argument("--num-readers", type=int, default=None, help="concurrent chip readers (default 2)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--gdal", action="append", default=None, metavar="NAME=VALUE", help="extra GDAL setting")
    p.add_argument("--limit", type=int, default=None, help="only the first N locations")
    p.add_argument("--search-group-deg", type=float, default=None,
                   help="search once per cell of this size (degrees) instead of once per location")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace instead of resuming")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")

    p = add("demo")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--keep-serving", action="store_true",
                   help="keep the local COG and STAC servers up after the run, until Ctrl-C")
    p.add_argument("--per-scene", type=int, default=3, help="database locations per scene, 8 scenes (default 3)")
    p.add_argument("--resolution", type=float, default=5.0, help="grid cell size in degrees (default 5)")
    p.add_argument("--satmae-depth", type=int, default=24,
                   help="SatMAE blocks: 24 = the ViT-L/16 architecture (default), fewer = a labelled reduced sample")
    p.add_argument("--probe-size", type=int, default=1000, help="points per probe task (default 1000)")

    from range_dist.analysis.cli import add_parsers as add_analysis_parsers

    add_analysis_parsers(sub)  # map, probe, sample (handlers set on the parsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``range-dist`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _HANDLERS.get(args.command) or getattr(args, "handler", None)
    assert handler is not None
    try:
        return handler(args)
    except RangeDistError as exc:
        print(f"range-dist {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
