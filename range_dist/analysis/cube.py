"""Open embedding cubes lazily, select β levels and sample embeddings at points.

A cube is the Zarr v3 store written by ``range-dist embed-grid``, read as ``embedding(beta, lat,
lon, feature)`` on a regular grid of cell centres, lat descending (north-up), lon ascending, NaN
where a cell was not embedded (ocean in land-only cubes), whatever its layout (β levels, or the
heads blended at any β on open) and encoding (float32, float16, int8 dequantised on read; see
:mod:`range_dist.cube.encoding`). Everything here is lazy (xarray + dask) until values are asked
for, and point sampling reads only the cells it needs.

A cube may be a local path or an object-store URL (``s3://``, ``gs://``, ``az://``;
:mod:`range_dist.util.stores`), opened as ``xr.open_zarr(url, storage_options=...)`` with the
environment's credentials (or ``storage_options=`` given to :func:`open_cube`).

Sampling methods:

* ``nearest``: the value of the cell whose centre is nearest in (lon, lat) degrees; across the
  antimeridian on a globe-spanning cube (lon 179.9 can pick the cell at -179.5). NaN where that
  cell is NaN.
* ``bilinear``: linear in lat and lon between the four surrounding cell centres. Exact at cell
  centres. On a globe-spanning cube the two columns either side of the antimeridian are
  neighbours; beyond the outermost latitude centres (near the poles) the value is constant in
  lat. NaN cells (ocean in land-only cubes) get zero weight and the remaining weights are
  renormalised, so a coastal point takes the value of its land neighbours; a point whose four
  neighbours are all NaN is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from range_dist.cube.encoding import ENCODING_KEY, CubeEncoding, check_betas_for, require_layout
from range_dist.cube.store import GRID_MAPPING
from range_dist.errors import ConfigError, CoordinateError
from range_dist.geo.coords import validate_lonlat
from range_dist.util.stores import StoreLocation, register_storage_options

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

METHODS = ("nearest", "bilinear")
#: Target size of one dask chunk of ``embedding`` when a cube is opened for analysis.
TARGET_CHUNK_BYTES = 64 * 2**20
#: Points gathered per read in :func:`sample_cube` (bounds memory: 4 corners × B × F floats each).
POINT_BLOCK = 2048


def _analysis_side(arr: Any, values_per_cell: int, itemsize: int) -> tuple[int, int]:
    """(lat, lon) cells per dask chunk: multiples of the inner chunk within a shard, at most TARGET_CHUNK_BYTES.

    Per axis, because a grid smaller than a tile on one axis has chunks of another size on that axis
    (a dask chunk that splits a stored chunk makes every read decode it twice).
    """
    names = list(arr.metadata.dimension_names or ())
    inner = arr.chunks
    shard = arr.shards or inner
    sides = []
    for axis in (names.index("lat") if names else 1, names.index("lon") if names else 2):
        side, best = inner[axis], inner[axis]
        while side <= shard[axis] and side * side * values_per_cell * itemsize <= TARGET_CHUNK_BYTES:
            if shard[axis] % side == 0:
                best = side
            side += inner[axis]
        sides.append(int(best))
    return sides[0], sides[1]


def _analysis_chunks(path: StoreLocation, group: str | None, encoding: CubeEncoding) -> dict[str, int]:
    """Chunks for analysis: one β, whole features, lat/lon a multiple of the inner chunk within a shard."""
    import zarr

    first = encoding.variables()[0]
    try:
        if path.is_local:
            arr = zarr.open_array(str(path.local if group is None else path.local / group), path=first.name,
                                  mode="r")
        else:
            arr = zarr.open_array(path.zarr_store(read_only=True), mode="r",
                                  path=first.name if group is None else f"{group}/{first.name}")
        feature_dim = encoding.feature_dim
        # the decoded float32 (or float16) embedding per β level is what a chunk holds in memory
        itemsize = 2 if encoding.dtype == "float16" and encoding.quantize == "none" else 4
        lat_side, lon_side = _analysis_side(arr, feature_dim, itemsize)
    # no array there (older layout) or unreadable metadata (zarr's NodeNotFoundError and
    # MetadataValidationError are OSError/ValueError), or a chunk grid that is not regular
    # (NotImplementedError): let xarray decide per dimension
    except (OSError, ValueError, NotImplementedError):
        return {"beta": 1}
    return {"beta": 1, "lat": lat_side, "lon": lon_side}


def _open_zarr(path: StoreLocation, chunks: dict[str, int] | None, group: str | None = None) -> xr.Dataset:
    import warnings

    import rioxarray  # noqa: F401 - registers the .rio accessor: the opened cube's ``ds.rio.crs``
    import xarray as xr

    # an object store: the URL and storage options, exactly as a user would call xr.open_zarr
    target: Any = path.local if path.is_local else path.url
    options = None if path.is_local else path.storage_options()
    with warnings.catch_warnings(), path.errors("opening the cube"):
        # a cube still being written is not consolidated yet; reading it unconsolidated is fine
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
        # mask_and_scale off: int8 codes have no fill value to mask, and float fills are NaN already
        return xr.open_zarr(target, group=group, decode_coords="all", chunks=chunks,  # type: ignore[arg-type]
                            mask_and_scale=False, storage_options=options)


def overview_levels(path: str | Path | StoreLocation) -> list[int]:
    """Overview levels stored under ``CUBE/overviews/<k>`` (k >= 1, 2^k coarser), ascending."""
    loc = StoreLocation.parse(path)
    if not loc.is_local:
        keys = loc.child("overviews").object_sizes()
        return sorted({int(key.split("/")[0]) for key in keys if key.split("/")[0].isdigit()
                       and key.count("/") == 1 and key.endswith("/zarr.json")})
    root = loc.local / "overviews"
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "zarr.json").is_file())


def _requested_betas(beta: float | Sequence[float] | None) -> list[float] | None:
    if beta is None:
        return None
    values = [float(beta)] if isinstance(beta, (int, float, np.floating)) else [float(b) for b in beta]
    if not values:
        raise ConfigError("beta is empty; give at least one β in [0, 1], e.g. 0.5")
    return values


def open_cube(path: str | Path | StoreLocation, chunks: dict[str, int] | None = None, *,
              beta: float | Sequence[float] | None = None, level: int | None = None,
              storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Open an embedding cube lazily (xarray + dask), decoded, with chunks suited to analysis.

    Every layout and encoding (:mod:`range_dist.cube.encoding`) reads as the same
    ``embedding(beta, lat, lon, feature)``: int8 codes are dequantised and heads are blended
    lazily, chunk by chunk. The store's inner Zarr chunks are small (e.g. 32 × 32 cells) so that
    point reads are cheap; for whole-map work they make too many dask tasks. By default each dask
    chunk holds one β, all features and a square of cells that is a whole number of inner chunks
    inside one shard, of at most :data:`TARGET_CHUNK_BYTES` (64 MiB; 128 × 128 cells for 1280
    float16 features).

    Args:
        path: the cube (``.zarr`` directory written by ``embed-grid``), or its ``s3://``, ``gs://`` or
            ``az://`` URL.
        chunks: dask chunks per dimension, overriding the default (e.g. ``{"lat": 512}``).
        beta: None: every stored β (beta layout) or the β levels the run was asked for (heads
            layout); one β or a list: those levels (beta layout: they must be stored; heads
            layout: any value in [0, 1], an exact blend of the heads).
        level: overview level (``CUBE/overviews/<k>``, 2^k coarser); None or 0: the cube itself.
        storage_options: fsspec options of an object-store cube (default: the environment's
            credentials and ``AWS_ENDPOINT_URL``); used for that bucket in this process.

    Returns:
        The dataset, with ``embedding`` (beta, lat, lon, feature) float32 (float16 for a float16
        cube) as a dask array, the CRS (EPSG:4326) readable by rioxarray (``ds.rio.crs``) and the
        store's attributes (``range_dist:cube_encoding`` says how it is stored).

    Raises:
        ConfigError: the path does not exist or holds no cube, a β outside [0, 1] or not stored,
            or an overview level that does not exist (the available ones are named), or a URL of an
            unsupported scheme.
        ObjectStoreError: the object store refused the credentials, has no such bucket, or cannot be
            reached.
    """
    path = StoreLocation.parse(path, "cube")
    if storage_options:
        register_storage_options(path, storage_options)
    path.check_bucket()
    if not path.exists():
        raise ConfigError(f"cube {path} does not exist; pass the .zarr store written by `range-dist embed-grid`")
    group = None
    if level is not None and int(level) != 0:
        levels = overview_levels(path)
        if int(level) not in levels:
            have = ", ".join(str(k) for k in [0, *levels])
            raise ConfigError(f"level={level}: cube {path} has no overview level {level}; it has level(s) {have} "
                              "(0 = the cube itself; `range-dist overviews CUBE` builds the pyramid)")
        group = f"overviews/{int(level)}"
    try:
        ds = _open_zarr(path, None, group)
    # OSError/ValueError: no Zarr group there (zarr's GroupNotFoundError is both), a corrupt zarr.json or
    # an unknown codec; KeyError: a Zarr store without the dimension_names xarray needs
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cube {path} could not be opened as a Zarr store ({type(exc).__name__}: {exc}); pass the .zarr "
            "store written by `range-dist embed-grid`"
        ) from exc
    source = f"cube {path}" + (f" (level {level})" if group else "")
    require_layout(ds.attrs, source)
    emb_dims = ds["embedding"].dims if "embedding" in ds else None
    if ENCODING_KEY not in ds.attrs and emb_dims != ("beta", "lat", "lon", "feature"):
        found = {name: ds[name].dims for name in ds.data_vars}
        raise ConfigError(
            f"{source} has no variable embedding(beta, lat, lon, feature) (found {found}); pass a cube "
            "written by `range-dist embed-grid`"
        )
    emb = ds.get("embedding", None)
    encoding = CubeEncoding.from_attrs(
        ds.attrs, str(emb.dtype) if emb is not None else None, emb.sizes["feature"] if emb is not None else None,
        tuple(float(b) for b in ds["beta"].values) if "beta" in ds.coords else ())
    wanted = _requested_betas(beta)
    available = [float(b) for b in ds["beta"].values] if encoding.layout == "beta" else list(encoding.betas)
    if wanted is not None:
        check_betas_for(encoding, wanted, available)
    default = _analysis_chunks(path, group, encoding)
    stored_chunks = {**default, **(chunks or {})}
    ds = _open_zarr(path, {k: v for k, v in stored_chunks.items() if k in ("beta", "lat", "lon")}, group)
    return _decoded(ds, encoding, wanted if wanted is not None else available, stored_chunks)


