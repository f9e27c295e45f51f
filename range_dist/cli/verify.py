"""``range-dist verify``: check a stored database or cube completely against its integrity record.

A database: a table (array / rows / status), exit 0 when every chunk is present and matches its
checksum, 2 otherwise. A cube: every tile marked done is read back and its CRC-32 and cell count
compared (:mod:`range_dist.cube.integrity`); ``--repair`` marks the bad tiles missing and
recomputes exactly them with the cube's own recorded settings and inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from range_dist.errors import ConfigError


def _store_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes in a Zarr v3 store's ``zarr.json``; None when there is none or it is unreadable."""
    try:
        attrs = json.loads((path / "zarr.json").read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) else None


def _refuse_non_database(path: Path) -> None:
    """Refuse, with what it is, a path that is not a range-dist database (another store, a file)."""
    from range_dist.database.store import ATTRS_KEY, FORMAT_NAME

    if not path.exists():
        return  # verify_database says so, with the fix
    what = "not a range-dist database"
    if path.is_dir() and (path / "zarr.json").is_file():
        attrs = _store_attrs(path)
        if attrs is None:
            return  # an unreadable zarr.json: verify_database says what is wrong with it
        meta = attrs.get(ATTRS_KEY)
        if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME:
            return
        what = "a Zarr store that is not a range-dist database"
    elif path.suffix == ".npz":
        return
    raise ConfigError(f"{path} is {what}; `range-dist verify` checks retrieval databases (a Zarr database written "
                      "by range-dist, or a published-layout .npz) and embedding cubes written by embed-grid")


def _is_cube(path: Path) -> bool:
    from range_dist.cube.store import SIGNATURE_KEY

    return SIGNATURE_KEY in (_store_attrs(path) or {})


def _recorded_config(path: Path, executor: str) -> Any:
    """The grid job settings a cube was made with, from its attributes (to recompute tiles as they were)."""
    import zarr

    from range_dist.cube.store import SIGNATURE_KEY
    from range_dist.jobs.grid.config import GridJobConfig

    attrs: dict[str, Any] = dict(zarr.open_group(str(path), mode="r").attrs)
    sig: dict[str, Any] = attrs[SIGNATURE_KEY]
    return GridJobConfig(
        resolution=float(sig["grid"]["resolution"]), bbox=tuple(sig["grid"]["bbox"]),
        land_only=bool(sig["land_only"]), variant=sig["variant"], betas=tuple(sig["betas"]),
        satclip=Path(attrs["range_dist:satclip"]), db=Path(attrs["range_dist:database"]), out=path,
        dtype=sig["dtype"], tile_size=int(sig["tile_size"]), chunk_size=int(sig["chunk_size"]),
        layout=sig.get("layout", "beta"), quantize=sig.get("quantize", "none"),
        harmonics=sig["harmonics"], mode=sig["retrieval_mode"], tolerance=sig.get("tolerance"),
        precision=sig["precision"], executor=executor)  # type: ignore[arg-type]  # argparse choices: local, ray


def _verify_cube(path: Path, repair: bool, executor: str) -> int:
    from range_dist.cube.integrity import check_tiles, reset_tiles, summary_table

    checks = check_tiles(path, full=True)
    print(summary_table(checks))
    bad = [c for c in checks if c.state != "ok"]
    if not bad:
        print(f"{path}: every done tile is present and matches its checksum")
        return 0
    if not repair:
        print(f"range-dist verify: {len(bad)} bad tile(s) in {path}; `range-dist verify {path} --repair` "
              "recomputes exactly them", file=sys.stderr)
        return 2
    from range_dist.executors import embed_grid

    config = _recorded_config(path, executor)
    reset_tiles(path, [(c.row, c.col) for c in bad])
    report = embed_grid(config)
    left = [c for c in check_tiles(path, full=True) if c.state != "ok"]
    print(f"repaired: {report.tiles_computed} tile(s) recomputed; {len(left)} bad tile(s) left")
    return 0 if not left else 2


def run_verify(args: argparse.Namespace) -> int:
    """Verify a database or a cube: every chunk / tile present and matching its checksum (exit 0 ok, 2 not)."""
    from range_dist.database import verify_database

    path = Path(args.db)
    if path.is_dir() and _is_cube(path):
        return _verify_cube(path, args.repair, args.executor)
    if args.repair:
        raise ConfigError(f"--repair recomputes cube tiles; a database is rebuilt with build-db or import-db: {path}")
    _refuse_non_database(path)
    report = verify_database(path)
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(report.summary())
        return 0
    print(f"range-dist verify: {report.summary()}", file=sys.stderr)
    return 2


def add_parsers(sub: Any) -> None:
    """Register ``verify``."""
    p = sub.add_parser("verify", help=run_verify.__doc__, description=run_verify.__doc__)
    p.add_argument("db", type=Path, metavar="STORE",
                   help="a retrieval database (.zarr directory or published-layout .npz) or an embedding cube")
    p.add_argument("--repair", action="store_true",
                   help="cube: recompute exactly the bad tiles, with the cube's recorded settings and inputs")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="for --repair (default local)")
    p.set_defaults(handler=run_verify)
