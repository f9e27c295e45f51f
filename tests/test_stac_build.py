"""STAC search, chip reads and the database build against real local servers (rustac + a Range HTTP server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from range_dist.chips.radiometry import scene_offset, to_reflectance
from range_dist.chips.read import chip_geometry, coarse_window, read_chip
from range_dist.database import RetrievalDatabase
from range_dist.database.append import failure_table
from range_dist.encoders.image import load_image_encoder
from range_dist.errors import StacError
from range_dist.executors import build_database
from range_dist.jobs.build.steps import judge_chip
from range_dist.locations.sampling import sample_locations, write_locations
from range_dist.stac.scenes import SceneRef, scene_from_item, select_candidates
from range_dist.stac.search import (
    SearchConfig,
    StacSearcher,
    choose_filter_mode,
    geometry_contains,
    group_by_cell,
    item_contains,
    search_parameters,
)
from range_dist.testing.servers import RangeServer
from range_dist.testing.world import RESOLUTION, band_pixels, scene_center, write_scene
from tests.stac_world import World, build_config, make_world

torch.set_num_threads(2)


# ---------------------------------------------------------------------------- pure
def test_offset_by_processing_baseline() -> None:
    assert scene_offset("faithful", "05.09", False) == 0
    assert scene_offset("harmonised", "05.09", False) == 1000
    assert scene_offset("harmonised", "04.00", False) == 1000
    assert scene_offset("harmonised", "03.01", False) == 0
    assert scene_offset("harmonised", "05.09", True) == 0  # provider already removed it
    refl = to_reflectance(np.array([[[0, 1000, 3000]]], np.uint16), 1000)
    np.testing.assert_allclose(refl.ravel(), [0.0, 0.0, 0.2])


def test_candidates_sorted_and_filtered() -> None:
    def s(i: str, c: float, d: str = "2022-01-01") -> SceneRef:
        return SceneRef(i, "c", d, c, "05.00", False, (), "")

    picked = select_candidates([s("a", 30), s("b", 10), s("c", 10, "2023-01-01"), s("d", float("nan")), s("b", 10)],
                               20, 5)
    assert [x.item_id for x in picked] == ["c", "b", "d"]
    assert choose_filter_mode(True, False) == "query" and choose_filter_mode(False, True) == "filter"
    assert choose_filter_mode(False, False) == "client" and choose_filter_mode(True, True, "client") == "client"
    params = search_parameters(SearchConfig(url="x", max_cloud=15), 1.0, 2.0, "query")
    assert params["query"] == {"eo:cloud_cover": {"lte": 15}}
    assert "filter" in search_parameters(SearchConfig(url="x"), 1.0, 2.0, "filter")


def test_window_geometry() -> None:
    geom = chip_geometry((10.0, 0, 500000.0, 0, -10.0, 5000000.0), 500000 + 2885.0, 5000000 - 3004.0, 256)
    assert (geom.left, geom.top) == (500000 + 160 * 10, 5000000 - 172 * 10)
    row0, col0, rows, cols, factor, row_off, col_off = coarse_window((20.0, 0, 500000.0, 0, -20.0, 5000000.0), geom)
    assert (factor, row0, col0, row_off, col_off, rows, cols) == (2, 86, 80, 0, 0, 128, 128)
    row0, col0, rows, cols, factor, row_off, col_off = coarse_window((60.0, 0, 500000.0, 0, -60.0, 5000000.0), geom)
    assert (factor, row0, col0, row_off, col_off) == (6, 28, 26, 4, 4)


def test_sample_locations_on_land(tmp_path: Path) -> None:
    from range_dist.geo.land import land_mask
    from range_dist.locations.sampling import read_locations

    locs = sample_locations(200, seed=3)
    assert len(locs) == 200 and land_mask(locs.lonlat).all()
    np.testing.assert_array_equal(sample_locations(200, seed=3).lonlat, locs.lonlat)
    back = read_locations(write_locations(locs, tmp_path / "l.parquet"))
    assert back.ids == locs.ids
    np.testing.assert_array_equal(back.lonlat, locs.lonlat)


# ---------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = make_world(tmp_path_factory.mktemp("s2world"))
    yield built
    built.close()


def test_search_against_rustac_filters_client_side(world: World) -> None:
    searcher = StacSearcher(SearchConfig(url=world.stac.url, datetime=None, max_cloud=20))
    assert searcher.mode == "client"  # rustac declares no query/filter conformance
    scenes = searcher.search(*scene_center(world.specs["edge"]))
    assert [s.item_id for s in scenes] == ["S2_EDGE", "S2_EDGE_OK"]  # least cloudy first
    scenes = searcher.search(*scene_center(world.specs["clear"]))
    assert [s.item_id for s in scenes] == ["S2_CLEAR"]  # the 60 % scene is filtered out
    assert searcher.search(-60.0, -10.0) == []


def test_chip_matches_generated_pixels_and_reads_few_bytes(world: World) -> None:
    spec = world.specs["clear"]
    item = StacSearcher(SearchConfig(url=world.stac.url, datetime=None)).search(*scene_center(spec, 1234, -777))[0]
    world.http.reset_counters()
    chip = read_chip(item, *scene_center(spec, 1234, -777), settings={"VSI_CACHE": "FALSE"})
    geom = chip_geometry((10.0, 0, spec.origin[0], 0, -10.0, spec.origin[1]),
                         spec.origin[0] + spec.size10 * 5 + 1234, spec.origin[1] - spec.size10 * 5 - 777, 256)
    c0, r0 = round((geom.left - spec.origin[0]) / 10), round((spec.origin[1] - geom.top) / 10)
    for i, band in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")):
        f = RESOLUTION[band] // 10
        n = spec.size10 // f
        full = np.repeat(np.repeat(band_pixels(band, (n, n), spec.seed), f, 0), f, 1)
        np.testing.assert_array_equal(chip.dn[i], full[r0 : r0 + 256, c0 : c0 + 256], err_msg=band)
    assert (chip.scl == 4).all()
    assert abs(chip.center_lonlat[0] - scene_center(spec, 1234, -777)[0]) < 1e-3
    served = sum(world.http.bytes_served.values())
    assert served > 0


def test_judge_chip_nodata_and_cloud(world: World) -> None:
    edge = scene_from_item(write_scene(world.specs["edge"], world.root / "tmp", world.http.url))
    assert edge.item_id == "S2_EDGE"
    dn = np.ones((12, 4, 4), np.uint16)
    scl = np.full((4, 4), 4, np.uint8)
    from range_dist.chips.read import Chip

    chip = Chip(dn, scl, (0.0, 0.0), "EPSG:32633", (0, 0, 1, 1))
    assert judge_chip(chip, 0.1, 20)[0] is None
    scl2 = scl.copy()
    scl2[:2] = 9
    assert judge_chip(Chip(dn, scl2, (0, 0), "", (0, 0, 1, 1)), 0.1, 20)[0] == "too_cloudy"
    dn2 = dn.copy()
    dn2[:, :, :1] = 0
    assert judge_chip(Chip(dn2, scl, (0, 0), "", (0, 0, 1, 1)), 0.1, 20)[0] == "nodata"


def test_build_database_end_to_end(world: World, tmp_path: Path) -> None:
    world.http.fail_next.update({"B02.tif": [429, 500], "B08.tif": [503]})  # transient faults, retried by GDAL
    out = tmp_path / "db.zarr"
    report = build_database(build_config(world, out, radiometry="harmonised"), quiet=True)
    assert world.http.statuses[429] >= 1 and world.http.statuses[500] >= 1
    db = RetrievalDatabase.open(out)
    ids = [str(i) for i in db.provenance["location_id"]]
    assert sorted(ids) == ["loc-clear", "loc-edge", "loc-flaky", "loc-old"]
    failures = {loc: reason for loc, reason, _ in failure_table(out)}
    assert failures == {"loc-scl_cloud": "too_cloudy", "loc-truncated": "corrupt_file", "loc-none": "no_scene"}
    assert report.rows_written == 4 and sum(report.failures.values()) == 3
    row = {loc: i for i, loc in enumerate(ids)}
    assert str(db.provenance["item_id"][row["loc-edge"]]) == "S2_EDGE_OK"  # nodata scene rejected, next candidate
    assert int(db.provenance["offset_applied"][row["loc-clear"]]) == 1000  # baseline 05.09
    assert int(db.provenance["offset_applied"][row["loc-old"]]) == 0  # baseline 03.01
    assert db.key_dim == 256 and db.value_dim == 1024
    assert db.attrs["radiometry"] == "harmonised" and "B04,B03,B02" in db.attrs["rgb_rendering"]
    # rows aligned by location id: recompute one row's key from its chip
    i = row["loc-old"]
    spec = world.specs["old"]
    scene = StacSearcher(SearchConfig(url=world.stac.url, datetime=None)).search(*scene_center(spec))[0]
    chip = read_chip(scene, *scene_center(spec))
    key_model = load_image_encoder("satclip-resnet18", world.key_ckpt)
    np.testing.assert_allclose(db.keys[i], key_model.encode(to_reflectance(chip.dn, 0)[None])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db.locations[i], chip.center_lonlat)
    # rerun: nothing new, failures retried and still recorded
    again = build_database(build_config(world, out, radiometry="harmonised"), quiet=True)
    assert again.skipped_done == 4 and again.rows_written == 0
    assert RetrievalDatabase.open(out).rows == 4
    # another radiometry is refused
    from range_dist.errors import StoreMismatchError

    with pytest.raises(StoreMismatchError, match="radiometry"):
        build_database(build_config(world, out, radiometry="faithful"), quiet=True)


def test_resume_after_kill(world: World, tmp_path: Path) -> None:
    out = tmp_path / "killed.zarr"
    cfg = build_config(world, out, batch_size=1)
    script = ("import sys, pickle; from range_dist.executors import build_database; "
              "build_database(pickle.loads(bytes.fromhex(sys.argv[1])), quiet=True)")
    import pickle

    # the test seam (range_dist.util.fault_injection): sleep after each batch, so the kill lands between batches
    env = {**os.environ, "RANGE_DIST_TEST_FAULTS": "sleep_after_batch=1"}
    proc = subprocess.Popen([sys.executable, "-c", script, pickle.dumps(cfg).hex()], cwd=Path(__file__).parent.parent,
                            env=env)
    import zarr

    deadline = time.time() + 120
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            rows = int(zarr.open_group(str(out), mode="r").attrs["range_dist_database"]["rows"])
        except Exception:
            continue
        if rows >= 1:
            break
    proc.kill()
    proc.wait()
    assert rows >= 1
    report = build_database(cfg, quiet=True)
    db = RetrievalDatabase.open(out)
    ids = [str(i) for i in db.provenance["location_id"]]
    assert sorted(ids) == ["loc-clear", "loc-edge", "loc-flaky", "loc-old"]  # each exactly once
    assert report.skipped_done >= 1


def test_geoparquet_export(tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq

    from range_dist.database.geoparquet import point_wkb, to_geoparquet

    rng = np.random.default_rng(0)
    db = RetrievalDatabase(np.array([[8.5, 47.4], [-70.0, -33.0]]), rng.normal(size=(2, 4)), rng.normal(size=(2, 3)),
                           {"location_id": np.array(["a", "b"])})
    path = to_geoparquet(db, tmp_path / "db.parquet")
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert table.column("geometry")[1].as_py() == point_wkb(-70.0, -33.0)
    np.testing.assert_allclose(np.array(table.column("value").to_pylist()), db.values, rtol=1e-6)
    assert table.column("location_id").to_pylist() == ["a", "b"]


def _assert_same_rows(path_a: Path, path_b: Path) -> None:
    """Two databases hold the same rows (matched by location id) and the same failure table."""
    a, b = RetrievalDatabase.open(path_a), RetrievalDatabase.open(path_b)
    ids_a = [str(i) for i in a.provenance["location_id"]]
    ids_b = [str(i) for i in b.provenance["location_id"]]
    order_a, order_b = np.argsort(ids_a), np.argsort(ids_b)
    assert sorted(ids_a) == sorted(ids_b)
    np.testing.assert_allclose(a.locations[order_a], b.locations[order_b])
    np.testing.assert_allclose(a.keys[order_a], b.keys[order_b], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.values[order_a], b.values[order_b], rtol=1e-4, atol=1e-4)
    assert {r[0]: r[1] for r in failure_table(path_b)} == {r[0]: r[1] for r in failure_table(path_a)}


def test_build_on_ray_equals_local_build(world: World, tmp_path: Path) -> None:
    """The Ray executor (read tasks + an encoder actor, the driver as single writer) gives the same rows."""
    local = build_database(build_config(world, tmp_path / "local.zarr"), quiet=True)
    on_ray = build_database(build_config(world, tmp_path / "ray.zarr", executor="ray"), quiet=True)
    assert on_ray.rows_written == local.rows_written == 4 and on_ray.failures == local.failures
    _assert_same_rows(tmp_path / "local.zarr", tmp_path / "ray.zarr")


def test_build_with_grouped_searches_equals_per_location_build(world: World, tmp_path: Path) -> None:
    """One search per 1° cell of each batch (the scenes lie within a degree) gives the same database."""
    per_location = build_database(build_config(world, tmp_path / "single.zarr"), quiet=True)
    grouped = build_database(build_config(world, tmp_path / "grouped.zarr", search_group_deg=1.0, batch_size=8),
                             quiet=True)
    assert grouped.rows_written == per_location.rows_written == 4 and grouped.failures == per_location.failures
    _assert_same_rows(tmp_path / "single.zarr", tmp_path / "grouped.zarr")


# ---------------------------------------------------------------------------- grouping by area
def test_group_by_cell_and_footprint_containment() -> None:
    assert group_by_cell([(0.2, 0.3), (5.0, 5.0), (0.9, 0.1), (-0.1, 0.5)], 1.0) == [[0, 2], [1], [3]]
    with pytest.raises(ValueError, match="must be > 0"):
        group_by_cell([(0, 0)], 0)
    square = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]]
    hole = [[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0], [1.0, 1.0]]
    polygon = {"type": "Polygon", "coordinates": [square, hole]}
    assert geometry_contains(polygon, 3.0, 3.0) and not geometry_contains(polygon, 1.5, 1.5)
    assert not geometry_contains(polygon, 5.0, 1.0)
    multi = {"type": "MultiPolygon", "coordinates": [[square], [[[10, 10], [11, 10], [11, 11], [10, 10]]]]}
    assert geometry_contains(multi, 10.8, 10.2) and not geometry_contains(multi, 10.2, 10.8)
    assert item_contains({"bbox": [0, 0, 1, 1]}, 0.5, 0.5) and not item_contains({"bbox": [0, 0, 1, 1]}, 2, 0.5)
    assert not item_contains({}, 0.0, 0.0)
    with pytest.raises(ValueError, match="expected Polygon or MultiPolygon"):
        geometry_contains({"type": "Point", "coordinates": [0, 0]}, 0, 0)


@pytest.mark.parametrize("max_items", [1, 50])
def test_grouped_search_equals_per_point_on_rustac(world: World, max_items: int) -> None:
    searcher = StacSearcher(SearchConfig(url=world.stac.url, datetime=None, max_items=max_items))
    points = [scene_center(spec, dx, dy) for spec in world.specs.values() for dx, dy in ((0, 0), (3000, -2000))]
    points.append((-60.0, -10.0))  # no scene there
    per_point = [searcher.search(lon, lat) for lon, lat in points]
    groups = group_by_cell(points, 1.0)
    assert len(groups) < len(points)  # the scenes lie within one degree
    for group in groups:
        assert searcher.search_many([points[i] for i in group]) == [per_point[i] for i in group]


# ---------------------------------------------------------------------------- Planetary Computer signing
@pytest.fixture
def token_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeServer]:
    """A local SAS token service in the Planetary Computer's format (``{sas_url}/{account}/{container}``)."""
    planetary_computer = pytest.importorskip("planetary_computer")
    expiry = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    folder = tmp_path / "sas" / "sentinel2l2a01"
    folder.mkdir(parents=True)
    (folder / "sentinel2-l2").write_text(json.dumps({"msft:expiry": expiry, "token": "sv=2024&sig=local"}))
    server = RangeServer(tmp_path).start()
    monkeypatch.setenv("PC_SDK_SAS_URL", f"{server.url}/sas")
    planetary_computer.settings.Settings.get.cache_clear()
    planetary_computer.sas.TOKEN_CACHE.clear()
    yield server
    server.stop()
    planetary_computer.settings.Settings.get.cache_clear()
    planetary_computer.sas.TOKEN_CACHE.clear()


