"""Search and database build against a real pgstac + stac-fastapi-pgstac API (PostgreSQL on 127.0.0.1).

The API declares the ``filter`` and ``query`` conformance classes, so the cloud filter runs on the
server: these tests check that it really excludes cloudy items there, and that candidates and
database rows equal those of ``rustac serve`` over the same items (client-side filtering).
Skipped when PostGIS or the Python pieces are missing, unless ``RANGE_DIST_REQUIRE_PGSTAC=1``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from range_dist.database import RetrievalDatabase
from range_dist.database.append import failure_table
from range_dist.executors import build_database
from range_dist.stac.search import SearchConfig, StacSearcher, group_by_cell, search_parameters
from range_dist.testing.world import scene_center
from tests.pgstac_stack import REQUIRE_ENV, PgstacStack, missing_pieces
from tests.stac_world import World, build_config, make_world

torch.set_num_threads(2)


@dataclass
class Apis:
    world: World
    pgstac: PgstacStack


@pytest.fixture(scope="module")
def apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apis]:
    missing = missing_pieces()
    if missing:
        reason = "pgstac stack unavailable: " + "; ".join(missing)
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)
    world = make_world(tmp_path_factory.mktemp("s2world_pgstac"))
    stack = PgstacStack(world.collection, world.items)  # the same items, hrefs on the same COG server
    try:
        stack.start()
        yield Apis(world, stack)
    finally:
        stack.stop()
        world.close()


def _points(world: World) -> list[tuple[float, float]]:
    """Every location, plus points off-centre in the two-scene footprints."""
    extra = [scene_center(world.specs[n], dx, dy) for n in ("clear", "edge") for dx, dy in ((2000, 1500), (-2500, 0))]
    return [(float(lon), float(lat)) for lon, lat in world.locations.lonlat] + extra


def _raw_ids(searcher: StacSearcher, lon: float, lat: float, mode: str) -> list[str]:
    """Item ids the API itself returns for one point (before any client-side filtering)."""
    params = search_parameters(searcher.config, lon, lat, mode)  # type: ignore[arg-type]
    return sorted(str(item["id"]) for item in searcher.client.search(**params).items_as_dicts())


def test_pgstac_declares_filter_and_searcher_filters_on_server(apis: Apis) -> None:
    from pystac_client.conformance import ConformanceClasses

    searcher = StacSearcher(SearchConfig(url=apis.pgstac.url, datetime=None))
    assert searcher.client.conforms_to(ConformanceClasses.FILTER)
    assert searcher.client.conforms_to(ConformanceClasses.QUERY)
    assert searcher.mode == "filter"  # CQL2 preferred over query
    assert StacSearcher(SearchConfig(url=apis.pgstac.url, server_filter="client")).mode == "client"
    assert StacSearcher(SearchConfig(url=apis.world.stac.url)).mode == "client"  # rustac declares neither
    with urllib.request.urlopen(f"{apis.pgstac.url}/queryables", timeout=10) as response:
        assert json.load(response)["properties"]["eo:cloud_cover"]["type"] == "number"


@pytest.mark.parametrize("max_cloud", [4.0, 20.0])
def test_server_side_filter_excludes_cloudy_items(apis: Apis, max_cloud: float) -> None:
    cloud = {spec.item_id: spec.cloud_cover for spec in apis.world.specs.values()}
    pg = StacSearcher(SearchConfig(url=apis.pgstac.url, datetime=None, max_cloud=max_cloud))
    rustac = StacSearcher(SearchConfig(url=apis.world.stac.url, datetime=None, max_cloud=max_cloud))
    excluded = 0
    for lon, lat in _points(apis.world):
        everything = _raw_ids(rustac, lon, lat, "client")
        assert _raw_ids(pg, lon, lat, "client") == everything  # same items, same spatial search
        kept = [i for i in everything if cloud[i] <= max_cloud]
        for mode in ("filter", "query"):
            assert _raw_ids(pg, lon, lat, mode) == kept, mode  # the server dropped the cloudy ones
        excluded += len(everything) - len(kept)
    # 20 %: the 60 % scene at the 3 points in its footprint; 4 %: also S2_CLEAR (3 points), S2_EDGE_OK (3), S2_SCLCLOUD
    assert excluded == (3 if max_cloud == 20.0 else 10)


@pytest.mark.parametrize("datetime", [None, "2021-01-01/2023-05-17", "2023-01-01/2023-12-31"])
def test_candidates_equal_client_side_filtering(apis: Apis, datetime: str | None) -> None:
    for max_cloud in (4.0, 20.0):
        configs = [SearchConfig(url=apis.pgstac.url, datetime=datetime, max_cloud=max_cloud),
                   SearchConfig(url=apis.pgstac.url, datetime=datetime, max_cloud=max_cloud, server_filter="client"),
                   SearchConfig(url=apis.world.stac.url, datetime=datetime, max_cloud=max_cloud)]
        searchers = [StacSearcher(c) for c in configs]
        points = _points(apis.world)
        per_point = [[searcher.search(lon, lat) for lon, lat in points] for searcher in searchers]
        assert per_point[0] == per_point[1] == per_point[2]
        found = sum(len(c) for c in per_point[0])
        assert (found > 0) == (datetime != "2023-01-01/2023-12-31")  # the scenes are from 2022-06-01
        # one search per area gives the same candidates on pgstac too
        grouped: list[list[object]] = [[] for _ in points]
        for group in group_by_cell(points, 1.0):
            for i, scenes in zip(group, searchers[0].search_many([points[i] for i in group])):
                grouped[i] = list(scenes)
        assert grouped == per_point[0]


def test_build_database_on_pgstac_equals_rustac(apis: Apis, tmp_path: Path) -> None:
    world = apis.world
    on_pg = build_database(build_config(world, tmp_path / "pgstac.zarr", stac_url=apis.pgstac.url), quiet=True)
    on_rustac = build_database(build_config(world, tmp_path / "rustac.zarr"), quiet=True)
    assert on_pg.rows_written == on_rustac.rows_written == 4
    assert on_pg.failures == on_rustac.failures
    a, b = RetrievalDatabase.open(tmp_path / "pgstac.zarr"), RetrievalDatabase.open(tmp_path / "rustac.zarr")
    assert a.attrs["origin"].startswith(f"stac:{apis.pgstac.url}")
    order_a = np.argsort([str(i) for i in a.provenance["location_id"]])
    order_b = np.argsort([str(i) for i in b.provenance["location_id"]])
    for column in ("location_id", "item_id", "datetime", "processing_baseline", "offset_applied", "scene_cloud_cover"):
        np.testing.assert_array_equal(a.provenance[column][order_a], b.provenance[column][order_b], err_msg=column)
    np.testing.assert_array_equal(a.locations[order_a], b.locations[order_b])
    np.testing.assert_allclose(a.keys[order_a], b.keys[order_b], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.values[order_a], b.values[order_b], rtol=1e-6, atol=1e-6)
    failures_pg = {loc: reason for loc, reason, _ in failure_table(tmp_path / "pgstac.zarr")}
    assert failures_pg == {loc: reason for loc, reason, _ in failure_table(tmp_path / "rustac.zarr")}
    assert failures_pg == {"loc-scl_cloud": "too_cloudy", "loc-truncated": "corrupt_file", "loc-none": "no_scene"}
