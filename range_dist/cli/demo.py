"""``range-dist demo``: the whole chain offline on a generated sample world."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from range_dist.errors import ConfigError


def run_demo(args: argparse.Namespace) -> int:
    """The whole chain offline on a generated sample world: STAC build, Ray grid, maps, probes."""
    import importlib.util

    missing = [m for m in ("aiohttp", "rustac") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"range-dist demo serves its world locally with {' and '.join(missing)}, not installed: "
                          "pip install 'range-dist[demo]' (bash workflows/quickstart.sh does)")
    from range_dist.demo.run import DemoSettings
    from range_dist.demo.run import run_demo as run

    settings = DemoSettings(out=args.out, per_scene=args.per_scene, resolution=args.resolution,
                            satmae_depth=args.satmae_depth, probe_size=args.probe_size,
                            keep_serving=args.keep_serving)
    result = run(settings)
    if not args.keep_serving:
        print(result.summary())
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help=run_demo.__doc__, description=run_demo.__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--keep-serving", action="store_true",
                   help="keep the local COG and STAC servers up after the run, until Ctrl-C")
    p.add_argument("--per-scene", type=int, default=3, help="database locations per scene, 8 scenes (default 3)")
    p.add_argument("--resolution", type=float, default=5.0, help="grid cell size in degrees (default 5)")
    p.add_argument("--satmae-depth", type=int, default=24,
                   help="SatMAE blocks: 24 = the ViT-L/16 architecture (default), fewer = a labelled reduced sample")
    p.add_argument("--probe-size", type=int, default=1000, help="points per probe task (default 1000)")
    p.set_defaults(handler=run_demo)
