"""The cube as a product: correct GeoZarr attributes, the heads layout (any β on read), int8 quantisation.

Small real cubes from the sample assets (a 10° grid over a bbox, 2 tiles), written by the grid job.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor (a run no longer imports it)
import xarray as xr
import zarr

from range_dist.analysis.cube import open_cube, sample_cube, select_beta
from range_dist.cli.main import main
from range_dist.cube.codec import dequantize_int8, quantize_int8
from range_dist.cube.integrity import check_tiles, shard_path
from range_dist.cube.store import read_tile_status
from range_dist.errors import ConfigError, CoordinateError

BBOX = "-60,-30,60,30"  # 6 × 12 cells at 10°: two 6-cell tiles


def _grid(assets: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    ckpt, db = assets
    return ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "10",
            f"--bbox={BBOX}", "--tile-size", "6", "--chunk-size", "3", "--executor", "local", *extra]


@pytest.fixture(scope="module")
def cubes(sample_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """float32 cubes: beta layout at β = 0, 0.37, 1; heads; heads int8; beta int8."""
    root = tmp_path_factory.mktemp("cubes")
    specs = {
        "beta": ("--betas", "0,0.37,1", "--dtype", "float32"),
        "heads": ("--betas", "0.5", "--dtype", "float32", "--layout", "heads"),
        "heads_int8": ("--betas", "0.5", "--layout", "heads", "--quantize", "int8"),
        "beta_int8": ("--betas", "0,0.37,1", "--quantize", "int8"),
    }
    out = {}
    for name, extra in specs.items():
        out[name] = root / f"{name}.zarr"
        assert main(_grid(sample_assets, out[name], *extra)) == 0
    return out


# -- the codec ------------------------------------------------------------------------------------


def test_int8_codec_round_trip_and_nan() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7, 64)).astype(np.float32)
    x[0, 0] = np.nan
    x[1, 1] = 0.0
    codes, scale = quantize_int8(x)
    assert codes.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (5, 7)
    assert np.isnan(scale[0, 0]) and (codes[0, 0] == 0).all() and scale[1, 1] == 0
    np.testing.assert_allclose(scale[2, 2], np.abs(x[2, 2]).max() / 127, rtol=1e-6)
    y = dequantize_int8(codes, scale)
    assert np.isnan(y[0, 0]).all() and (y[1, 1] == 0).all()
    ok = ~np.isnan(scale)
    # rounding: each value within half a step
    assert (np.abs(y - x)[ok] <= scale[ok][:, None] / 2 + 1e-7).all()


# -- georeferencing ---------------------------------------------------------------------------------


def test_geozarr_attributes_validate_and_place_cells(cubes: dict[str, Path]) -> None:
    import zarr_cm

    for path in cubes.values():
        attrs: dict[str, Any] = dict(zarr.open_group(str(path), mode="r").attrs)
        zarr_cm.validate_many(attrs, ["spatial", "proj"])
        names = {c["name"] for c in attrs["zarr_conventions"]}
        assert {"spatial", "proj"} <= names
        a, b, c, d, e, f = attrs["spatial:transform"]
        assert attrs["spatial:registration"] == "pixel" and attrs["proj:code"] == "EPSG:4326"
        ds = xr.open_zarr(path, decode_coords="all")
        lat, lon = ds["lat"].values, ds["lon"].values
        cols, rows = np.meshgrid(np.arange(len(lon)) + 0.5, np.arange(len(lat)) + 0.5)
        x, y = a * cols + b * rows + c, d * cols + e * rows + f  # cell centres through the affine
        np.testing.assert_allclose(x, np.broadcast_to(lon, x.shape), atol=1e-9)
        np.testing.assert_allclose(y, np.broadcast_to(lat[:, None], y.shape), atol=1e-9)
        assert tuple(ds.rio.transform())[:6] == pytest.approx((a, b, c, d, e, f))
        assert attrs["spatial:bbox"] == [-60.0, -30.0, 60.0, 30.0]


def test_zarr_lint_reports_no_problem(cubes: dict[str, Path]) -> None:
    exe = shutil.which("zarr-lint")
    assert exe is not None, "zarr-lint is a dev dependency"
    for path in (cubes["beta"], cubes["heads_int8"]):
        run = subprocess.run([exe, "check", str(path), "--format", "json", "--fail-on", "warning"],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout + run.stderr


# -- the heads layout ---------------------------------------------------------------------------------


def test_heads_blend_equals_computing_that_beta(cubes: dict[str, Path]) -> None:
    direct = open_cube(cubes["beta"])
    heads = open_cube(cubes["heads"], beta=[0.0, 0.37, 1.0])
    assert heads["embedding"].dims == ("beta", "lat", "lon", "feature")
    assert heads["embedding"].dtype == np.float32
    np.testing.assert_allclose(heads["embedding"].values, direct["embedding"].values, rtol=1e-5, atol=1e-6)
    # default β: the levels the run was asked for; one β selects exactly it
    assert list(open_cube(cubes["heads"])["beta"].values) == [0.5]
    np.testing.assert_allclose(select_beta(cubes["heads"], 0.37).values, direct["embedding"].isel(beta=1).values,
                               rtol=1e-5, atol=1e-6)
    pts = np.array([[1.0, 2.0], [-33.0, 12.5]])
    np.testing.assert_allclose(sample_cube(cubes["heads"], pts, betas=0.37).values,
                               sample_cube(cubes["beta"], pts, betas=0.37).values, rtol=1e-5, atol=1e-6)


def test_heads_layout_stores_heads_once(cubes: dict[str, Path]) -> None:
    group: Any = zarr.open_group(str(cubes["heads"]), mode="r")
    assert {"H_geo", "H_sem", "q_hat"} <= set(group.array_keys()) and "embedding" not in group
    assert group["H_geo"].shape == (6, 12, 1024) and group["q_hat"].shape == (6, 12, 256)
    assert group.attrs["range_dist:cube_encoding"]["layout"] == "heads"


def test_int8_cubes_decode_close_to_float32(cubes: dict[str, Path]) -> None:
    ref = open_cube(cubes["beta"])["embedding"].values
    for name, beta in (("beta_int8", None), ("heads_int8", [0.0, 0.37, 1.0])):
        ds = open_cube(cubes[name], beta=beta)
        emb = ds["embedding"]
        assert emb.dtype == np.float32 and emb.chunks is not None  # lazy, decoded
        got = emb.values
        rel = np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
        assert rel.max() < 0.02, (name, rel.max())
        quant = ds.attrs["emb:quantization"]
        assert quant["method"] == "int8-absmax" and quant["original_dtype"] == "float32" and "decode" in quant
    group: Any = zarr.open_group(str(cubes["beta_int8"]), mode="r")
    assert group["embedding"].dtype == np.int8 and group["embedding_scale"].shape == (3, 6, 12, 2)


def test_land_only_int8_nan_scale_means_not_embedded(sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "land.zarr"
    assert main(_grid(sample_assets, out, "--betas", "0.5", "--land-only", "--layout", "heads",
                      "--quantize", "int8")) == 0
    scale = zarr.open_array(str(out / "q_hat_scale"), mode="r")[...]
    emb = open_cube(out)["embedding"].values[0]
    np.testing.assert_array_equal(np.isnan(scale), np.isnan(emb).all(axis=-1))
    assert np.isnan(scale).any() and (~np.isnan(scale)).any()
    assert all(c.state == "ok" for c in check_tiles(out, full=True))


# -- integrity and resume for every layout ---------------------------------------------------------


@pytest.mark.parametrize("name", ["heads", "beta_int8", "heads_int8"])
def test_integrity_finds_damage_in_any_array(cubes: dict[str, Path], tmp_path: Path, name: str) -> None:
    copy = tmp_path / f"{name}.zarr"
    shutil.copytree(cubes[name], copy)
    assert all(c.state == "ok" for c in check_tiles(copy, full=True))
    group: Any = zarr.open_group(str(copy), mode="r")
    last = json.loads((copy / "zarr.json").read_text())["attributes"]["range_dist:cube_encoding"]["variables"][-1]
    shard = shard_path(copy, 0, 1, last, tuple(group[last].metadata.dimension_names))
    assert shard.is_file()
    shard.unlink()
    assert [(c.row, c.col, c.state) for c in check_tiles(copy) if c.state != "ok"] == [(0, 1, "missing_data")]


def test_resume_and_signature_include_layout(cubes: dict[str, Path], sample_assets: tuple[Path, Path],
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "heads.zarr"
    shutil.copytree(cubes["heads_int8"], copy)
    capsys.readouterr()
    assert main(_grid(sample_assets, copy, "--betas", "0.5", "--layout", "heads", "--quantize", "int8")) == 0
    assert "2 already done" in capsys.readouterr().err
    assert main(_grid(sample_assets, copy, "--betas", "0.5", "--layout", "heads")) == 2
    err = capsys.readouterr().err
    assert "quantize: store has 'int8', this run 'none'" in err and "--overwrite" in err
    assert (read_tile_status(copy) == 1).all()


def test_verify_cli_on_heads_int8(cubes: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(cubes["heads_int8"])]) == 0
    assert "ok 2" in capsys.readouterr().out


# -- bad inputs say what to do ---------------------------------------------------------------------------


def test_bad_betas_and_levels_are_clear(cubes: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"beta=1.5: β must be in \[0, 1\]"):
        open_cube(cubes["heads"], beta=1.5)
    with pytest.raises(ConfigError, match=r"beta=-0.1: β must be in \[0, 1\]"):
        open_cube(cubes["beta"], beta=-0.1)
    with pytest.raises(ConfigError, match=r"beta=0.5 is not in the cube; it holds beta = 0, 0.37, 1.*--layout heads"):
        open_cube(cubes["beta"], beta=0.5)
    with pytest.raises(ConfigError, match=r"level=2: cube .* has no overview level 2; it has level\(s\) 0"):
        open_cube(cubes["beta"], level=2)
    with pytest.raises(CoordinateError, match=r"lies outside the cube, which covers lon \[-60, 60\], lat \[-30, 30\]"):
        sample_cube(cubes["heads"], np.array([[100.0, 0.0]]), betas=0.2)


def test_cli_map_and_sample_at_any_beta(cubes: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "m.png"
    assert main(["map", str(cubes["heads_int8"]), "--beta", "0.37", "--out", str(png), "--fit-cells", "50"]) == 0
    assert png.is_file()
    assert main(["map", str(cubes["beta"]), "--beta", "0.5", "--out", str(tmp_path / "n.png")]) == 2
    assert "beta=0.5 is not in the cube" in capsys.readouterr().err
    assert main(["map", str(cubes["heads"]), "--beta", "1.2", "--out", str(tmp_path / "o.png")]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat\n1,2\n-33,12.5\n")
    out = tmp_path / "s.npz"
    assert main(["sample", str(cubes["heads"]), "--points", str(pts), "--out", str(out), "--betas", "0.37"]) == 0
    got = np.load(out)
    key = next(k for k in got.files if got[k].ndim == 3)
    np.testing.assert_allclose(got[key][0], sample_cube(cubes["beta"], np.array([[1, 2], [-33, 12.5]]),
                                                         betas=0.37, method="bilinear").values[0],
                               rtol=1e-5, atol=1e-6)
    far = tmp_path / "far.csv"
    far.write_text("lon,lat\n120,0\n")
    assert main(["sample", str(cubes["heads"]), "--points", str(far), "--out", str(tmp_path / "f.npz")]) == 2
    assert "outside the cube" in capsys.readouterr().err
