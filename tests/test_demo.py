"""``range-dist demo`` end to end: generated world -> demo-trained encoders -> STAC build -> Ray grid -> maps ->
probes, and what it must show (key diversity, varying retrieval, differing β, land cover); a rerun resumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

# the CI budget: 64 locations (one scene each), a 10° grid, 200 fit steps, 400-point probes; same code path as the
# default demo (256 locations, 5°, 400 steps, 1000 points)
ARGS = ["--locations", "64", "--resolution", "10", "--probe-size", "400", "--train-steps", "200"]


def _figure(printed: str, pattern: str) -> list[float]:
    found = re.search(pattern, printed)
    assert found, f"{pattern!r} not printed:\n{printed}"
    return [float(g) for g in found.groups()]


@pytest.mark.timeout(900)
def test_demo_shows_the_method_working_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from range_dist.analysis.cube import open_cube
    from range_dist.cli.main import main
    from range_dist.database import RetrievalDatabase, check_row_alignment
    from range_dist.demo.run import ASSETS_LABEL_ATTR, DEMO_LABEL
    from range_dist.encoders.checkpoints import DEMO_TRAINED_LABEL, load_satclip_location_encoder

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "range-dist demo finished" in printed and DEMO_LABEL in printed

    # what it must show, as printed
    (cosine,) = _figure(printed, r"median pairwise key cosine (-?[\d.]+)")
    assert cosine < 0.5  # random-weight encoders: 0.99999
    (dev1,) = _figure(printed, r"β=1: ([\d.]+) %")
    assert dev1 >= 10.0
    (corr,) = _figure(printed, r"at β=0 and β=1: (-?[\d.]+)")
    assert corr < 0.95
    assert re.search(r"land cover: +demo cube beta=\S+ [\d.]+ % beats the SatCLIP-only baseline", printed), printed

    db = RetrievalDatabase.open(out / "database.zarr")
    assert db.rows == 64 and db.key_dim == 256 and db.value_dim == 1024
    info = db.describe()
    assert info["origin"].startswith("stac:http://127.0.0.1:") and info["assets_label"].startswith(DEMO_TRAINED_LABEL)
    report = check_row_alignment(db)
    assert "misaligned" not in report.summary() and report.built
    assert load_satclip_location_encoder(out / "assets" / "demo-satclip-resnet18-l10.ckpt").sample_label.startswith(
        DEMO_TRAINED_LABEL)
    assert sum(p.stat().st_size for p in (out / "assets").iterdir()) < 60e6  # was 666 MB of random weights

    ds = open_cube(out / "cube.zarr")
    assert ds["embedding"].shape == (3, 18, 36, 1280)
    np.testing.assert_allclose(ds["beta"].values, [0.0, 0.5, 1.0])
    assert ds.attrs[ASSETS_LABEL_ATTR].startswith(DEMO_TRAINED_LABEL) and ds.attrs["range_dist:demo"] == DEMO_LABEL
    first_cube = ds["embedding"].values.copy()
    first_table = (out / "probes.md").read_text()
    assert "| landcover | demo cube beta=0.5 |" in first_table and "checkerboard:20" in first_table

    maps = sorted((out / "maps").glob("*.png"))
    assert [p.name for p in maps] == ["demo_beta0.5.png", "demo_beta0.png", "demo_beta1.png"]
    for path in maps:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (36 * 20, 18 * 20)
            assert img.text["Label"].startswith(f"{DEMO_TRAINED_LABEL}, not the published model")  # type: ignore[attr-defined]
    meta = json.loads((out / "demo.json").read_text())
    assert meta["database_rows"] == 64
    assert meta["figures_values"]["key_cosine_median"] == pytest.approx(cosine, abs=1e-3)

    # a rerun reuses the checkpoints and the scenes, resumes the database, and gives the same cube and probe table
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "rows built through the STAC pipeline, resumed" in printed
    assert RetrievalDatabase.open(out / "database.zarr").rows == 64
    np.testing.assert_array_equal(open_cube(out / "cube.zarr")["embedding"].values, first_cube)
    assert (out / "probes.md").read_text() == first_table

    assert main(["db-info", str(out / "database.zarr")]) == 0
    info_text = capsys.readouterr().out
    assert "synthetic rows" not in info_text and "misaligned" not in info_text and DEMO_TRAINED_LABEL in info_text
    assert info_text.count(f"[{DEMO_TRAINED_LABEL}]") == 1  # labelled once, however often resumed


def test_demo_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from range_dist.cli.main import main

    assert main(["demo", "--locations", "3"]) == 2
    assert "--locations 3: expected an integer >= 16" in capsys.readouterr().err
