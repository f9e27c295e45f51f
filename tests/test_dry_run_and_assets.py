"""Plans are pure, assets are never swapped silently, one config schema drives flags and YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from range_dist.cli.main import build_parser, main
from range_dist.config.schema import _settings, add_arguments, from_sources, to_argv, to_mapping
from range_dist.jobs.build.config import BuildConfig
from range_dist.jobs.grid.config import GridJobConfig

REPO = Path(__file__).resolve().parents[1]


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file and folder under ``roots``: any write, creation or deletion shows."""
    seen: dict[str, tuple[int, int]] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            stat = path.stat()
            seen[str(path)] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns)
    return seen


def _grid_args(ckpt: Path, db: Path, out: Path, *extra: str) -> list[str]:
    return ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "30",
            "--tile-size", "4", "--chunk-size", "2", "--executor", "local", *extra]


def test_embed_grid_dry_run_touches_nothing(sample_assets: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    out = tmp_path / "cube.zarr"
    assert main(_grid_args(ckpt, db, out, "--betas", "0,1")) == 0
    before = snapshot(tmp_path, ckpt.parent)
    capsys.readouterr()
    # another β list: a real run with --overwrite would replace the cube; a dry run only says so
    for extra in ([], ["--overwrite"], ["--mode", "fast", "--tolerance", "1e-3", "--overwrite"]):
        code = main(_grid_args(ckpt, db, out, "--betas", "0,0.5", "--dry-run", *extra))
        printed = capsys.readouterr()
        if extra:
            assert code == 0, printed.err
            assert "DELETE and replace the existing cube" in printed.out
            assert "read:" in printed.out and "compute:" in printed.out and "write:" in printed.out
        else:  # without --overwrite the plan itself is refused, naming the difference
            assert code == 2 and "different settings" in printed.err and "betas" in printed.err
        assert "[embed-grid] fast mode" not in printed.err  # no fast-mode planning in a dry run
        assert snapshot(tmp_path, ckpt.parent) == before
    # the same settings: the dry run says it would resume
    assert main(_grid_args(ckpt, db, out, "--betas", "0,1", "--dry-run")) == 0
    assert "resume it (" in capsys.readouterr().out
    assert snapshot(tmp_path, ckpt.parent) == before


def test_dry_run_with_sample_assets_writes_no_asset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("RANGE_DIST_CACHE", str(cache))
    out = tmp_path / "cube.zarr"
    args = ["embed-grid", "--sample-assets", "--out", str(out), "--resolution", "30", "--tile-size", "4",
            "--chunk-size", "2", "--executor", "local", "--dry-run"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "UNTRAINED SAMPLE" in printed.out and "to be written" in printed.err
    assert not cache.exists() and not out.exists()


def test_refused_without_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("RANGE_DIST_CACHE", str(cache))
    out = tmp_path / "cube.zarr"
    for dry in ([], ["--dry-run"]):
        code = main(["embed-grid", "--out", str(out), "--resolution", "30", "--executor", "local", *dry])
        err = capsys.readouterr().err
        assert code == 2
        assert "range-dist fetch-assets" in err and str(cache) in err and "$RANGE_DIST_CACHE" in err
        assert "--sample-assets" in err
    assert not out.exists() and not cache.exists()


def test_sample_assets_run_is_labelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import zarr

    monkeypatch.setenv("RANGE_DIST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cube.zarr"
    assert main(["embed-grid", "--sample-assets", "--out", str(out), "--resolution", "30", "--tile-size", "6",
                 "--chunk-size", "6", "--executor", "local", "--betas", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "UNTRAINED SAMPLE ASSETS" in err.strip().splitlines()[-1] or "UNTRAINED SAMPLE ASSETS" in err
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["range_dist:sample_assets"] is True and attrs["range_dist:run_report"]["sample_assets"] is True


def _build_args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    from range_dist.locations.sampling import sample_locations, write_locations

    locs = tmp_path / "locs.csv"
    if not locs.exists():
        write_locations(sample_locations(5, seed=1), locs)
    for name in ("k.ckpt", "v.pth"):  # the plan checks they exist; only a real run loads them
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(b"x")
    return ["build-db", "--locations", str(locs), "--out", str(out), "--stac-url", "http://127.0.0.1:9/stac",
            "--device", "cpu", "--key-checkpoint", str(tmp_path / "k.ckpt"), "--value-checkpoint",
            str(tmp_path / "v.pth"), *extra]


def test_build_db_dry_run_touches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from range_dist.database.append import DatabaseAppender
    from range_dist.jobs.build.plan import database_attrs

    out = tmp_path / "db.zarr"
    # nothing there: the dry run creates nothing
    assert main(_build_args(tmp_path, out, "--dry-run")) == 0
    assert not out.exists() and "create it" in capsys.readouterr().out
    # an existing database: neither a dry run nor a dry run with --overwrite deletes or changes it
    config = from_sources(BuildConfig, flags=build_parser().parse_args(_build_args(tmp_path, out)))
    DatabaseAppender.open_or_create(out, 512, 1024, database_attrs(config))
    before = snapshot(tmp_path)
    assert main(_build_args(tmp_path, out, "--dry-run", "--overwrite")) == 0
    assert "DELETE and replace the existing database" in capsys.readouterr().out
    assert main(_build_args(tmp_path, out, "--dry-run")) == 0
    assert "resume it" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_overwrite_never_deletes_what_is_not_a_store(tmp_path: Path, sample_assets: tuple[Path, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    folder = tmp_path / "precious.zarr"
    folder.mkdir()
    (folder / "thesis.txt").write_text("do not delete")
    for args in (_grid_args(ckpt, db, folder, "--overwrite"), _build_args(tmp_path, folder, "--overwrite")):
        assert main(args) == 2
        assert "never deleted" in capsys.readouterr().err
        assert (folder / "thesis.txt").read_text() == "do not delete"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("tile_sise: 64\n", r"unknown setting 'tile_sise' \(did you mean 'tile_size'\?\)"),
        ("tile_size: big\n", r"tile_size='big' must be an integer"),
        ("land_only: maybe\n", r"land_only='maybe' must be"),
        ("resolution: [1, 2]\n", r"resolution=\[1, 2\] must be"),
    ],
)
def test_embed_grid_yaml_errors_name_key_file_and_type(tmp_path: Path, yaml_text: str, message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml_text)
    assert main(["embed-grid", "--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    import re

    assert re.search(message, err), err


def test_flag_type_error_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed-grid", "--tile-size", "big", "--dry-run"]) == 2
    assert "--tile-size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config",
    [
        GridJobConfig(),
        GridJobConfig(resolution=0.25, bbox=(5.0, 45.0, 11.0, 48.0), land_only=True, variant="range",
                      betas=(0.25, 1.0), satclip=Path("a.ckpt"), db=Path("d.zarr"), out=Path("o.zarr"),
                      dtype="float32", tile_size=64, chunk_size=16, num_actors=2, gpus_per_actor=0.5,
                      cpus_per_actor=3, ray_address="auto", overwrite=True, harmonics="exact", max_in_flight=3,
                      memory_budget_mb=100.5, executor="local", mode="fast", tolerance=1e-3,
                      validation_points=64, precision="bf16", sample_assets=True),
        BuildConfig(locations=Path("l.parquet"), out=Path("db.zarr"), preset="earth-search"),
        BuildConfig(locations=Path("l.csv"), out=Path("db.zarr"), stac_url="http://x/stac", datetime=None,
                    max_cloud=5.5, radiometry="harmonised", key_checkpoint=Path("k.ckpt"), executor="ray",
                    gdal=(("GDAL_HTTP_MAX_RETRY", "4"), ("VSI_CACHE", "TRUE")), limit=7, search_group_deg=1.0,
                    device="cuda:1", server_filter="client"),
    ],
)
def test_config_round_trip_flags_yaml_dataclass(config: object, tmp_path: Path) -> None:
    import argparse

    cls = type(config)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(to_mapping(config)))
    assert from_sources(cls, yaml_path=path) == config
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    assert from_sources(cls, flags=parser.parse_args(to_argv(config))) == config


def test_every_config_field_is_a_flag_of_its_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command, cls in (("embed-grid", GridJobConfig), ("build-db", BuildConfig)):
        dests = {a.dest for a in sub.choices[command]._actions}  # type: ignore[attr-defined]
        # YAML-only settings (cli=False): storage_options may hold secrets, which a flag would show in `ps`
        yaml_only = {s.name for s in _settings(cls) if not s.meta.cli}
        assert yaml_only <= {"storage_options"}
        assert set(to_mapping(cls(**_required(cls)))) - yaml_only <= dests


def _required(cls: type) -> dict[str, object]:
    return {"locations": Path("l.csv"), "out": Path("o.zarr"), "stac_url": "http://x"} if cls is BuildConfig else {}


def test_cli_imports_no_ray_until_an_executor_runs(sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, db = sample_assets
    code = (
        "import sys\n"
        "from range_dist.cli.main import build_parser, main\n"
        "build_parser().parse_args(['embed-grid', '--dry-run'])\n"
        "assert 'ray' not in sys.modules, 'parser'\n"
        f"assert main({_grid_args(ckpt, db, tmp_path / 'c.zarr', '--dry-run')!r}) == 0\n"
        "assert 'ray' not in sys.modules, 'dry run'\n"
        f"assert main({_grid_args(ckpt, db, tmp_path / 'c.zarr')!r}) == 0\n"
        "assert 'ray' not in sys.modules, 'local executor'\n"
        "from range_dist.executors import executor_for\n"
        "executor_for('ray')\n"
        "assert 'ray' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = subprocess.run([sys.executable, "-m", "range_dist", "--help"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert listed.returncode == 0 and "embed-grid" in listed.stdout
