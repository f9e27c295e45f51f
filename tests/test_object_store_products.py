"""The cube products on object storage: overviews, STAC and verify of a cube at an ``s3://`` URL.

A real S3 server (SeaweedFS on 127.0.0.1, as in tests/test_object_store.py), no mocks. Each product
made from the cube in a bucket equals the one made from the same job's cube on local disk: the
overview pyramid (and its resume), the STAC Item (whose Zarr asset is the URL), and ``verify``
(a clean cube, a deleted shard object named by its tile, ``--repair`` in the bucket); a store that
is not there is one line, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pystac.validation
import pytest
import xarray as xr
import zarr

from range_dist.analysis.cube import open_cube
from range_dist.cli.main import main
from range_dist.cube.overviews import build_overviews, level_path
from range_dist.cube.stac import ZARR_MEDIA_TYPE, write_catalog
from range_dist.cube.store import TILE_COMPUTED, read_tile_status
from range_dist.errors import ConfigError
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.testing.s3 import SeaweedS3
from range_dist.util.stores import StoreLocation
from tests.helpers import one_line_error

#: Two levels on the 20° cube below: 40° (5 × 9 cells) and 80° (3 × 5).
MIN_RESOLUTION = 80.0

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> GridJobConfig:
    """A 20° land-only grid (9 × 18 cells) in 4 × 4 tiles: computed and skipped tiles, an odd number of rows."""
    ckpt, db = sample_assets
    return GridJobConfig(resolution=20.0, betas=(0.0, 0.5, 1.0), satclip=ckpt, db=db,
                         out=tmp_path_factory.mktemp("local") / "cube.zarr", tile_size=4, chunk_size=2,
                         executor="local", land_only=True, dtype="float32")


def _embed(cfg: GridJobConfig) -> None:
    with open(os.devnull, "w") as quiet:
        embed_grid(cfg, executor="local", log=quiet)


@pytest.fixture(scope="module")
def local_cube(config: GridJobConfig) -> Path:
    """The reference: the same job on local disk."""
    _embed(config)
    return Path(config.out)


@pytest.fixture(scope="module")
def local_pyramid(local_cube: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The overviews of the local cube (on a copy: the other tests compare with the cube as embedded)."""
    store = tmp_path_factory.mktemp("pyramid") / "cube.zarr"
    shutil.copytree(local_cube, store)
    build_overviews(store, min_resolution=MIN_RESOLUTION)
    return store


def _s3_cube(config: GridJobConfig, bucket: str) -> str:
    url = f"s3://{bucket}/cube.zarr"
    _embed(replace(config, out=url))
    return url


def _open(s3: SeaweedS3, url: str, group: str | None = None) -> xr.Dataset:
    """What a user does: a plain xarray call with the URL and storage options."""
    return xr.open_zarr(url, group=group, storage_options=s3.storage_options(), decode_coords="all")


# ------------------------------------------------------------------ overviews


def test_overviews_on_s3_equal_the_local_pyramid_and_resume(
        s3: SeaweedS3, bucket: str, config: GridJobConfig, local_pyramid: Path) -> None:
    url = _s3_cube(config, bucket)
    reports = build_overviews(url, min_resolution=MIN_RESOLUTION)
    assert [(r.level, r.shape) for r in reports] == [(1, (5, 9)), (2, (3, 5))]
    assert all(r.already_done == 0 and r.computed > 0 for r in reports)
    for k in (1, 2):
        got = open_cube(url, level=k)
        want = open_cube(local_pyramid, level=k)
        np.testing.assert_array_equal(got["embedding"].values, want["embedding"].values)
        remote, local = _open(s3, url, f"overviews/{k}"), xr.open_zarr(local_pyramid, group=f"overviews/{k}")
        for name in ("tile_status", "tile_checksum", "tile_cells"):
            np.testing.assert_array_equal(remote[name].values, local[name].values)
        assert remote.attrs["spatial:transform"] == local.attrs["spatial:transform"]
    root: Any = zarr.open_group(StoreLocation.parse(url).zarr_store(read_only=True), mode="r")
    local_root: Any = zarr.open_group(str(local_pyramid), mode="r")
    assert root.attrs["multiscales"] == local_root.attrs["multiscales"]
    # consolidated at the end, levels included, as locally
    flat = root.metadata.consolidated_metadata.flattened_metadata
    assert "overviews/2/embedding" in flat
    assert set(flat) == set(local_root.metadata.consolidated_metadata.flattened_metadata)
    assert level_path(url, 2) == f"{url}/overviews/2" and level_path(url, 0) == url
    with pytest.raises(ConfigError, match=r"no such overview level \(levels: 0, 1, 2\)"):
        level_path(url, 7)

    # resume: a tile of level 1 unmarked (as if the run stopped before it) is the only one recomputed
    record = zarr.open_array(StoreLocation.parse(url).child("overviews/1/tile_status").zarr_store(), mode="r+")
    status = np.asarray(record[...])
    row, col = (int(i[0]) for i in np.nonzero(status == TILE_COMPUTED))
    record[row, col] = 0
    seen: list[tuple[int, int, int]] = []
    again = build_overviews(url, min_resolution=MIN_RESOLUTION, on_tile=lambda *t: seen.append(t))
    assert seen == [(1, row, col)]
    assert again[0].computed == 1 and again[0].already_done == status.size - 1
    assert again[1].computed == 0 and again[1].already_done == reports[1].computed + reports[1].skipped
    np.testing.assert_array_equal(open_cube(url, level=1)["embedding"].values,
                                  open_cube(local_pyramid, level=1)["embedding"].values)


