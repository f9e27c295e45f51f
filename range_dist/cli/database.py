"""Database commands: ``import-db``, ``export-db``, ``db-info``, ``sample-locations``, ``build-db``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from range_dist.errors import ConfigError
from range_dist.util.outputs import check_output_location


def _sample_note(info: dict[str, Any]) -> str | None:
    """What db-info says about a database that is not the published one (None for a regular one).

    Rows that ``build-db`` made through the STAC pipeline are real chips, never "synthetic", whatever
    encoders made them; only rows made up by ``sample-assets`` are synthetic.
    """
    if not info.get("sample"):
        return None
    label = info.get("assets_label") or info.get("sample_note")
    if str(info.get("origin", "")).startswith("stac:"):
        return (f"not the published database: rows built through the STAC pipeline from chips, with "
                f"{label or 'sample (untrained) encoders'}")
    return "sample database (synthetic rows), not the published one"


def _print_db_info(db: Any, sample: int) -> None:
    from range_dist.database import check_row_alignment

    info = db.describe()
    print(f"database:   {db.source}")
    print(f"rows:       {db.rows}")
    print(f"dims:       keys {db.key_dim}, values {db.value_dim}")
    print(f"key model:  {info.get('key_model', 'unknown')}")
    print(f"value model:{' ' if info.get('value_model') else ''}{info.get('value_model', 'unknown')}")
    print(f"origin:     {info.get('origin', 'unknown')}")
    note = _sample_note(info)
    if note:
        print(f"NOTE:       {note}")
    lon, lat = db.locations[:, 0], db.locations[:, 1]
    print(f"extent:     lon [{lon.min():.2f}, {lon.max():.2f}], lat [{lat.min():.2f}, {lat.max():.2f}]")
    print(f"provenance: {', '.join(sorted(db.provenance)) or 'none'}")
    print(check_row_alignment(db, sample=sample).summary())


def run_import_db(args: argparse.Namespace) -> int:
    """Import a published-layout .npz database into the Zarr form."""
    from range_dist.database import RetrievalDatabase
    from range_dist.util.stores import StoreLocation

    out = StoreLocation.parse(args.out, "--out")
    if not out.name.endswith(".zarr"):
        raise ConfigError(f"--out {args.out}: the database store must end in .zarr")
    check_output_location(out, overwrite=args.overwrite)
    db = RetrievalDatabase.open(args.npz)
    if args.dry_run:
        print(f"import-db plan: read {args.npz} ({db.rows} rows); write {out}"
              f"{' (replacing it)' if out.exists() else ''}")
        return 0
    written = db.to_zarr(out, overwrite=args.overwrite)
    print(f"wrote {written}")
    _print_db_info(RetrievalDatabase.open(out.as_arg()), args.sample)
    return 0


def run_export_db(args: argparse.Namespace) -> int:
    """Export a database to the published .npz layout or to GeoParquet."""
    from range_dist.database import RetrievalDatabase

    out = Path(args.out)
    if out.suffix not in (".npz", ".parquet", ".geoparquet"):
        raise ConfigError(f"--out {out}: unsupported export type {out.suffix!r}; use .npz or .parquet (GeoParquet)")
    check_output_location(out, overwrite=args.overwrite)
    db = RetrievalDatabase.open(args.db)
    if args.dry_run:
        print(f"export-db plan: read {args.db} ({db.rows} rows); write {out}")
        return 0
    if out.suffix == ".npz":
        db.to_npz(out, overwrite=args.overwrite)
    else:
        from range_dist.database.geoparquet import to_geoparquet

        to_geoparquet(db, out, overwrite=args.overwrite)
    print(f"wrote {out} ({db.rows} rows)")
    return 0


def run_db_info(args: argparse.Namespace) -> int:
    """Print rows, dimensions, models and a row-alignment sanity check."""
    from range_dist.database import RetrievalDatabase

    _print_db_info(RetrievalDatabase.open(args.db), args.sample)
    return 0


def run_sample_locations(args: argparse.Namespace) -> int:
    """Sample locations uniformly on the sphere's land, with ids (CSV/Parquet)."""
    from range_dist.locations.sampling import sample_locations, write_locations

    if Path(args.out).suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"--out {args.out}: use a .parquet or .csv file")
    check_output_location(args.out, overwrite=args.overwrite)
    if args.dry_run:
        print(f"sample-locations plan: {args.count} locations (seed {args.seed}, "
              f"{'land and ocean' if args.include_ocean else 'land only'}) -> {args.out}")
        return 0
    locs = sample_locations(args.count, seed=args.seed, land_only=not args.include_ocean)
    write_locations(locs, args.out, overwrite=args.overwrite)
    print(f"wrote {len(locs)} locations to {args.out}")
    return 0


def run_build_db(args: argparse.Namespace) -> int:
    """Build a retrieval database from Sentinel-2 L2A on a STAC API (SatCLIP keys, SatMAE values)."""
    from range_dist.config.schema import from_sources
    from range_dist.executors import executor_for
    from range_dist.jobs.build.config import BuildConfig
    from range_dist.jobs.build.plan import build_plan
    from range_dist.jobs.build.run import run_build

    config = from_sources(BuildConfig, yaml_path=args.config, flags=args)
    plan = build_plan(config)  # reads only: a dry run stops here
    print(plan.describe())
    if args.dry_run:
        return 0
    report = run_build(plan, executor_for(config.executor, config.ray_address))
    return 0 if report.rows_written + report.skipped_done > 0 or not plan.todo else 1


def add_parsers(sub: Any) -> None:
    """Register the database commands."""
    from range_dist.config.schema import add_arguments
    from range_dist.jobs.build.config import BuildConfig

    def add(name: str, handler: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=handler.__doc__, description=handler.__doc__)
        p.set_defaults(handler=handler)
        return p

    p = add("import-db", run_import_db)
    p.add_argument("npz", type=Path,
                   help="published-layout database (.npz): a local path, or an s3://, gs://, az://, https:// URL "
                        "(downloaded once into the cache, SHA-256 checked; pin with #sha256=HEX)")
    p.add_argument("--out", type=Path, required=True,
                   help="Zarr database to write (.zarr): a local path, or s3://, gs://, az:// (credentials from the "
                        "environment)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--sample", type=int, default=2000, help="rows used by the alignment check")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")

    p = add("export-db", run_export_db)
    p.add_argument("db", type=Path)
    p.add_argument("--out", type=Path, required=True, help=".npz (published layout) or .parquet (GeoParquet)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")

    p = add("db-info", run_db_info)
    p.add_argument("db", type=Path)
    p.add_argument("--sample", type=int, default=2000, help="rows used by the alignment check")

    p = add("sample-locations", run_sample_locations)
    p.add_argument("--count", type=int, required=True, help="number of locations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-ocean", action="store_true", help="do not restrict to land")
    p.add_argument("--out", type=Path, required=True, help=".parquet or .csv (location_id, lon, lat)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")

    p = add("build-db", run_build_db)
    p.add_argument("--config", type=Path, default=None, help="YAML file (the settings below); flags override it")
    add_arguments(p, BuildConfig)
    p.add_argument("--dry-run", action="store_true", help="print the plan (reads only); write nothing")
