"""Retrieval databases on object storage: a real S3 server (SeaweedFS) on 127.0.0.1, a real STAC API and COGs.

Shows: ``build-db --out s3://...`` appends its batches into the bucket, is killed mid-build and resumed,
and holds the same rows and failure table as the same build on local disk; ``verify``, ``db-info`` and the
grid job read it in place; ``import-db --out s3://...`` writes the published .npz into the bucket,
refuses to replace it without ``--overwrite``, and the object-store faults (no bucket, a read-only key)
are one-line messages before anything is written.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from range_dist.cli.main import main
from range_dist.database import RetrievalDatabase, verify_database
from range_dist.database.append import failure_table
from range_dist.executors import build_database
from range_dist.testing.s3 import SeaweedS3
from range_dist.util.stores import StoreLocation
from tests.stac_world import World, build_config, make_world

IDS = ["loc-clear", "loc-edge", "loc-flaky", "loc-old"]

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = make_world(tmp_path_factory.mktemp("s2world"))
    yield built
    built.close()


@pytest.fixture(scope="module")
def local_build(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same build on local disk."""
    out = tmp_path_factory.mktemp("local") / "db.zarr"
    build_database(build_config(world, out, batch_size=1), quiet=True)
    return out


def _rows(path: Path | str) -> int:
    group: Any = zarr.open_group(StoreLocation.parse(path).zarr_store(read_only=True), mode="r")
    return int(group.attrs["range_dist_database"]["rows"])


def _assert_same_rows(reference: Path, other: Path | str) -> None:
    a, b = RetrievalDatabase.open(reference), RetrievalDatabase.open(other)
    ids_a = [str(i) for i in a.provenance["location_id"]]
    ids_b = [str(i) for i in b.provenance["location_id"]]
    assert sorted(ids_a) == sorted(ids_b) == IDS  # each location exactly once
    order_a, order_b = np.argsort(ids_a), np.argsort(ids_b)
    np.testing.assert_array_equal(a.locations[order_a], b.locations[order_b])
    # the same process-independent encoders on the same chips: equal up to float32 summation order
    np.testing.assert_allclose(a.keys[order_a], b.keys[order_b], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.values[order_a], b.values[order_b], rtol=1e-5, atol=1e-6)
    for column in ("item_id", "datetime", "offset_applied", "chip_crs"):
        np.testing.assert_array_equal(a.provenance[column][order_a], b.provenance[column][order_b])
    assert {r[0]: r[1] for r in failure_table(other)} == {r[0]: r[1] for r in failure_table(reference)}


