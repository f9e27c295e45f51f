"""The cube-as-a-product commands: ``overviews``, ``stac``, ``similar`` and ``export-cog``.

Thin: parse, check the inputs and outputs before any computing, call the library, print. Errors are
:class:`~range_dist.errors.RangeDistError` subclasses, which ``range_dist.cli.main.main`` reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from range_dist.errors import ConfigError
from range_dist.util.outputs import check_output_location


def _one_beta(value: str) -> float:
    from range_dist.config.values import parse_betas

    betas = parse_betas(value)
    if len(betas) != 1:
        raise ConfigError(f"--beta {value}: give one β level, e.g. 0.5")
    return betas[0]


def _suffix(path: Path, flag: str, suffixes: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {path}: {what}; give a path ending in {suffixes[0]}")


def _replace(path: Path, overwrite: bool) -> None:
    """Remove an existing output file once it was allowed (``--overwrite``), so a failed run leaves no stale file."""
    if overwrite and path.is_file():
        path.unlink()


def run_overviews(args: argparse.Namespace) -> int:
    """``range-dist overviews CUBE [--min-resolution DEG]``."""
    from range_dist.cube.overviews import OVERVIEWS_GROUP, build_overviews, plan_levels, root_level
    from range_dist.util.stores import StoreLocation

    # a local path or an object-store URL (a Path made of a URL is read back as the URL it was)
    cube = StoreLocation.parse(args.cube, "CUBE")
    root = root_level(cube)
    levels = plan_levels(root, args.min_resolution)
    if args.dry_run:
        desc = ", ".join(f"{s.level}: {s.resolution:g}° {s.shape[0]}x{s.shape[1]}" for s in levels) or "none"
        print(f"overviews plan: {cube} ({root.resolution:g}°, {root.shape[0]}x{root.shape[1]}) -> levels {desc}")
        return 0
    if not levels:
        print(f"no overview level: the next one ({root.resolution * 2:g}°) is coarser than --min-resolution "
              f"{args.min_resolution:g}°")
        return 0
    for report in build_overviews(cube, min_resolution=args.min_resolution):
        print(f"level {report.level}: {report.resolution:g}° {report.shape[0]}x{report.shape[1]} cells; tiles "
              f"computed {report.computed}, skipped {report.skipped}, already done {report.already_done}")
    print(f"wrote {cube.child(OVERVIEWS_GROUP)} (multiscales recorded on the root)")
    return 0


def run_stac(args: argparse.Namespace) -> int:
    """``range-dist stac CUBE --out catalog/ [--href URL] [--id ID] [--collection ID]``."""
    from range_dist.cube.stac import write_catalog

    check_output_location(args.out, overwrite=args.overwrite)
    # the cube as given (a local path or URL text): write_catalog reads it in place, --out stays local
    files = write_catalog(args.cube, args.out, href=args.href, item_id=args.id, collection_id=args.collection)
    print(f"wrote {files.collection} and {files.item}; serve it with: rustac serve {files.api_collection} "
          f"{files.api_items}")
    return 0


def _points(args: argparse.Namespace) -> Any:
    import numpy as np

    from range_dist.geo.coords import validate_lonlat
    from range_dist.locations.points_io import read_points

    given = (args.lon is not None, args.lat is not None)
    if args.points is not None:
        if any(given):
            raise ConfigError("give either --lon/--lat or --points FILE, not both")
        return read_points(args.points)
    if not all(given):
        raise ConfigError("give the reference point as --lon X --lat Y (degrees), or --points FILE (mean of points)")
    return validate_lonlat(np.array([[args.lon, args.lat]], dtype=np.float64), source="--lon/--lat")


def run_similar(args: argparse.Namespace) -> int:
    """``range-dist similar CUBE (--lon X --lat Y | --points FILE) --beta B --out sim.png [--tif sim.tif]``."""
    from range_dist.analysis.cube import open_cube
    from range_dist.analysis.similarity import render_similarity

    out = Path(args.out)
    _suffix(out, "--out", (".png",), "the map is written as PNG")
    if args.tif is not None:
        _suffix(Path(args.tif), "--tif", (".tif", ".tiff"), "the GeoTIFF needs a .tif name")
        check_output_location(args.tif, "--tif", overwrite=args.overwrite)
    check_output_location(out, overwrite=args.overwrite)
    beta = _one_beta(args.beta)
    points = _points(args)
    ds = open_cube(args.cube, beta=beta, level=args.level)
    for path in (out, args.tif):
        if path is not None:
            _replace(Path(path), args.overwrite)
    result = render_similarity(ds, points, beta, out, geotiff=args.tif, scale=args.scale)
    extra = f" and {result.geotiff}" if result.geotiff else ""
    print(f"wrote {result.png}{extra}: cosine similarity of {result.valid_cells:,} cells at beta={beta:g} "
          f"(colour ramp {result.low:.3f} .. {result.high:.3f})")
    return 0


def run_export_cog(args: argparse.Namespace) -> int:
    """``range-dist export-cog CUBE --beta B --components K --out x.tif``."""
    from range_dist.analysis.cog import export_cog
    from range_dist.analysis.cube import open_cube

    out = Path(args.out)
    _suffix(out, "--out", (".tif", ".tiff"), "the COG needs a .tif name")
    check_output_location(out, overwrite=args.overwrite)
    beta = _one_beta(args.beta)
    if args.components < 1:
        raise ConfigError(f"--components {args.components}: expected a positive number of bands, e.g. 3 or 16")
    if args.blocksize < 16 or args.blocksize % 16:
        raise ConfigError(f"--blocksize {args.blocksize}: expected a multiple of 16, e.g. 256")
    ds = open_cube(args.cube, beta=beta, level=args.level)
    _replace(out, args.overwrite)
    result = export_cog(ds, beta, out, components=args.components, fit_cells=args.fit_cells, seed=args.seed,
                        blocksize=args.blocksize)
    ratio = ", ".join(f"{v:.3f}" for v in result.projection.explained_variance_ratio)
    print(f"wrote {result.path}: {args.components} PCA bands, {result.size[0]}x{result.size[1]} px, beta={beta:g} "
          f"(PCA fitted on {result.projection.fitted_cells} cells; explained variance {ratio})", file=sys.stdout)
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``overviews``, ``stac``, ``similar`` and ``export-cog`` (``handler=`` set)."""
    from range_dist.cube.overviews import DEFAULT_MIN_RESOLUTION

    p = subparsers.add_parser("overviews", help="coarser levels of a cube (2x NaN-aware means, GeoZarr multiscales)",
                              description="Add an overview pyramid to a finished cube: STORE/overviews/<k> at 2^k "
                                          "the root's cell size, recorded in the root's multiscales attribute. "
                                          "Resumable: a rerun continues where it stopped.")
    p.add_argument("cube", type=Path, help="embedding cube (.zarr) written by embed-grid")
    p.add_argument("--min-resolution", type=float, default=DEFAULT_MIN_RESOLUTION,
                   help=f"stop before a level coarser than this, degrees (default {DEFAULT_MIN_RESOLUTION:g}: "
                        "a 0.1° cube gets 0.2, 0.4, 0.8 and 1.6°)")
    p.add_argument("--dry-run", action="store_true", help="print the levels; write nothing")
    p.set_defaults(handler=run_overviews)

    p = subparsers.add_parser("stac", help="a STAC Collection + Item describing a cube",
                              description="Write OUT/collection.json, OUT/<id>/<id>.json (a static catalog) and "
                                          "OUT/api/collection.json + OUT/api/items.ndjson (for rustac serve).")
    p.add_argument("cube", type=Path, help="embedding cube (.zarr)")
    p.add_argument("--out", type=Path, required=True, help="catalog folder")
    p.add_argument("--href", default=None, help="the Zarr asset's href (default: the cube's absolute path)")
    p.add_argument("--id", default=None, help="Item id (default: the store's name)")
    p.add_argument("--collection", default="range-dist-embeddings", help="Collection id")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out folder")
    p.set_defaults(handler=run_stac)

    p = subparsers.add_parser("similar", help="cosine-similarity map of a cube to a point (PNG + GeoTIFF)",
                              description="Cosine similarity of every cell to the embedding at a point (or the mean "
                                          "of the points of a file), as a PNG with the land outline.")
    p.add_argument("cube", type=Path, help="embedding cube (.zarr)")
    p.add_argument("--lon", type=float, default=None, help="reference point longitude, degrees")
    p.add_argument("--lat", type=float, default=None, help="reference point latitude, degrees")
    p.add_argument("--points", type=Path, default=None, help="CSV/Parquet of lon, lat: the mean embedding is the "
                                                             "reference")
    p.add_argument("--beta", required=True, help="β level of the cube")
    p.add_argument("--out", type=Path, required=True, help="PNG path")
    p.add_argument("--tif", type=Path, default=None, help="also write the similarity as a float32 GeoTIFF (COG)")
    p.add_argument("--scale", type=int, default=None, help="PNG upscaling factor (default: about 720 px wide)")
    p.add_argument("--level", type=int, default=None, help="overview level to map (range-dist overviews; 0 = the cube)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=run_similar)

    p = subparsers.add_parser("export-cog", help="PCA-reduced Cloud-Optimised GeoTIFF of one β (for GIS tools)",
                              description="Project one β level onto its first K principal components and write a "
                                          "K-band float32 COG with overviews (nodata NaN).")
    p.add_argument("cube", type=Path, help="embedding cube (.zarr)")
    p.add_argument("--beta", required=True, help="β level of the cube")
    p.add_argument("--components", type=int, default=3, help="bands (principal components), e.g. 3 or 16")
    p.add_argument("--out", type=Path, required=True, help="output .tif")
    p.add_argument("--fit-cells", type=int, default=20000, help="cells the PCA is fitted on")
    p.add_argument("--level", type=int, default=None, help="overview level to export (0 = the cube)")
    p.add_argument("--blocksize", type=int, default=256, help="COG tile size, pixels (multiple of 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=run_export_cog)
