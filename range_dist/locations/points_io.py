"""Read point files and write embedding files (I/O edge for ``embed-points``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.errors import ConfigError
from range_dist.geo.coords import validate_lonlat

LON_NAMES = ("lon", "longitude", "lng", "x")
LAT_NAMES = ("lat", "latitude", "y")


def _pick(columns: Sequence[str], names: Sequence[str], path: Path, what: str) -> str:
    lowered = {c.lower(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    raise ConfigError(f"{path}: no {what} column; expected one of {list(names)}, found {list(columns)}")


def read_points(path: str | Path) -> npt.NDArray[np.float64]:
    """Read (lon, lat) degrees from a CSV or Parquet file with lon/lat columns.

    Errors name the first bad row: for CSV its line number in the file (header = line 1), for
    Parquet its 0-based row index.

    Returns:
        (N, 2) float64.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"points file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
            labels, label_name = np.arange(len(frame)) + 2, f"{path.name} line"
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            labels, label_name = np.arange(len(frame)), f"{path.name} row"
        else:
            raise ConfigError(
                f"points file {path}: unsupported type {suffix!r}; use .csv or .parquet with lon, lat columns"
            )
    except pd.errors.EmptyDataError as exc:
        raise ConfigError(f"points file {path} is empty; expected a header line with lon, lat and one row per "
                          "point") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"points file {path} could not be read as {suffix[1:]} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); expected lon, lat columns"
                          ) from exc
    lon = _pick(list(frame.columns), LON_NAMES, path, "longitude")
    lat = _pick(list(frame.columns), LAT_NAMES, path, "latitude")
    if len(frame) == 0:
        raise ConfigError(f"points file {path} has a header ({', '.join(map(str, frame.columns))}) but no rows; "
                          "add one row per point")
    values = np.stack([_numbers(frame[lon]), _numbers(frame[lat])], axis=1)
    return validate_lonlat(values, source=str(path), row_labels=labels, row_label_name=label_name)


def _numbers(column: Any) -> npt.NDArray[np.float64]:
    """A column as float64, NaN where a cell is not a number (validate_lonlat then names the first one)."""
    import pandas as pd

    try:
        # a copy: pandas' copy-on-write hands out read-only arrays, which torch warns about
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    except (OverflowError, TypeError, ValueError):  # "coerce" still raises for an integer beyond float range
        return np.array([_number(v) for v in column], dtype=np.float64)


def _number(v: Any) -> float:
    """One cell, read as :func:`pandas.to_numeric` reads it; an integer beyond float range is ±inf."""
    import pandas as pd

    try:
        return float(pd.to_numeric(v, errors="coerce"))
    except OverflowError:
        return -math.inf if str(v).lstrip().startswith("-") else math.inf
    except (TypeError, ValueError):
        return math.nan


def write_embeddings(
    path: str | Path,
    lonlat: npt.NDArray[np.float64],
    betas: Sequence[float],
    embeddings: npt.NDArray[np.float32],
    attrs: dict[str, object],
    overwrite: bool = False,
) -> Path:
    """Write embeddings (B, N, F) to .npz (lonlat, beta, embedding), .parquet (long) or .zarr.

    Writes go to a side file first and are renamed into place, so a failure never leaves a
    half-written output and an existing file is only replaced with ``overwrite``.
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"output {path} already exists; pass --overwrite to replace it")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".parquet", ".zarr"):
        raise ConfigError(f"output {path}: unsupported type {suffix!r}; use .npz, .parquet or .zarr")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{suffix}")
    beta_arr = np.asarray(betas, dtype=np.float64)
    if suffix == ".npz":
        np.savez(tmp, lonlat=lonlat, beta=beta_arr, embedding=embeddings)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        b, n, f = embeddings.shape
        flat = pa.array(embeddings.reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "point": np.tile(np.arange(n), b),
                "lon": np.tile(lonlat[:, 0], b),
                "lat": np.tile(lonlat[:, 1], b),
                "beta": np.repeat(beta_arr, n),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, f),
            }
        )
        meta = {b"range_dist": __import__("json").dumps(attrs, default=str).encode()}
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    else:
        import xarray as xr

        ds = xr.Dataset(
            {"embedding": (("beta", "point", "feature"), embeddings)},
            coords={"beta": beta_arr, "lon": ("point", lonlat[:, 0]), "lat": ("point", lonlat[:, 1])},
            attrs={k: str(v) if not isinstance(v, (int, float, str)) else v for k, v in attrs.items()},
        )
        if tmp.exists():
            shutil.rmtree(tmp)
        ds.to_zarr(tmp, zarr_format=3, consolidated=False)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)
    return path
