"""The cube's template, written with zarr directly, is what xarray + rioxarray write for the same Dataset.

``range_dist.cube.store`` writes the template's metadata itself (xarray writes metadata only for
dask-backed variables, and importing xarray, dask and rioxarray cost every run ~0.7 s). The reference
below is the Dataset the store used to build: every ``zarr.json`` and every coordinate's values must be
the same, and xarray must open the cube with the CRS rioxarray reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from range_dist.cube.store import SIGNATURE_KEY, CubeLayout, _var_shape, open_or_create_cube
from range_dist.grid.spec import GridSpec
from range_dist.jobs.grid.plan import FEATURE_LAYOUT

ATTRS = {"title": "template test", "geoemb:feature_layout": FEATURE_LAYOUT, "range_dist:betas": [0.0, 0.5, 1.0]}


def xarray_template(layout: CubeLayout, attrs: dict[str, Any], out: Path) -> None:
    """The cube's metadata as xarray writes it: lazy dask arrays of the fill value, ``rio.write_crs``,
    ``to_zarr(compute=False)`` (the store's own code before it wrote the template with zarr)."""
    import dask.array as da
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr
    from zarr.codecs import BloscCodec

    grid, enc = layout.grid, layout.encoding
    coords: dict[str, Any] = {"lat": ("lat", grid.lat), "lon": ("lon", grid.lon)}
    if enc.layout == "beta":
        coords["beta"] = ("beta", np.asarray(layout.betas, dtype=np.float64))
        coords["feature"] = ("feature", np.arange(layout.feature_dim, dtype=np.int32))
    data_vars: dict[str, Any] = {}
    encoding: dict[str, Any] = {}
    for var in enc.variables():
        shape, shard, chunk = _var_shape(layout, var)
        data_vars[var.name] = (var.dims, da.full(shape, var.fill, dtype=var.dtype, chunks=shard), var.attrs)
        encoding[var.name] = {"chunks": chunk, "shards": shard, "grid_mapping": "spatial_ref",
                              "compressors": (BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),),
                              "_FillValue": var.fill if var.dtype != "int8" else None}
    ds = xr.Dataset(data_vars, coords=coords)
    ds["lat"].attrs.update(standard_name="latitude", long_name="latitude of cell centre", units="degrees_north",
                           axis="Y")
    ds["lon"].attrs.update(standard_name="longitude", long_name="longitude of cell centre", units="degrees_east",
                           axis="X")
    if "beta" in ds.coords:
        ds["beta"].attrs.update(long_name="RANGE+ beta: weight of the semantic head (0 = spatial, 1 = semantic)",
                                units="1")
        ds["feature"].attrs.update(long_name="embedding feature index",
                                   description=attrs.get("geoemb:feature_layout", ""))
    ds = ds.rio.write_crs("EPSG:4326").rio.set_spatial_dims(x_dim="lon", y_dim="lat")
    ds.attrs.update(attrs)
    ds.to_zarr(str(out), compute=False, zarr_format=3, consolidated=False, encoding=encoding, mode="w")


def documents(root: Path, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every zarr.json below ``root`` (parsed), by path; the root's attributes without ``skip``."""
    docs = {str(p.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("zarr.json"))}
    for key in skip:
        docs["zarr.json"]["attributes"].pop(key, None)
    return docs


LAYOUTS = {
    # a grid smaller than a tile (one chunk per β), the default encoding
    "beta-float16": dict(grid=GridSpec(1.0, (10.0, 0.0, 40.0, 30.0)), layout="beta", dtype="float16",
                         quantize="none", tile_size=32, chunk_size=16),
    # several tiles, int8 codes and their scales (no CF fill on the codes)
    "beta-int8": dict(grid=GridSpec(1.0, (0.0, 0.0, 60.0, 40.0)), layout="beta", dtype="float32",
                      quantize="int8", tile_size=32, chunk_size=16),
    "heads-int8": dict(grid=GridSpec(1.0, (0.0, 0.0, 60.0, 40.0)), layout="heads", dtype="float32",
                       quantize="int8", tile_size=32, chunk_size=16),
    "heads-float32-range": dict(grid=GridSpec(2.0), layout="heads", dtype="float32", quantize="none",
                                tile_size=64, chunk_size=32, heads=("sem",)),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_template_is_what_xarray_writes(name: str, tmp_path: Path) -> None:
    spec = dict(LAYOUTS[name])
    layout = CubeLayout(spec.pop("grid"), (0.0, 0.5, 1.0), 1280, **spec)
    signature = {"layout": layout.layout, "quantize": layout.quantize}
    ours = tmp_path / "ours.zarr"
    open_or_create_cube(ours, layout, signature, ATTRS)
    reference = tmp_path / "xarray.zarr"
    xarray_template(layout, {**ATTRS, **layout.encoding.to_attrs(), SIGNATURE_KEY: signature}, reference)
    record = ("tile_checksum", "tile_cells", "tile_status")  # the store's own arrays, added after the template
    mine = {k: v for k, v in documents(ours).items() if not k.startswith(record)}
    assert mine == documents(reference)
    group, expected = zarr.open_group(str(ours), mode="r"), zarr.open_group(str(reference), mode="r")
    for coordinate in ("lat", "lon", "beta", "feature", "spatial_ref"):
        if coordinate in expected:
            np.testing.assert_array_equal(group[coordinate][...], expected[coordinate][...])
    # chunks: only the coordinates' (a template writes no embedding chunk)
    chunks = sorted(str(p.relative_to(ours)) for p in ours.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert all(c.split("/")[0] in ("lat", "lon", "beta", "feature") for c in chunks), chunks


def test_xarray_reads_the_template_with_its_crs(tmp_path: Path) -> None:
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    layout = CubeLayout(GridSpec(1.0, (10.0, 0.0, 40.0, 30.0)), (0.0, 1.0), 1280, "float16", 32, 16)
    open_or_create_cube(tmp_path / "cube.zarr", layout, {"layout": "beta"}, ATTRS)
    ds = xr.open_zarr(tmp_path / "cube.zarr", consolidated=False, decode_coords="all")
    assert ds["embedding"].dims == ("beta", "lat", "lon", "feature")
    assert ds["embedding"].dtype == np.float16 and bool(np.isnan(ds["embedding"][0, 0, 0, :4]).all())
    assert ds.rio.crs.to_epsg() == 4326
    np.testing.assert_allclose(ds["lat"].values[[0, -1]], [29.5, 0.5])