def _decoded(ds: xr.Dataset, encoding: CubeEncoding, betas: list[float], chunks: dict[str, int]) -> xr.Dataset:
    """The dataset with ``embedding`` decoded (and, in beta layout, the wanted β levels selected)."""
    names = [v.name for v in encoding.variables()]
    if encoding.layout == "beta":
        idx = [int(np.flatnonzero(np.abs(ds["beta"].values - b) <= 1e-6)[0]) for b in betas]
        sub = ds.isel(beta=idx)
        if encoding.quantize == "none":
            out = sub
        else:
            data = encoding.decoded({n: sub[n].data for n in names}, betas)
            out = sub.drop_vars(names).assign(embedding=(("beta", "lat", "lon", "feature"), data))
    else:
        data = encoding.decoded({n: ds[n].data for n in names}, betas)
        out = ds.drop_vars(names).assign_coords(
            beta=("beta", np.asarray(betas, dtype=np.float64)),
            feature=("feature", np.arange(encoding.feature_dim, dtype=np.int32)))
        out = out.assign(embedding=(("beta", "lat", "lon", "feature"), data))
    out["embedding"] = out["embedding"].chunk({"beta": chunks.get("beta", 1), "feature": chunks.get("feature", -1)})
    out["embedding"].attrs.update(long_name="RANGE geo-embedding [H_beta | q_hat]", units="1",
                                  grid_mapping=GRID_MAPPING)
    out["beta"].attrs.update(long_name="RANGE+ beta: weight of the semantic head (0 = spatial, 1 = semantic)",
                             units="1")
    return out


