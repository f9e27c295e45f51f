"""Grids, tiles and job configuration (pure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from range_dist.config.schema import from_sources
from range_dist.errors import ConfigError
from range_dist.geo.land import land_mask
from range_dist.grid.spec import GridSpec, iter_tiles, tile_lonlat
from range_dist.jobs.grid.config import GridJobConfig


def test_global_grid_is_north_up_cell_centres() -> None:
    grid = GridSpec(1.0)
    assert grid.shape == (180, 360)
    assert grid.lat[0] == 89.5 and grid.lat[-1] == -89.5 and np.all(np.diff(grid.lat) < 0)
    assert grid.lon[0] == -179.5 and grid.lon[-1] == 179.5
    assert grid.transform == (-180.0, 1.0, 0.0, 90.0, 0.0, -1.0)


def test_bbox_keeps_centres_inside() -> None:
    grid = GridSpec(0.5, (5.0, 45.0, 11.0, 48.0))
    assert grid.lon[0] == 5.25 and grid.lon[-1] == 10.75
    assert grid.lat[0] == 47.75 and grid.lat[-1] == 45.25
    assert grid.shape == (6, 12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 0.0}, "expected a cell size in degrees"),
        ({"resolution": 0.7}, "180 must be a whole multiple"),
        ({"resolution": 1.0, "bbox": (10, 0, 5, 1)}, "west < east"),
        ({"resolution": 1.0, "bbox": (0.1, 0.1, 0.2, 0.2)}, "contains no cell centre"),
    ],
)
def test_bad_grids(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GridSpec(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(res=st.sampled_from([10.0, 5.0, 3.0, 2.0, 1.0]), tile=st.integers(1, 70),
       west=st.floats(-180, 170), south=st.floats(-90, 80))
def test_tiles_partition_the_grid(res: float, tile: int, west: float, south: float) -> None:
    try:
        grid = GridSpec(res, (west, south, min(west + 60, 180), min(south + 40, 90)))
    except ConfigError:
        return
    covered = np.zeros(grid.shape, dtype=int)
    for key in iter_tiles(grid, tile):
        assert 0 < key.shape[0] <= tile and 0 < key.shape[1] <= tile
        covered[key.y0 : key.y1, key.x0 : key.x1] += 1
        assert key.y0 == key.row * tile and key.x0 == key.col * tile  # shard-aligned
    assert (covered == 1).all()


def test_tile_points_row_major_and_land_mask() -> None:
    grid = GridSpec(1.0)
    key = next(iter_tiles(grid, 4))
    pts = tile_lonlat(grid, key)
    assert pts[0].tolist() == [-179.5, 89.5] and pts[1].tolist() == [-178.5, 89.5]
    assert land_mask(np.array([[8.5, 47.4], [-30.0, 0.0]])).tolist() == [True, False]


def test_config_from_yaml_and_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("resolution: 2\nbetas: [0, 0.5]\nbbox: [0, 0, 20, 20]\nout: x.zarr\nland_only: true\n")
    flags = {"betas": "0.25,1", "tile_size": "8", "chunk_size": "4"}
    cfg = from_sources(GridJobConfig, yaml_path=cfg_file, flags=flags)
    assert cfg.betas == (0.25, 1.0) and cfg.resolution == 2.0 and cfg.land_only
    assert cfg.grid.shape == (10, 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resolutoin: 1\n", r"unknown setting 'resolutoin' \(did you mean 'resolution'\?\)"),
        ("tile_size: 100\nchunk_size: 32\n", "chunk_size must divide tile_size"),
        ("dtype: int8\n", "dtype='int8'"),
        ("betas: [0, 3]\n", r"3.0 is outside \[0, 1\]"),
        ("out: cube.nc\n", "must end in .zarr"),
        ("land_only: maybe\n", "must be true or false"),
        ("- a\n- b\n", "expected a mapping"),
        ("bbox: [1, 2, 3]\n", "expected four numbers"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        from_sources(GridJobConfig, yaml_path=path)


@pytest.mark.parametrize("name", ["global_1deg", "global_0p25deg", "global_0p1deg"])
def test_example_configs_load(name: str) -> None:
    cfg = from_sources(GridJobConfig, yaml_path=Path(__file__).parents[1] / "workflows" / f"{name}.yaml")
    assert cfg.out.suffix == ".zarr" and cfg.grid.points > 0
