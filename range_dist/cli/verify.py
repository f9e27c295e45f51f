"""``range-dist verify``: check a stored database or cube completely against its integrity record.

A database: a table (array / rows / status), exit 0 when every chunk is present and matches its
checksum, 2 otherwise. A cube: every tile marked done is read back and its CRC-32 and cell count
compared (:mod:`range_dist.cube.integrity`); ``--repair`` marks the bad tiles missing and
recomputes exactly them with the cube's own recorded settings and inputs.

The store may be a local path or an object-store URL (``s3://``, ``gs://``, ``az://``): it is read
through :class:`~range_dist.util.stores.StoreLocation` (a cube is repaired in place, in its bucket).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from range_dist.errors import ConfigError
from range_dist.util.stores import StoreLocation


def _store_attrs(loc: StoreLocation) -> dict[str, Any] | None:
    """The attributes in a Zarr v3 store's ``zarr.json``; None when there is none or it is unreadable.

    Raises:
        ObjectStoreError: the object store refused or could not serve the read (credentials, bucket).
    """
    try:
        raw = loc.child("zarr.json").read_bytes()
    except OSError:  # local: not a folder, a folder named zarr.json, no permission
        return None
    if raw is None:
        return None
    try:
        attrs = json.loads(raw.decode("utf-8")).get("attributes", {})
    except (ValueError, AttributeError):  # not UTF-8 / not JSON (ValueError), JSON but not an object
        return None
    return attrs if isinstance(attrs, dict) else None


def _refuse_non_database(loc: StoreLocation) -> None:
    """Refuse, with what it is, a store that is not a range-dist database (another store, a file)."""
    from range_dist.database.store import ATTRS_KEY, FORMAT_NAME

    if not loc.exists():
        if loc.is_local:
            return  # verify_database says so, with the fix
        # verify_database would say "no zarr.json there": for a URL with nothing under it, say that first
        raise ConfigError(f"{loc} does not exist (no object under it at {loc.endpoint()}); pass the URL of a "
                          "retrieval database or an embedding cube written by range-dist")
    what = "not a range-dist database"
    if loc.child("zarr.json").is_object():
        attrs = _store_attrs(loc)
        if attrs is None:
            return  # an unreadable zarr.json: verify_database says what is wrong with it
        meta = attrs.get(ATTRS_KEY)
        if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME:
            return
        what = "a Zarr store that is not a range-dist database"
    elif Path(loc.name).suffix == ".npz":
        return  # verify_database checks it (or, on object storage, says where an .npz is verified)
    raise ConfigError(f"{loc} is {what}; `range-dist verify` checks retrieval databases (a Zarr database written "
                      "by range-dist, or a published-layout .npz) and embedding cubes written by embed-grid")


def _is_cube(loc: StoreLocation) -> bool:
    from range_dist.cube.store import SIGNATURE_KEY

    return SIGNATURE_KEY in (_store_attrs(loc) or {})


def _recorded_input(attrs: dict[str, Any], key: str) -> str:
    """An input a cube records (``range_dist:satclip`` / ``range_dist:database``) as text, for the config's parser.

    The recorded value is the file that was read: a local path (for an input given as a URL, the
    cached copy), or a Zarr database's URL. When that local copy is gone and the input's URL is
    recorded, the URL is used instead (downloaded again and SHA-256 checked by the job's loader).
    """
    value = str(attrs[key])
    url = attrs.get(f"{key}_url")
    loc = StoreLocation.parse(value) if "://" not in value else None  # https:// inputs are not store locations
    if url and loc is not None and loc.is_local and not loc.local.exists():
        return str(url)
    return value


def _recorded_config(loc: StoreLocation, executor: str) -> Any:
    """The grid job settings a cube was made with, from its attributes (to recompute tiles as they were)."""
    from range_dist.cube.store import SIGNATURE_KEY, open_cube_group
    from range_dist.jobs.grid.config import GridJobConfig

    with loc.errors("reading the settings recorded in"):
        attrs: dict[str, Any] = dict(open_cube_group(loc).attrs)
    sig: dict[str, Any] = attrs[SIGNATURE_KEY]
    # text, not Path(): a recorded input may be a URL, and GridJobConfig parses it as the flags are parsed
    return GridJobConfig(
        resolution=float(sig["grid"]["resolution"]), bbox=tuple(sig["grid"]["bbox"]),
        land_only=bool(sig["land_only"]), variant=sig["variant"], betas=tuple(sig["betas"]),
        satclip=_recorded_input(attrs, "range_dist:satclip"), db=_recorded_input(attrs, "range_dist:database"),
        out=loc.as_arg(), dtype=sig["dtype"], tile_size=int(sig["tile_size"]), chunk_size=int(sig["chunk_size"]),
        layout=sig.get("layout", "beta"), quantize=sig.get("quantize", "none"),
        harmonics=sig["harmonics"], mode=sig["retrieval_mode"], tolerance=sig.get("tolerance"),
        precision=sig["precision"], executor=executor)  # type: ignore[arg-type]  # argparse choices: local, ray


def _verify_cube(loc: StoreLocation, repair: bool, executor: str) -> int:
    from range_dist.cube.integrity import check_tiles, reset_tiles, summary_table

    checks = check_tiles(loc, full=True)
    print(summary_table(checks))
    bad = [c for c in checks if c.state != "ok"]
    if not bad:
        print(f"{loc}: every done tile is present and matches its checksum")
        return 0
    if not repair:
        print(f"range-dist verify: {len(bad)} bad tile(s) in {loc}; `range-dist verify {loc} --repair` "
              "recomputes exactly them", file=sys.stderr)
        return 2
    from range_dist.executors import embed_grid

    config = _recorded_config(loc, executor)
    reset_tiles(loc, [(c.row, c.col) for c in bad])
    report = embed_grid(config)
    left = [c for c in check_tiles(loc, full=True) if c.state != "ok"]
    print(f"repaired: {report.tiles_computed} tile(s) recomputed; {len(left)} bad tile(s) left")
    return 0 if not left else 2


def run_verify(args: argparse.Namespace) -> int:
    """Verify a database or a cube: every chunk / tile present and matching its checksum (exit 0 ok, 2 not)."""
    from range_dist.database import verify_database

    # StoreLocation, never Path(): URL text (or a Path made of one) stays the URL
    loc = StoreLocation.parse(args.db, "STORE")
    loc.check_bucket()  # a missing bucket or a refused key is named as such (a no-op for a local path)
    if _is_cube(loc):
        return _verify_cube(loc, args.repair, args.executor)
    if args.repair:
        raise ConfigError(f"--repair recomputes cube tiles; a database is rebuilt with build-db or import-db: {loc}")
    _refuse_non_database(loc)
    report = verify_database(loc.as_arg())
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
