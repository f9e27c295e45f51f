"""``range-dist demo`` end to end: sample world -> STAC build -> Ray grid -> maps -> probes (real code paths)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.timeout(600)
def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from range_dist.analysis.cube import open_cube
    from range_dist.cli.main import main
    from range_dist.database import RetrievalDatabase
    from range_dist.demo.run import DEMO_LABEL
    from range_dist.testing.world import DEMO_REGIONS

    out = tmp_path / "demo"
    # the CI budget: 2 locations per scene (16 chips through the real ViT-L/16 SatMAE), a 10° grid, 400-point probes
    assert main(["demo", "--out", str(out), "--per-scene", "2", "--resolution", "10",
                 "--probe-size", "400"]) == 0
    printed = capsys.readouterr().out
    assert "range-dist demo finished" in printed and DEMO_LABEL in printed

    db = RetrievalDatabase.open(out / "database.zarr")
    assert db.rows > 0 and db.key_dim == 256 and db.value_dim == 1024
    info = db.describe()
    assert info["origin"].startswith("stac:http://127.0.0.1:") and info["sample"] is True
    assert {str(i).rsplit("-", 1)[0] for i in db.provenance["location_id"]} <= {
        str(i) for i in db.provenance["item_id"]}  # each row's chip comes from its own scene
    assert len({str(i) for i in db.provenance["item_id"]}) == len(DEMO_REGIONS)

    ds = open_cube(out / "cube.zarr")
    assert ds["embedding"].shape == (3, 18, 36, 1280)
    np.testing.assert_allclose(ds["beta"].values, [0.0, 0.5, 1.0])
    assert ds.attrs["range_dist:sample_assets"] is True and ds.attrs["range_dist:demo"] == DEMO_LABEL
    assert np.isfinite(ds["embedding"].sel(beta=0.5).values.astype(np.float32)).all()

    maps = sorted((out / "maps").glob("*.png"))
    assert [p.name for p in maps] == ["demo_beta0.5.png", "demo_beta0.png", "demo_beta1.png"]
    for path in maps:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (36 * 20, 18 * 20)  # default scale: ~720 px wide

    table = (out / "probes.md").read_text()
    assert "landocean" in table and "checkerboard:20" in table and "demo cube beta=0.5" in table
    meta = json.loads((out / "demo.json").read_text())
    assert meta["sample_assets"] is True and meta["database_rows"] == db.rows
    assert os.path.exists(meta["probe_csv"])
