"""``fetch-assets`` and ``sample-assets``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def run_fetch_assets(args: argparse.Namespace) -> int:
    """Download the published SatCLIP checkpoint and RANGE database (huggingface_hub)."""
    from range_dist.assets import (
        DATABASE_FILES,
        DATABASE_REPO,
        SATCLIP_FILE,
        SATCLIP_REPO,
        default_cache_dir,
        fetch_published_assets,
    )

    if args.dry_run:
        print(f"fetch-assets plan: download {SATCLIP_FILE} (hf.co/{SATCLIP_REPO}) and {DATABASE_FILES[args.database]} "
              f"(hf.co/datasets/{DATABASE_REPO}) into {args.cache_dir or default_cache_dir()}")
        return 0
    paths = fetch_published_assets(args.database, args.cache_dir)
    print(f"checkpoint: {paths.checkpoint}\ndatabase:   {paths.database}")
    return 0


def run_sample_assets(args: argparse.Namespace) -> int:
    """Write an untrained SatCLIP-format checkpoint and a sample database (npz)."""
    from range_dist.assets import SAMPLE_CHECKPOINT, SAMPLE_DATABASE, SAMPLE_LABEL, write_sample_assets

    if args.dry_run:
        print(f"sample-assets plan: write {args.dir / SAMPLE_CHECKPOINT} (L={args.legendre_polys}, random weights) "
              f"and {args.dir / SAMPLE_DATABASE} ({args.rows} synthetic rows) — {SAMPLE_LABEL}")
        return 0
    paths = write_sample_assets(args.dir, rows=args.rows, seed=args.seed, legendre_polys=args.legendre_polys,
                                capacity=args.capacity)
    print(f"{SAMPLE_LABEL}\ncheckpoint: {paths.checkpoint}\ndatabase:   {paths.database}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register the asset commands."""
    p = sub.add_parser("fetch-assets", help=run_fetch_assets.__doc__, description=run_fetch_assets.__doc__)
    p.add_argument("--database", choices=["med", "large"], default="med")
    p.add_argument("--cache-dir", type=Path, default=None, help="default $RANGE_DIST_CACHE or ~/.cache/range_dist")
    p.add_argument("--dry-run", action="store_true", help="print what would be downloaded where; download nothing")
    p.set_defaults(handler=run_fetch_assets)

    p = sub.add_parser("sample-assets", help=run_sample_assets.__doc__, description=run_sample_assets.__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--rows", type=int, default=2000, help="database rows (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--legendre-polys", type=int, default=10, help="L of the sample checkpoint (default 10)")
    p.add_argument("--capacity", type=int, default=256, help="SIREN width of the sample checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.set_defaults(handler=run_sample_assets)
