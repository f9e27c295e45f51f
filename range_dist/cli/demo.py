"""``range-dist demo``: the whole chain offline on a generated sample world."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from range_dist.errors import ConfigError


def run_demo(args: argparse.Namespace) -> int:
    """The whole chain offline on a generated world, with encoders demo-trained on it: STAC build, Ray grid,
    maps, probes, and the figures that show retrieval working."""
    import importlib.util

    missing = [m for m in ("aiohttp", "rustac") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"range-dist demo serves its world locally with {' and '.join(missing)}, not installed: "
                          "pip install 'range-dist[demo]' (bash workflows/quickstart.sh does)")
    from range_dist.demo.run import DemoSettings
    from range_dist.demo.run import run_demo as run

    for flag, value, minimum in (("--locations", args.locations, 16), ("--train-steps", args.train_steps, 1),
                                 ("--satmae-depth", args.satmae_depth, 1), ("--probe-size", args.probe_size, 50),
                                 ("--regions", args.regions, 2)):
        if value < minimum:
            raise ConfigError(f"{flag} {value}: expected an integer >= {minimum}")
    if not 0.1 <= args.resolution <= 30:
        raise ConfigError(f"--resolution {args.resolution}: expected a cell size in degrees between 0.1 and 30")
    settings = DemoSettings(out=args.out, locations=args.locations, regions=args.regions, resolution=args.resolution,
                            train_steps=args.train_steps, satmae_depth=args.satmae_depth, probe_size=args.probe_size,
                            seed=args.seed, keep_serving=args.keep_serving)
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
    p.add_argument("--locations", type=int, default=256,
                   help="database locations, uniform on land, one generated scene each (default 256)")
    p.add_argument("--regions", type=int, default=120, help="land-cover regions of the generated world (default 120)")
    p.add_argument("--resolution", type=float, default=5.0, help="grid cell size in degrees (default 5)")
    p.add_argument("--train-steps", type=int, default=400,
                   help="steps of the contrastive fit of the demo's encoders (default 400)")
    p.add_argument("--satmae-depth", type=int, default=1,
                   help="blocks of the random SatMAE value model: 1 (default, the smallest model in the published "
                        "ViT-L/16 layout) to 24 (the full architecture)")
    p.add_argument("--probe-size", type=int, default=1000, help="points per probe task (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the fit and the probes (default 0)")
    p.set_defaults(handler=run_demo)