def _blob_scene(item_id: str) -> SceneRef:
    base = f"https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/{item_id}"
    return SceneRef(item_id, "sentinel-2-l2a", "2022-06-01T10:00:00Z", 3.0, "05.09", False,
                    (("B04", f"{base}/B04.tif"), ("B03", f"{base}/B03.tif")), f"{base}/SCL.tif", sign=True)


def test_planetary_computer_signing_against_a_local_token_service(token_service: RangeServer) -> None:
    from range_dist.stac.search import sign_scene

    signed = [sign_scene(_blob_scene(f"S2_{i}")) for i in range(3)]
    for scene in signed:
        assert not scene.sign  # marked as signed: the chip reader will not sign again
        assert all(href.endswith("?sv=2024&sig=local") for _, href in scene.hrefs)
        assert scene.scl_href.endswith("/SCL.tif?sv=2024&sig=local")
    assert token_service.requests["sas/sentinel2l2a01/sentinel2-l2"] == 1  # one token per container, cached
    local = SceneRef("L", "c", "2022-06-01", 1.0, "05.09", False, (("B04", "http://127.0.0.1:1/B04.tif"),),
                     "http://127.0.0.1:1/SCL.tif", sign=True)
    assert sign_scene(local).hrefs == local.hrefs  # only Azure blob storage is signed


def test_signing_failures_are_stac_errors(token_service: RangeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from range_dist.stac.search import sign_scene

    token_service.fail_next["sentinel2-l2"] = [403]
    with pytest.raises(StacError, match=r"signing the assets of S2_X failed.*token service http://127\.0\.0\.1"):
        sign_scene(_blob_scene("S2_X"))
    monkeypatch.setitem(sys.modules, "planetary_computer", None)  # as if the package were not installed
    with pytest.raises(StacError, match="pip install planetary-computer"):
        sign_scene(_blob_scene("S2_Y"))
