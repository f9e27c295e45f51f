"""The ``map``, ``probe`` and ``sample`` subcommands (registered by :func:`add_parsers`).

Thin: parse, call the analysis library, print, return an exit code. Errors are
:class:`~range_dist.errors.RangeDistError` subclasses, which ``range_dist.cli.main.main`` reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from range_dist.config.values import parse_betas
from range_dist.errors import ConfigError
from range_dist.util.outputs import check_output_location


def _map_out(out: Path, beta: float, several: bool) -> Path:
    return out.with_name(f"{out.stem}_beta{beta:g}{out.suffix}") if several else out


def run_map(args: argparse.Namespace) -> int:
    """``range-dist map CUBE [--beta B[,B...]] --out map.png [--method ica|pca] [--geotiff out.tif]``."""
    from range_dist.analysis.cube import open_cube
    from range_dist.analysis.maps import assets_note, render_map

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the map is written as PNG; give a path ending in .png")
    if args.geotiff is not None and Path(args.geotiff).suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"--geotiff {args.geotiff}: give a path ending in .tif")
    check_output_location(out)
    wanted = None if args.beta is None else list(parse_betas(args.beta))
    # a heads-layout cube is blended at exactly the asked β on open; a beta-layout cube must hold them
    ds = open_cube(args.cube, beta=wanted, level=args.level)
    betas = [float(b) for b in ds["beta"].values]
    several = len(betas) > 1
    if args.dry_run:
        outs = [str(_map_out(out, b, several)) for b in betas]
        print(f"map plan: read {args.cube} {dict(ds.sizes)}; {args.method.upper()} fitted on up to {args.fit_cells} "
              f"cells per β; write {', '.join(outs)}{' + GeoTIFF(s)' if args.geotiff else ''}")
        return 0
    for beta in betas:
        tif = _map_out(Path(args.geotiff), beta, several) if args.geotiff is not None else None
        result = render_map(ds, beta, _map_out(out, beta, several), method=args.method, geotiff=tif,
                            scale=args.scale, max_cells=args.fit_cells, seed=args.seed)
        extra = f", {result.geotiff}" if result.geotiff else ""
        print(f"beta={beta:g}: wrote {result.png} ({result.size[0]}x{result.size[1]} px, {args.method.upper()} "
              f"fitted on {result.projection.fitted_cells} cells){extra}")
    note = assets_note(ds.attrs)
    if note:
        print(f"NOTE: this cube was not made with the published assets: {note}")
    return 0


def _local_checkpoint(value: Path | str) -> Path:
    """The checkpoint's local file: the path, or a URL's copy in the cache (downloaded once, SHA-256 checked)."""
    from range_dist.util.downloads import fetch_input

    return fetch_input(value, "--satclip").path


def _range_encoders(args: argparse.Namespace) -> list[Any]:
    from range_dist.analysis.probes import cube_encoder, range_encoder

    encoders: list[Any] = []
    if args.cube is not None:
        from range_dist.analysis.cube import open_cube

        ds = open_cube(args.cube, beta=None if args.betas is None else list(parse_betas(args.betas)))
        betas = [float(b) for b in ds["beta"].values]
        encoders += [cube_encoder(ds, b, method=args.method) for b in betas]
    if args.db is not None:
        if args.satclip is None:
            raise ConfigError("--db needs --satclip CKPT (RANGE queries the database with SatCLIP embeddings)")
        from range_dist import RangeEncoder, RetrievalDatabase, load_satclip_location_encoder

        location = load_satclip_location_encoder(_local_checkpoint(args.satclip), trust=args.trust_checkpoint)
        enc = RangeEncoder(location, RetrievalDatabase.open(args.db),
                           variant=args.variant, device=args.device)
        betas = list(parse_betas(args.betas or "0.5")) if args.variant == "range+" else [0.5]
        encoders += [range_encoder(enc, b) for b in betas]
    return encoders


def run_probe(args: argparse.Namespace) -> int:
    """``range-dist probe --task T[,T...] [--cube CUBE | --satclip CKPT --db DB] [--baselines ...]``."""
    from range_dist.analysis.probes import baseline_encoders, results_markdown, run_probes, write_results_csv
    from range_dist.analysis.tasks import make_task

    task_specs = [t for t in args.task.split(",") if t.strip()]
    if not task_specs:
        raise ConfigError("--task is empty; give landocean, koppen, country or checkerboard[:K]")
    baseline_names = [b for b in (args.baselines or "").split(",") if b.strip()]
    skipped: list[str] = []
    satclip: Any = args.satclip
    if satclip is not None and "satclip" in baseline_names:
        from range_dist import load_satclip_location_encoder

        satclip = load_satclip_location_encoder(_local_checkpoint(satclip), trust=args.trust_checkpoint)
    encoders = baseline_encoders(baseline_names, satclip=satclip, skipped=skipped) + _range_encoders(args)
    if not encoders:
        raise ConfigError("nothing to probe: pass --cube CUBE, --satclip CKPT --db DB, and/or --baselines "
                          "direct,cartesian3d,wrap,satclip")
    tasks = [make_task(spec, size=args.size, seed=args.seed, min_count=args.min_count) for spec in task_specs]
    for task in tasks:
        print(f"{task.name}: {task.description}")
    for note in skipped:
        print(note)
    from range_dist.util.progress import Progress

    progress = Progress(total=len(tasks) * len(encoders), unit="probes", label="probe", stream=sys.stderr)

    def on_result(result: Any) -> None:  # each (task, encoder) fit takes seconds to minutes: say which is done
        print(f"probe: {result.task} / {result.encoder}: {result.metric} {result.score:.3f}", file=sys.stderr)
        progress.update(1)

    results = run_probes(tasks, encoders, on_result=on_result)
    print()
    print(results_markdown(results))
    if args.csv is not None:
        print(f"\nwrote {write_results_csv(results, args.csv)}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """``range-dist sample CUBE --points pts.csv --out emb.npz [--betas ...] [--method nearest|bilinear]``."""
    from range_dist.analysis.cube import open_cube, sample_cube, to_numpy
    from range_dist.locations.points_io import read_points, write_embeddings

    betas = None if args.betas is None else list(parse_betas(args.betas))
    ds = open_cube(args.cube, beta=betas)  # a heads-layout cube: blended at exactly these β
    points = read_points(args.points)
    check_output_location(args.out, overwrite=args.overwrite)
    if args.dry_run:
        print(f"sample plan: read {args.cube} {dict(ds.sizes)} at {len(points):,} points of {args.points} "
              f"({args.method}); write {args.out}")
        return 0
    samples = sample_cube(ds, points, method=args.method)
    values = to_numpy(samples)
    beta_values = [float(b) for b in samples["beta"].values]
    attrs = {"cube": str(args.cube), "method": args.method, "betas": beta_values,
             "sample_assets": bool(ds.attrs.get("range_dist:sample_assets", False))}
    out = write_embeddings(args.out, points, beta_values, values, attrs, overwrite=args.overwrite)
    print(f"sampled {len(points)} points x {values.shape[0]} β levels ({args.method}); wrote {out} {values.shape}")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``map``, ``probe`` and ``sample`` on an argparse subparsers object (``handler=`` set)."""
    p = subparsers.add_parser("map", help="RGB map (ICA/PCA) of a cube as PNG (+ GeoTIFF/COG)",
                              description="Project a cube's embeddings to RGB and write a PNG per β.")
    p.add_argument("cube", type=Path, help="embedding cube (.zarr) written by embed-grid: a local path or an "
                                           "s3://, gs://, az:// URL (see range_dist.cli.main.STORE_ARGUMENTS)")
    p.add_argument("--beta", default=None, help="β level(s), comma-separated (default: every β of the cube; "
                                                "several β write OUT_beta<β>.png; a heads-layout cube: any β in "
                                                "[0, 1])")
    p.add_argument("--level", type=int, default=None, help="overview level k (2^k coarser; default 0, the cube)")
    p.add_argument("--out", type=Path, required=True, help="PNG path")
    p.add_argument("--method", choices=["ica", "pca"], default="ica", help="projection (default ica, as the paper)")
    p.add_argument("--geotiff", type=Path, default=None, help="also write an RGBA Cloud-Optimised GeoTIFF")
    p.add_argument("--scale", type=int, default=None, help="PNG upscaling factor (default: about 720 px wide)")
    p.add_argument("--fit-cells", type=int, default=20000, help="cells the projection is fitted on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.set_defaults(handler=run_map)

    p = subparsers.add_parser("probe", help="linear probes (paper protocol) on offline tasks",
                              description="Linear probes with the RANGE paper's protocol: MinMaxScaler, "
                                          "RidgeClassifierCV(alphas=(0.1,1,10), cv=10), 80/20 split, seed 42.")
    p.add_argument("--task", required=True,
                   help="comma-separated: landocean, koppen, country, checkerboard[:K] (K support points)")
    p.add_argument("--cube", type=Path, default=None, help="probe RANGE embeddings sampled from this cube")
    p.add_argument("--method", choices=["nearest", "bilinear"], default="bilinear", help="cube sampling")
    p.add_argument("--satclip", type=Path, default=None,
                   help="SatCLIP checkpoint (satclip baseline, RANGE): a local path or a URL (downloaded once)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs full pickle loading (can run code: only files you know)")
    p.add_argument("--db", type=Path, default=None,
                   help="retrieval database: probe RANGE computed directly (a local path or a URL, as embed-grid)")
    p.add_argument("--variant", choices=["range+", "range"], default="range+")
    p.add_argument("--betas", default=None, help="β level(s) to probe (default: the cube's, or 0.5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--baselines", default="",
                   help="comma-separated: direct, cartesian3d, wrap, satclip (needs --satclip), geoclip "
                        "(skipped unless the geoclip package is installed)")
    p.add_argument("--size", type=int, default=2000,
                   help="points per real-data task; train and test points of the checkerboard (paper: 10000)")
    p.add_argument("--min-count", type=int, default=10, help="drop classes with fewer points (koppen, country)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the task points (the split seed is 42)")
    p.add_argument("--csv", type=Path, default=None, help="also write the results as CSV")
    p.set_defaults(handler=run_probe)

    p = subparsers.add_parser("sample", help="sample a cube's embeddings at the points of a file",
                              description="Embeddings of a cube at points (nearest cell or bilinear).")
    p.add_argument("cube", type=Path, help="embedding cube (.zarr): a local path or an s3://, gs://, az:// URL "
                                           "(see range_dist.cli.main.STORE_ARGUMENTS)")
    p.add_argument("--points", type=Path, required=True, help="CSV or Parquet with lon, lat columns (degrees)")
    p.add_argument("--out", type=Path, required=True, help=".npz, .parquet or .zarr (as embed-points)")
    p.add_argument("--betas", default=None, help="β level(s) (default: all of the cube; a heads-layout cube: any "
                                                 "β in [0, 1])")
    p.add_argument("--method", choices=["nearest", "bilinear"], default="bilinear")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.set_defaults(handler=run_sample)