def test_overviews_command_on_s3(s3: SeaweedS3, bucket: str, config: GridJobConfig, local_pyramid: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = _s3_cube(config, bucket)
    assert main(["overviews", url, "--min-resolution", "80", "--dry-run"]) == 0
    assert f"overviews plan: {url} (20°, 9x18) -> levels 1: 40° 5x9, 2: 80° 3x5" in capsys.readouterr().out
    assert main(["overviews", url, "--min-resolution", "80"]) == 0
    out = capsys.readouterr().out
    assert "level 1: 40° 5x9 cells" in out and f"wrote {url}/overviews (multiscales recorded on the root)" in out
    assert main(["overviews", url, "--min-resolution", "80"]) == 0  # a rerun: every tile already done
    out = capsys.readouterr().out  # tiles of 4 × 4 cells: 2 × 3 of them on level 1, 1 × 2 on level 2
    assert "level 1: 40° 5x9 cells; tiles computed 0, skipped 0, already done 6" in out
    assert "level 2: 80° 3x5 cells; tiles computed 0, skipped 0, already done 2" in out
    np.testing.assert_array_equal(_open(s3, url, "overviews/2")["embedding"].values,
                                  xr.open_zarr(local_pyramid, group="overviews/2")["embedding"].values)
    assert not StoreLocation.parse(url).sibling(".lease").exists()  # released
    line = one_line_error(capsys, ["overviews", f"s3://{bucket}/missing.zarr"])
    assert f"cube s3://{bucket}/missing.zarr does not exist" in line
    line = one_line_error(capsys, ["overviews", "s3://no-such-bucket-here/c.zarr"])
    assert "bucket 'no-such-bucket-here' does not exist at " + s3.endpoint in line


# ------------------------------------------------------------------ STAC


def test_grid_job_with_overviews_builds_the_pyramid_in_the_bucket(
        s3: SeaweedS3, bucket: str, config: GridJobConfig, local_pyramid: Path) -> None:
    url = f"s3://{bucket}/cube.zarr"
    _embed(replace(config, out=url, overviews=MIN_RESOLUTION))  # embed-grid --overviews 80
    for k in (1, 2):
        np.testing.assert_array_equal(_open(s3, url, f"overviews/{k}")["embedding"].values,
                                      xr.open_zarr(local_pyramid, group=f"overviews/{k}")["embedding"].values)
    assert not StoreLocation.parse(url).sibling(".lease").exists()


def test_export_cog_and_map_of_a_cube_on_s3_equal_the_local_ones(
        bucket: str, config: GridJobConfig, local_cube: Path, tmp_path: Path) -> None:
    import rasterio

    url = _s3_cube(config, bucket)
    tifs = {}
    for name, cube in {"local": str(local_cube), "s3": url}.items():
        tifs[name] = tmp_path / f"{name}.tif"
        assert main(["export-cog", cube, "--beta", "0.5", "--components", "3",
                     "--out", str(tifs[name])]) == 0
        assert main(["map", cube, "--beta", "0.5", "--out", str(tmp_path / f"{name}.png")]) == 0
    with rasterio.open(tifs["local"]) as local, rasterio.open(tifs["s3"]) as remote:
        profile, want = dict(remote.profile), dict(local.profile)
        assert np.isnan(profile.pop("nodata")) and np.isnan(want.pop("nodata"))
        assert profile == want and remote.tags() == local.tags()
        np.testing.assert_array_equal(remote.read(), local.read())  # NaN where NaN
    assert (tmp_path / "s3.png").read_bytes() == (tmp_path / "local.png").read_bytes()


def test_stac_item_of_a_cube_on_s3_points_at_its_url(s3: SeaweedS3, bucket: str, config: GridJobConfig,
                                                     local_cube: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from range_dist.cube.stac import build_item

    url = _s3_cube(config, bucket)
    files = write_catalog(url, tmp_path / "catalog")
    item = pystac.Item.from_file(str(files.item))
    assert item.id == "cube"
    asset = item.assets["zarr"]
    assert asset.href == url and asset.media_type == ZARR_MEDIA_TYPE
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    assert pystac.Item.from_dict(data).to_dict(include_self_link=False, transform_hrefs=False) == data
    # the core Item schema, shipped with pystac (the extensions' schemas cannot be fetched offline)
    pystac.validation.validate_dict(data, pystac.STACObjectType.ITEM, extensions=[])
    # the same description as the local cube's, apart from the href
    local = build_item(local_cube).to_dict(include_self_link=False, transform_hrefs=False)
    for key in ("bbox", "geometry"):
        assert data[key] == local[key]
    for key in ("cube:dimensions", "cube:variables", "proj:transform", "range_dist:layout", "emb:dimensions"):
        assert data["properties"][key] == local["properties"][key]
    assert local["assets"]["zarr"]["href"] == str(local_cube.resolve())
    # the href opens: what a STAC client does with the asset (plus the object store's options)
    ds = xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"],
                         storage_options=s3.storage_options())
    assert ds["embedding"].dims == ("beta", "lat", "lon", "feature") and ds.sizes["lat"] == 9
    record = json.loads(files.api_items.read_text().splitlines()[0])
    assert record["assets"]["zarr"]["href"] == url
    # the command: the cube's URL in, a local catalog out
    assert main(["stac", url, "--out", str(tmp_path / "cat2"), "--id", "c2"]) == 0
    assert json.loads((tmp_path / "cat2" / "c2" / "c2.json").read_text())["assets"]["zarr"]["href"] == url
    capsys.readouterr()
    line = one_line_error(capsys, ["stac", f"s3://{bucket}/missing.zarr", "--out", str(tmp_path / "cat3")])
    assert "does not exist" in line


# ------------------------------------------------------------------ verify


def test_verify_finds_and_repairs_a_deleted_shard_on_s3(s3: SeaweedS3, bucket: str, config: GridJobConfig,
                                                        local_cube: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _s3_cube(config, bucket)
    assert main(["verify", url]) == 0
    assert f"{url}: every done tile is present and matches its checksum" in capsys.readouterr().out

    status = read_tile_status(url)
    row, col = (int(i[-1]) for i in np.nonzero(status == TILE_COMPUTED))
    fs = s3.filesystem()
    shard = f"{bucket}/cube.zarr/embedding/c/0/{row}/{col}/0"  # (beta, lat, lon, feature): one shard per tile
    assert fs.isfile(shard)
    fs.rm_file(shard)
    assert main(["verify", url]) == 2
    captured = capsys.readouterr()
    assert f"tile (row {row}, col {col}): missing_data" in captured.out
    assert f"`range-dist verify {url} --repair`" in captured.err

    assert main(["verify", url, "--repair"]) == 0
    assert "repaired: 1 tile(s) recomputed; 0 bad tile(s) left" in capsys.readouterr().out
    assert fs.isfile(shard)
    repaired, local = _open(s3, url), xr.open_zarr(local_cube)
    for name in ("embedding", "tile_status", "tile_checksum", "tile_cells"):
        np.testing.assert_array_equal(repaired[name].values, local[name].values)
    assert not StoreLocation.parse(url).sibling(".lease").exists()


def test_verify_of_what_is_not_there_is_one_line(s3: SeaweedS3, bucket: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, ["verify", f"s3://{bucket}/missing.zarr"])
    assert line.startswith("range-dist verify: error: ") and f"s3://{bucket}/missing.zarr does not exist" in line
    line = one_line_error(capsys, ["verify", "s3://no-such-bucket-here/c.zarr"])
    assert "bucket 'no-such-bucket-here' does not exist at " + s3.endpoint in line
    s3.filesystem().pipe_file(f"{bucket}/other.zarr/zarr.json",
                              json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode())
    line = one_line_error(capsys, ["verify", f"s3://{bucket}/other.zarr", "--repair"])
    assert "--repair recomputes cube tiles" in line
    line = one_line_error(capsys, ["verify", f"s3://{bucket}/other.zarr"])
    assert "a Zarr store that is not a range-dist database" in line
