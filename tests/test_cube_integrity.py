"""Per-tile integrity: a done tile whose data is gone or damaged is found and recomputed, exactly it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from range_dist.cli.main import main
from range_dist.cube.integrity import check_tiles, shard_path
from range_dist.cube.store import TILE_COMPUTED, read_tile_status


def _grid(ckpt: Path, db: Path, out: Path, *extra: str) -> list[str]:
    return ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "10",
            "--tile-size", "6", "--chunk-size", "3", "--executor", "local", "--betas", "0,1", *extra]


@pytest.fixture
def cube(sample_assets: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(a clean cube, a copy of it to damage)."""
    ckpt, db = sample_assets
    clean = tmp_path / "clean.zarr"
    assert main(_grid(ckpt, db, clean)) == 0
    copy = tmp_path / "cube.zarr"
    shutil.copytree(clean, copy)
    return clean, copy


def _same(a: Path, b: Path) -> None:
    np.testing.assert_array_equal(xr.open_zarr(a)["embedding"].values, xr.open_zarr(b)["embedding"].values)


def test_intact_cube_checks_ok(cube: tuple[Path, Path]) -> None:
    clean, _ = cube
    checks = check_tiles(clean, full=True)
    assert len(checks) == 18 and all(c.state == "ok" for c in checks)
    cells = np.asarray(zarr.open_array(str(clean / "tile_cells"), mode="r")[...])
    assert (cells == 36).all()  # 6 × 6 cells per tile, all embedded (not land-only)


def test_deleted_shard_is_recomputed_on_resume(cube: tuple[Path, Path], sample_assets: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    clean, copy = cube
    ckpt, db = sample_assets
    shard_path(copy, 1, 4).unlink()
    assert [(c.row, c.col, c.state) for c in check_tiles(copy) if c.state != "ok"] == [(1, 4, "missing_data")]
    capsys.readouterr()
    assert main(_grid(ckpt, db, copy)) == 0
    err = capsys.readouterr().err
    assert "1 tile(s) marked done failed their presence check (missing_data); recomputing exactly them" in err
    assert "1 tiles computed" in err and "17 already done" in err
    _same(clean, copy)


def test_damaged_shard_is_found_by_a_full_check(cube: tuple[Path, Path], sample_assets: tuple[Path, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    clean, copy = cube
    ckpt, db = sample_assets
    shard = shard_path(copy, 2, 0)
    data = bytearray(shard.read_bytes())
    data[100:140] = bytes(40)  # same size, damaged compressed data
    shard.write_bytes(bytes(data))
    assert all(c.state == "ok" for c in check_tiles(copy))  # the cheap check sees a shard
    bad = [c for c in check_tiles(copy, full=True) if c.state != "ok"]
    assert [(c.row, c.col) for c in bad] == [(2, 0)] and bad[0].state in ("unreadable", "checksum_mismatch",
                                                                          "cells_mismatch")
    capsys.readouterr()
    assert main(_grid(ckpt, db, copy, "--verify")) == 0
    assert "failed their full check" in capsys.readouterr().err
    _same(clean, copy)
    assert (read_tile_status(copy) == TILE_COMPUTED).all()


def test_truncated_shard_is_unreadable(cube: tuple[Path, Path]) -> None:
    _, copy = cube
    shard = shard_path(copy, 0, 0)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    bad = [c for c in check_tiles(copy, full=True) if c.state != "ok"]
    assert [(c.row, c.col, c.state) for c in bad] == [(0, 0, "unreadable")]


def test_verify_command_reports_and_repairs_a_cube(cube: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    clean, copy = cube
    assert main(["verify", str(copy)]) == 0
    assert "every done tile is present and matches its checksum" in capsys.readouterr().out
    shard_path(copy, 0, 3).unlink()
    shard = shard_path(copy, 2, 5)
    data = bytearray(shard.read_bytes())
    data[100:140] = bytes(40)
    shard.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 2
    captured = capsys.readouterr()
    assert "tile (row 0, col 3): missing_data" in captured.out and "tile (row 2, col 5):" in captured.out
    assert "--repair" in captured.err
    assert main(["verify", str(copy), "--repair"]) == 0
    assert "repaired: 2 tile(s) recomputed; 0 bad tile(s) left" in capsys.readouterr().out
    _same(clean, copy)


def test_full_check_of_a_grid_narrower_than_a_tile_on_one_axis(sample_assets: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    ckpt, db = sample_assets  # 3 × 36 cells, tiles of 8: shards are 3 high and 8 wide
    out = tmp_path / "band.zarr"
    assert main(_grid(ckpt, db, out, "--bbox=-180,0,180,30", "--tile-size", "8", "--chunk-size", "4")) == 0
    checks = check_tiles(out, full=True)
    assert len(checks) == 5 and all(c.state == "ok" for c in checks), checks