def _as_dataset(cube: str | Path | xr.Dataset, betas: float | Sequence[float] | None = None) -> xr.Dataset:
    """An opened cube: a path is opened at ``betas`` (so a heads-layout cube blends exactly those)."""
    return open_cube(cube, beta=betas) if isinstance(cube, (str, Path, StoreLocation)) else cube


def _beta_indices(ds: xr.Dataset, betas: float | Sequence[float] | None, tol: float = 1e-6) -> list[int]:
    available = np.asarray(ds["beta"].values, dtype=np.float64)
    if betas is None:
        return list(range(len(available)))
    wanted = [float(betas)] if isinstance(betas, (int, float)) else [float(b) for b in betas]
    heads = ds.attrs.get(ENCODING_KEY, {}).get("layout") == "heads" if isinstance(ds.attrs.get(ENCODING_KEY),
                                                                                   dict) else False
    out = []
    for beta in wanted:
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta={beta}: β must be in [0, 1] (0 = spatial head, 1 = semantic head)")
        hits = np.flatnonzero(np.abs(available - beta) <= tol)
        if not len(hits):
            fix = ("this heads-layout cube gives any β in [0, 1]: open it with open_cube(path, beta=...)" if heads
                   else "Pick one of those (embed-grid --betas sets the levels of a cube).")
            raise ConfigError(
                f"beta={beta} is not in the cube; it holds beta = {', '.join(f'{b:g}' for b in available)}. {fix}"
            )
        out.append(int(hits[0]))
    return out


