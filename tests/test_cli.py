"""The range-dist command line on sample assets: outputs, messages, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr

from range_dist import RangeEncoder, RetrievalDatabase, load_satclip_location_encoder
from range_dist.cli.main import main


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def points_csv(tmp_path: Path) -> Path:
    path = tmp_path / "pts.csv"
    pd.DataFrame({"lon": [8.54, -70.6, 179.9, -180.0], "lat": [47.37, -33.4, 0.0, -89.0]}).to_csv(path, index=False)
    return path


def test_embed_points_npz_matches_library(tmp_path: Path, sample_assets, points_csv: Path) -> None:
    ckpt, npz = sample_assets
    out = tmp_path / "out.npz"
    assert run_cli("embed-points", "--satclip", ckpt, "--db", npz, "--betas", "0,0.5,1", "--points", points_csv,
                   "--out", out) == 0
    with np.load(out) as res:
        assert res["embedding"].shape == (3, 4, 1280)
        np.testing.assert_array_equal(res["beta"], [0, 0.5, 1])
        enc = RangeEncoder(load_satclip_location_encoder(ckpt), RetrievalDatabase.open(npz))
        np.testing.assert_allclose(res["embedding"], enc.encode(res["lonlat"], (0, 0.5, 1)), atol=1e-6)


def test_embed_points_parquet_and_zarr_outputs(tmp_path: Path, sample_assets, points_csv: Path) -> None:
    ckpt, npz = sample_assets
    pq_points = tmp_path / "pts.parquet"
    pd.read_csv(points_csv).to_parquet(pq_points)
    assert run_cli("embed-points", "--satclip", ckpt, "--db", npz, "--betas", "0.5,1", "--points", pq_points,
                   "--out", tmp_path / "o.parquet", "--variant", "range") == 0
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.num_rows == 8 and table.schema.field("embedding").type.list_size == 1280
    assert run_cli("embed-points", "--satclip", ckpt, "--db", npz, "--points", points_csv,
                   "--out", tmp_path / "o.zarr") == 0
    ds = xr.open_zarr(tmp_path / "o.zarr", consolidated=False)
    assert ds["embedding"].shape == (1, 4, 1280)


def test_bad_csv_row_is_named_and_nothing_is_written(tmp_path: Path, sample_assets, capsys) -> None:
    ckpt, npz = sample_assets
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"longitude": [0.0, 1.0, 2.0], "latitude": [0.0, 91.0, 0.0]}).to_csv(bad, index=False)
    out = tmp_path / "o.npz"
    assert run_cli("embed-points", "--satclip", ckpt, "--db", npz, "--points", bad, "--out", out) == 2
    err = capsys.readouterr().err
    assert "bad.csv line 3 has lon=1.0, lat=91.0" in err and "Traceback" not in err
    assert not out.exists()


def test_existing_output_is_kept(tmp_path: Path, sample_assets, points_csv: Path, capsys) -> None:
    ckpt, npz = sample_assets
    out = tmp_path / "o.npz"
    out.write_bytes(b"precious")
    assert run_cli("embed-points", "--satclip", ckpt, "--db", npz, "--points", points_csv, "--out", out) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize(("betas", "message"), [("0,2", "2.0 is outside [0, 1]"), ("a,b", "comma-separated"),
                                                ("0.5,0.5", "repeated")])
def test_bad_betas(tmp_path: Path, sample_assets, points_csv: Path, capsys, betas: str, message: str) -> None:
    ckpt, npz = sample_assets
    assert run_cli("embed-points", "--satclip", ckpt, "--db", npz, "--points", points_csv, "--betas", betas,
                   "--out", tmp_path / "o.npz") == 2
    assert message in capsys.readouterr().err


def test_import_export_and_info(tmp_path: Path, sample_assets, capsys) -> None:
    _, npz = sample_assets
    assert run_cli("import-db", npz, "--out", tmp_path / "db.zarr") == 0
    assert run_cli("db-info", tmp_path / "db.zarr") == 0
    out = capsys.readouterr().out
    assert "rows:       1200" in out and "keys 256, values 1024" in out
    assert "sample database" in out and "rows look aligned" in out
    assert run_cli("export-db", tmp_path / "db.zarr", "--out", tmp_path / "back.npz") == 0
    with np.load(tmp_path / "back.npz") as a, np.load(npz) as b:
        np.testing.assert_array_equal(a["image_embeddings"], b["image_embeddings"])


def test_console_script_and_module_entry(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "range_dist", "--help"], capture_output=True, text=True, check=True)
    assert "embed-points" in res.stdout and "import-db" in res.stdout
    res = subprocess.run([sys.executable, "-m", "range_dist", "db-info", str(tmp_path / "x.zarr")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
