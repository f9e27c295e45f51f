"""STAC description of a cube: fields, pystac round trip, and discovery through a real `rustac serve` API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import xarray as xr

from range_dist.cli.main import main
from range_dist.cube.stac import ZARR_MEDIA_TYPE, build_item, write_catalog
from range_dist.errors import ConfigError
from range_dist.testing.servers import RustacServer
from tests.analysis_helpers import make_cube


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> Path:
    return make_cube(tmp_path_factory.mktemp("stac") / "cube.zarr", sample_assets, resolution=20.0)


def test_item_fields_and_round_trip(cube: Path) -> None:
    item = build_item(cube)
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    again = pystac.Item.from_dict(data).to_dict(include_self_link=False, transform_hrefs=False)
    assert again == data  # lossless through pystac (schemas cannot be fetched offline to validate)
    for key in ("type", "stac_version", "id", "geometry", "bbox", "properties", "links", "assets"):
        assert key in data
    props = data["properties"]
    assert data["bbox"] == [-180.0, -90.0, 180.0, 90.0] and props["datetime"]
    assert props["emb:dimensions"] == 1280 and props["emb:data_type"] == "float32"
    assert "emb:quantization" in props and "emb:type" in props
    assert props["range_dist:betas"] == [0.0, 0.5, 1.0]
    assert props["range_dist:layout"] == {"layout": "beta", "betas": [0.0, 0.5, 1.0]}
    assert len(props["range_dist:database_sha256"]) == 64 and len(props["range_dist:satclip_sha256"]) == 64
    assert props["proj:code"] == "EPSG:4326" and props["proj:transform"] == [20.0, 0.0, -180.0, 0.0, -20.0, 90.0]
    assert props["cube:dimensions"]["beta"]["values"] == [0.0, 0.5, 1.0]
    assert props["cube:dimensions"]["lat"]["step"] == -20.0
    assert props["cube:variables"]["embedding"]["dimensions"] == ["beta", "lat", "lon", "feature"]
    asset = data["assets"]["zarr"]
    assert asset["type"] == ZARR_MEDIA_TYPE and asset["roles"] == ["data"]
    assert asset["xarray:open_kwargs"]["engine"] == "zarr" and asset["href"] == str(cube.resolve())
    shas = {link["title"]: link["range_dist:sha256"] for link in data["links"] if link["rel"] == "derived_from"}
    assert set(shas.values()) == {props["range_dist:database_sha256"], props["range_dist:satclip_sha256"]}


def test_served_catalog_finds_and_opens_the_cube(cube: Path, tmp_path: Path) -> None:
    from pystac_client import Client

    files = write_catalog(cube, tmp_path / "catalog")
    static = pystac.Collection.from_file(str(files.collection))
    assert static.extent.spatial.bboxes == [[-180.0, -90.0, 180.0, 90.0]]
    assert [i.id for i in static.get_items()] == ["cube"] and json.loads(files.item.read_text())["id"] == "cube"
    server = RustacServer(files.api_collection, files.api_items)
    try:
        client = Client.open(server.url)
        found = list(client.search(collections=["range-dist-embeddings"], bbox=[10, 40, 20, 50]).items())
        assert [i.id for i in found] == ["cube"]
        asset = found[0].assets["zarr"]
        ds = xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"])
        assert ds["embedding"].dims == ("beta", "lat", "lon", "feature")
        assert ds.sizes["lat"] == 9 and np.isfinite(ds["embedding"].isel(beta=0, lat=4, lon=9).values).all()
    finally:
        server.stop()


def test_stac_cli(cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cat"
    assert main(["stac", str(cube), "--out", str(out), "--href", "https://example.org/cube.zarr", "--id", "c1"]) == 0
    item = json.loads((out / "c1" / "c1.json").read_text())
    assert item["assets"]["zarr"]["href"] == "https://example.org/cube.zarr"
    assert main(["stac", str(cube), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["stac", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "c2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="could not be read"):
        build_item(tmp_path / "plain")


def test_heads_int8_cube_item(tmp_path: Path, sample_assets: tuple[Path, Path]) -> None:
    import os

    from range_dist.executors import embed_grid
    from range_dist.jobs.grid.config import GridJobConfig

    ckpt, db = sample_assets
    out = tmp_path / "heads.zarr"
    cfg = GridJobConfig(resolution=30.0, betas=(0.0, 1.0), satclip=ckpt, db=db, out=out, tile_size=6, chunk_size=3,
                        executor="local", land_only=True, layout="heads", quantize="int8")
    with open(os.devnull, "w") as quiet:
        embed_grid(cfg, executor="local", log=quiet)
    props = build_item(out).properties
    assert props["range_dist:layout"]["layout"] == "heads" and props["range_dist:layout"]["beta_range"] == [0.0, 1.0]
    assert props["emb:quantization"]["method"] == "int8-absmax" and props["emb:data_type"] == "int8"
    assert set(props["cube:variables"]) >= {"H_geo", "H_sem", "q_hat", "q_hat_scale"}
    assert props["cube:variables"]["H_geo"]["dimensions"] == ["lat", "lon", "value"]