def test_build_db_into_a_bucket_killed_and_resumed_equals_the_local_build(
        s3: SeaweedS3, bucket: str, world: World, local_build: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"s3://{bucket}/built.zarr"
    cfg = build_config(world, url, batch_size=1)
    script = ("import sys, pickle; from range_dist.executors import build_database; "
              "build_database(pickle.loads(bytes.fromhex(sys.argv[1])), quiet=True)")
    # the test seam (range_dist.util.fault_injection): sleep after each appended batch, so the kill lands mid-build
    env = {**os.environ, "RANGE_DIST_TEST_FAULTS": "sleep_after_batch=1"}
    proc = subprocess.Popen([sys.executable, "-c", script, pickle.dumps(cfg).hex()],
                            cwd=Path(__file__).parent.parent, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    rows = 0
    while time.time() < deadline and proc.poll() is None and rows < 1:
        time.sleep(0.3)
        try:
            rows = _rows(url)
        except Exception:  # the group is not there yet
            continue
    proc.kill()
    _, err = proc.communicate()
    assert 1 <= rows < len(IDS), err.decode()[-2000:]
    killed_at = _rows(url)
    keys = s3.filesystem().find(bucket)
    assert f"{bucket}/built.zarr/zarr.json" in keys and f"{bucket}/built.zarr.lease" in keys  # left by SIGKILL
    assert not Path("s3:").exists()

    # the same build again: the lease of the dead process is taken over, only the missing locations are read
    report = build_database(cfg, quiet=True)
    assert report.skipped_done == killed_at and report.rows_written == len(IDS) - killed_at
    _assert_same_rows(local_build, url)
    assert f"{bucket}/built.zarr.lease" not in s3.filesystem().find(bucket)

    # read in place: the full check of its integrity record, db-info, and the grid job's --db
    checked = verify_database(url)
    assert checked.ok and checked.rows == len(IDS), checked.table()
    assert main(["verify", url]) == 0
    assert main(["db-info", url]) == 0
    out = capsys.readouterr().out
    assert f"database:   {url}" in out and "rows:       4" in out
    # a rerun has nothing to do
    again = build_database(cfg, quiet=True)
    assert again.skipped_done == len(IDS) and again.rows_written == 0


def test_build_db_faults_are_one_line_messages_before_any_read(
        s3: SeaweedS3, bucket: str, world: World, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = build_config(world, f"s3://{bucket}/db.zarr")
    base = ["build-db", "--locations", str(cfg.locations), "--stac-url", world.stac.url, "--key-encoder",
            "satclip-resnet18", "--key-checkpoint", str(world.key_ckpt), "--value-checkpoint", str(world.value_ckpt),
            "--device", "cpu"]

    def one_line(argv: list[str]) -> str:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        return err

    requests = sum(world.http.statuses.values())  # COG requests so far
    line = one_line([*base, "--out", "s3://no-such-bucket-here/db.zarr"])
    assert "bucket 'no-such-bucket-here' does not exist at " + s3.endpoint in line
    for name, value in s3.env("reader").items():  # may list and read the bucket, not write
        monkeypatch.setenv(name, value)
    line = one_line([*base, "--out", f"s3://{bucket}/db.zarr"])
    assert "lacks write permission on bucket" in line and bucket in line
    assert s3.filesystem().find(bucket) == []  # refused at the lease, the build's first write
    assert sum(world.http.statuses.values()) == requests  # refused before any chip was read
    line = one_line([*base, "--out", "ftp://host/db.zarr"])
    assert "ftp:// is not a supported store location" in line
    assert not Path("ftp:").exists()


def test_import_db_into_a_bucket_and_a_grid_job_reads_it_in_place(
        s3: SeaweedS3, bucket: str, sample_assets: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, npz = sample_assets
    url = f"s3://{bucket}/imported.zarr"
    assert main(["import-db", str(npz), "--out", url, "--dry-run"]) == 0
    assert s3.filesystem().find(bucket) == []  # a dry run writes nothing
    assert main(["import-db", str(npz), "--out", url]) == 0
    assert f"wrote {url}" in capsys.readouterr().out
    published, imported = RetrievalDatabase.open(npz), RetrievalDatabase.open(url)
    np.testing.assert_array_equal(imported.keys, published.keys)
    np.testing.assert_array_equal(imported.values, published.values)
    np.testing.assert_array_equal(imported.locations, published.locations)
    assert imported.source == url
    assert main(["verify", url]) == 0
    capsys.readouterr()
    # an existing database is kept unless --overwrite
    assert main(["import-db", str(npz), "--out", url]) == 2
    err = capsys.readouterr().err
    assert f"--out {url} already exists; pass --overwrite" in err and "Traceback" not in err
    assert main(["import-db", str(npz), "--out", url, "--overwrite"]) == 0
    np.testing.assert_array_equal(RetrievalDatabase.open(url).keys, published.keys)
    # the grid job reads it in place: the same cube as from the .npz
    from range_dist.executors import embed_grid
    from range_dist.jobs.grid.config import GridJobConfig

    common = {"resolution": 30.0, "betas": (0.5,), "satclip": ckpt, "tile_size": 6, "chunk_size": 3,
              "executor": "local"}
    embed_grid(GridJobConfig(db=npz, out=tmp_path / "a.zarr", **common), executor="local")  # type: ignore[arg-type]
    embed_grid(GridJobConfig(db=url, out=tmp_path / "b.zarr", **common), executor="local")  # type: ignore[arg-type]
    a, b = zarr.open_group(str(tmp_path / "a.zarr"), mode="r"), zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    np.testing.assert_array_equal(np.asarray(a["embedding"][...]), np.asarray(b["embedding"][...]))