def select_beta(cube: str | Path | xr.Dataset, beta: float) -> xr.DataArray:
    """The embedding field at one β level.

    Args:
        cube: a cube path or an opened dataset (see :func:`open_cube`).
        beta: a β level present in the cube (matched within 1e-6; a heads-layout cube path: any β in [0, 1]).

    Returns:
        Lazy DataArray (lat, lon, feature), decoded, with the ``beta`` scalar coordinate.

    Raises:
        ConfigError: the cube has no such β (the available ones are listed).
    """
    ds = _as_dataset(cube, beta)
    (index,) = _beta_indices(ds, beta)
    return ds["embedding"].isel(beta=index)


@dataclass(frozen=True)
class GridAxes:
    """Geometry of a cube's regular grid, in degrees.

    Attributes:
        lat0: first (northernmost) cell-centre latitude.
        dlat: latitude step (positive; latitudes descend).
        n_lat: number of rows.
        lon0: first (westernmost) cell-centre longitude.
        dlon: longitude step (positive).
        n_lon: number of columns.
    """

    lat0: float
    dlat: float
    n_lat: int
    lon0: float
    dlon: float
    n_lon: int

    @property
    def global_lon(self) -> bool:
        """Whether the columns span the whole globe (then lon wraps at the antimeridian)."""
        return abs(self.n_lon * self.dlon - 360.0) < 1e-6 * 360.0

    @classmethod
    def from_coords(cls, lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], source: str) -> GridAxes:
        """Check that the coordinates form a regular north-up grid and describe it.

        Raises:
            ConfigError: irregular spacing, lat not descending, lon not ascending, or a single
                row/column (the step cannot be inferred).
        """
        lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        if len(lat) < 2 or len(lon) < 2:
            raise ConfigError(
                f"{source}: the grid has {len(lat)} row(s) and {len(lon)} column(s); sampling needs at least 2 "
                "of each to know the cell size. Use a cube with a larger --bbox."
            )
        dlat, dlon = np.diff(lat), np.diff(lon)
        for name, steps, sign in (("lat", dlat, -1.0), ("lon", dlon, 1.0)):
            if not (np.all(sign * steps > 0) and np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9)):
                order = "descending" if sign < 0 else "ascending"
                raise ConfigError(f"{source}: {name} is not a regular {order} axis; expected a cube from embed-grid")
        return cls(float(lat[0]), float(-dlat[0]), len(lat), float(lon[0]), float(dlon[0]), len(lon))

    def fractional_index(self, lonlat: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
        """Fractional (row, column) of each point in cell-centre index space, float64 (N,) each.

        On a globe-spanning grid the column is taken modulo ``n_lon`` into [0, n_lon).
        """
        rows = (self.lat0 - lonlat[:, 1]) / self.dlat
        cols = (lonlat[:, 0] - self.lon0) / self.dlon
        if self.global_lon:
            cols = np.mod(cols, self.n_lon)
        return rows, cols


def _check_inside(axes: GridAxes, lonlat: npt.NDArray[np.float64], rows: npt.NDArray[np.float64],
                  cols: npt.NDArray[np.float64], source: str) -> None:
    """Points more than half a cell outside the grid (a bbox cube) are refused, the first one named."""
    outside = (rows < -0.5 - 1e-9) | (rows > axes.n_lat - 0.5 + 1e-9)
    if not axes.global_lon:
        outside |= (cols < -0.5 - 1e-9) | (cols > axes.n_lon - 0.5 + 1e-9)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        west, east = axes.lon0 - axes.dlon / 2, axes.lon0 + (axes.n_lon - 0.5) * axes.dlon
        south, north = axes.lat0 - (axes.n_lat - 0.5) * axes.dlat, axes.lat0 + axes.dlat / 2
        raise CoordinateError(
            f"{source}: point {i} (lon={lonlat[i, 0]}, lat={lonlat[i, 1]}) lies outside the cube, which covers "
            f"lon [{west:g}, {east:g}], lat [{south:g}, {north:g}] ({int(outside.sum())} point(s) outside). "
            "Drop those points or sample a cube whose --bbox covers them."
        )


def _corner_plan(
    axes: GridAxes, rows: npt.NDArray[np.float64], cols: npt.NDArray[np.float64], method: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Cells and weights per point: (N, C) row and column indices and (N, C) weights summing to 1."""
    if method == "nearest":
        r = np.clip(np.floor(rows + 0.5), 0, axes.n_lat - 1).astype(np.int64)
        c = np.floor(cols + 0.5).astype(np.int64)
        c = np.mod(c, axes.n_lon) if axes.global_lon else np.clip(c, 0, axes.n_lon - 1)
        return r[:, None], c[:, None], np.ones((len(r), 1))
    # bilinear: clamp rows beyond the outermost centres (constant in lat there)
    rr = np.clip(rows, 0.0, axes.n_lat - 1.0)
    r0 = np.minimum(np.floor(rr), axes.n_lat - 2).astype(np.int64) if axes.n_lat > 1 else np.zeros(len(rr), np.int64)
    wy = rr - r0
    if axes.global_lon:
        c0f = np.floor(cols)
        wx = cols - c0f
        c0 = np.mod(c0f.astype(np.int64), axes.n_lon)
        c1 = np.mod(c0 + 1, axes.n_lon)  # the antimeridian: last column's neighbour is column 0
    else:
        cc = np.clip(cols, 0.0, axes.n_lon - 1.0)
        c0 = np.minimum(np.floor(cc), axes.n_lon - 2).astype(np.int64)
        wx = cc - c0
        c1 = c0 + 1
    r1 = r0 + 1
    r_idx = np.stack([r0, r0, r1, r1], axis=1)
    c_idx = np.stack([c0, c1, c0, c1], axis=1)
    weights = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], axis=1)
    return r_idx, c_idx, weights


def _read_cells(emb: xr.DataArray, beta_idx: Sequence[int], r: npt.NDArray[np.int64],
                c: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Values of cells (r[k], c[k]) at the given β indices: (B, K, F) float64."""
    import xarray as xr

    picked = emb.isel(beta=list(beta_idx), lat=xr.DataArray(r, dims="cell"), lon=xr.DataArray(c, dims="cell"))
    return np.asarray(picked.transpose("beta", "cell", "feature").values, dtype=np.float64)


def sample_cube(
    cube: str | Path | xr.Dataset,
    lonlat: npt.ArrayLike,
    *,
    betas: float | Sequence[float] | None = None,
    method: str = "nearest",
) -> xr.DataArray:
    """Embeddings of a cube at arbitrary points (nearest cell or bilinear interpolation).

    Only the cells around the points are read, ``POINT_BLOCK`` points at a time. See the module
    docstring for the treatment of the antimeridian, the poles and NaN (ocean) cells.

    Args:
        cube: a cube path or an opened dataset (see :func:`open_cube`).
        lonlat: (N, 2) (lon, lat) degrees.
        betas: one β, several, or None for all β levels of the cube.
        method: ``nearest`` or ``bilinear``.

    Returns:
        DataArray (beta, point, feature) float32 with coordinates ``beta``, ``feature`` and
        per-point ``lon`` / ``lat`` (the query points, not the cell centres).

    Raises:
        ConfigError: unknown method, a β not in the cube, or a cube that is not a regular grid.
        CoordinateError: invalid points, or points outside a bbox cube (the first one is named).
    """
    import xarray as xr

    if method not in METHODS:
        raise ConfigError(f"method={method!r}: use one of {', '.join(METHODS)}")
    ds = _as_dataset(cube, betas)
    source = str(ds.encoding.get("source", "cube"))
    points = validate_lonlat(lonlat, source="points")
    beta_idx = _beta_indices(ds, betas)
    axes = GridAxes.from_coords(ds["lat"].values, ds["lon"].values, source)
    rows, cols = axes.fractional_index(points)
    _check_inside(axes, points, rows, cols, "points")
    r_idx, c_idx, weights = _corner_plan(axes, rows, cols, method)
    emb = ds["embedding"]
    out = np.empty((len(beta_idx), len(points), emb.sizes["feature"]), dtype=np.float32)
    for start in range(0, len(points), POINT_BLOCK):
        block = slice(start, start + POINT_BLOCK)
        r, c, w = r_idx[block], c_idx[block], weights[block]
        flat = r.ravel() * axes.n_lon + c.ravel()
        unique, inverse = np.unique(flat, return_inverse=True)
        cells = _read_cells(emb, beta_idx, unique // axes.n_lon, unique % axes.n_lon)  # (B, U, F)
        values = cells[:, inverse.reshape(r.shape)]  # (B, n, C, F)
        valid = np.asarray(np.isfinite(values).all(axis=-1))  # (B, n, C): NaN cells are NaN throughout
        wv = np.where(valid, w[None], 0.0)
        total = wv.sum(axis=-1, keepdims=True)
        has_data = total > 0
        wn = wv / np.where(has_data, total, 1.0)  # weights of the valid corners, renormalised to sum 1
        summed = np.einsum("bnc,bncf->bnf", wn, np.where(valid[..., None], values, 0.0))
        summed[~has_data[..., 0]] = np.nan
        out[:, block] = summed
    beta_values = ds["beta"].values[beta_idx]
    return xr.DataArray(
        out,
        dims=("beta", "point", "feature"),
        coords={"beta": beta_values, "feature": ds["feature"].values, "lon": ("point", points[:, 0]),
                "lat": ("point", points[:, 1])},
        attrs={"method": method, "long_name": "RANGE geo-embedding sampled from a cube"},
    )


def to_numpy(samples: xr.DataArray) -> npt.NDArray[np.float32]:
    """(B, N, F) float32 array of :func:`sample_cube`'s output."""
    return np.asarray(samples.transpose("beta", "point", "feature").values, dtype=np.float32)


def to_dataframe(samples: xr.DataArray) -> pd.DataFrame:
    """One row per point and β: columns ``point``, ``lon``, ``lat``, ``beta``, ``f0`` … ``f{F-1}`` (float32)."""
    import pandas as pd

    values = to_numpy(samples)
    b, n, f = values.shape
    frame = pd.DataFrame(values.reshape(b * n, f), columns=[f"f{i}" for i in range(f)])
    head = pd.DataFrame({
        "point": np.tile(np.arange(n), b),
        "lon": np.tile(samples["lon"].values, b),
        "lat": np.tile(samples["lat"].values, b),
        "beta": np.repeat(samples["beta"].values, n),
    })
    return pd.concat([head, frame], axis=1)
