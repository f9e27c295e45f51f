"""The grid job and the database build on a real multi-node Ray cluster on this machine: a head and
two worker nodes, each its own ``ray start`` (raylet, object store, 1 CPU, a custom resource), the
jobs submitted with ``ray job submit``. The tiles spread over both nodes, the payload goes once to
each node, and a node lost mid-run (its raylet SIGKILLed by its process id) leaves a cube (or a
database) equal to a clean run.

End to end on object storage (a real S3 server, SeaweedFS, on 127.0.0.1): ``embed-grid --out
s3://BUCKET/cube.zarr`` submitted to the cluster writes the cube from actors on both worker nodes,
and ``xr.open_zarr(url, storage_options=...)`` equals the clean local cube; so does the same job
with a worker node lost mid-run, and with its driver SIGKILLed mid-run and the same command
resubmitted (it takes the dead driver's lease over and computes only the missing tiles). The database
build (read tasks on both nodes, its encoder actor's node lost mid-build) writes into the bucket too.

Credentials reach the driver and the actors through the nodes' environment (``AWS_*`` set for
every ``ray start``, as a Kubernetes secret mounted in every pod does on a real cluster), not
through ``--runtime-env-json``: a job's runtime env is stored with the job and shown by the
dashboard and ``ray job`` / ``ray list jobs`` to anyone who can reach them (and typed on the
submitting command line); the node environment also reaches a replacement node and every process
Ray starts there without the job saying anything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from range_dist.config.schema import to_argv
from range_dist.cube.store import TILE_COMPUTED, TILE_MISSING, read_tile_status
from range_dist.database.append import failure_table
from range_dist.database.store import RetrievalDatabase
from range_dist.executors import build_database, embed_grid
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.testing.ray_cluster import BIN, LocalRayCluster
from range_dist.testing.s3 import SeaweedS3
from range_dist.util.lease import read_holder
from range_dist.util.stores import StoreLocation
from tests.stac_world import World, build_config, make_world

REPO = Path(__file__).resolve().parents[1]
# 18 × 36 cells in 3 × 3 tiles: 72 tiles, enough for two nodes to share and to lose one mid-run
SETTINGS = {"resolution": 10.0, "tile_size": 3, "chunk_size": 3, "betas": (0.0, 0.5, 1.0)}
TILES = 72


@pytest.fixture(scope="module")
def cluster(s3: SeaweedS3) -> Iterator[LocalRayCluster]:
    # head without CPUs (the job's driver and the payload holder run there), two 1-CPU workers; every
    # node runs with the S3 key and endpoint in its environment (module notes: why not the runtime env)
    with LocalRayCluster(workers=("a", "b"), head_cpus=0, worker_cpus=1, object_store_mb=200,
                         env=s3.env("admin")) as c:
        yield c


@pytest.fixture
def s3_env(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process too (the test reads the tile record and the lease from the bucket)."""
    for name, value in s3.env("admin").items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def clean_cube(sample_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The same settings on the local executor in this process: the reference."""
    ckpt, db = sample_assets
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    embed_grid(GridJobConfig(satclip=ckpt, db=db, out=out, executor="local", **SETTINGS),  # type: ignore[arg-type]
               executor="local")
    return np.asarray(xr.open_zarr(out)["embedding"].values, dtype=np.float32)


def _job_args(assets: tuple[Path, Path], out: Path | str) -> list[str]:
    ckpt, db = assets
    return ["range-dist", "embed-grid", "--satclip", str(ckpt), "--db", str(db),
            "--resolution", str(SETTINGS["resolution"]), "--tile-size", str(SETTINGS["tile_size"]),
            "--chunk-size", str(SETTINGS["chunk_size"]), "--betas", "0,0.5,1", "--out", str(out),
            "--executor", "ray", "--ray-address", "auto", "--num-actors", "2", "--cpus-per-actor", "1"]


def _submit(cluster: LocalRayCluster, entrypoint: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".",
           *extra, "--", *entrypoint]
    return subprocess.run(cmd, cwd=REPO, env=cluster.process_env(), capture_output=True, text=True, timeout=300)


def _job_status(cluster: LocalRayCluster, submission_id: str) -> str:
    with urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/{submission_id}", timeout=10) as resp:
        return str(json.load(resp)["status"])


def _job_logs(cluster: LocalRayCluster, submission_id: str) -> str:
    with urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/{submission_id}/logs", timeout=10) as resp:
        return str(json.load(resp)["logs"])


def _job_info(cluster: LocalRayCluster, submission_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/{submission_id}", timeout=10) as resp:
        return dict(json.load(resp))


def _open(out: Path | str, s3: SeaweedS3 | None = None) -> xr.Dataset:
    """A local cube, or what a user does with a URL: a plain xarray call with the storage options."""
    return xr.open_zarr(out, storage_options=None if s3 is None else s3.storage_options())


def _assert_equal_cubes(out: Path | str, clean: np.ndarray, s3: SeaweedS3 | None = None) -> None:
    assert (read_tile_status(out) == TILE_COMPUTED).all()
    got = np.asarray(_open(out, s3)["embedding"].values, dtype=np.float32)
    np.testing.assert_allclose(got, clean, rtol=2e-3, atol=2e-3, equal_nan=True)  # float16 cube, Ray threads


def _tiles_done(out: Path | str) -> int:
    """Tiles marked done in the store (0 before the run has created it)."""
    try:
        return int((read_tile_status(out) != TILE_MISSING).sum())
    except Exception:  # not created yet (local folder or bucket prefix)
        return 0


def _wait_running_until(cluster: LocalRayCluster, job: str, out: Path | str, tiles: int, deadline: float) -> int:
    """Wait (the job still running) until at least ``tiles`` tiles are done; returns how many are."""
    while (done := _tiles_done(out)) < tiles:
        assert time.time() < deadline and _job_status(cluster, job) in ("PENDING", "RUNNING"), _job_logs(cluster, job)
        time.sleep(0.3)
    return done


def _wait_finished(cluster: LocalRayCluster, job: str, deadline: float) -> str:
    while (status := _job_status(cluster, job)) in ("PENDING", "RUNNING"):
        assert time.time() < deadline, _job_logs(cluster, job)
        time.sleep(1)
    return status


def _both_workers(cluster: LocalRayCluster) -> None:
    """A test that lost a node leaves it lost: the next one starts with two workers again."""
    for name in ("a", "b"):
        if cluster.nodes[name].node_id not in cluster.alive_nodes():
            cluster.restart_node(name)


# the test seam slows every tile down (0.2 s after each: 72 tiles take 8 s or more on two actors), so that a
# node or the driver is lost mid-run
SLOW_TILES = json.dumps({"env_vars": {"RANGE_DIST_TEST_FAULTS": "sleep_after_batch=0.2"}})


def _assert_spread_over_both_workers(cluster: LocalRayCluster, report: dict[str, Any],
                                     assets: tuple[Path, Path], text: str) -> None:
    workers = {cluster.nodes["a"].node_id, cluster.nodes["b"].node_id}
    # every tile says where it was computed; both worker nodes computed some, the head (no CPUs) none
    assert report["tiles_computed"] == TILES and len(report["tile_nodes"]) == TILES
    assert {t["node_id"] for t in report["tile_nodes"]} == workers
    assert set(report["nodes"]) == workers and all(n["tiles"] > 0 for n in report["nodes"].values())
    assert sum(n["tiles"] for n in report["nodes"].values()) == TILES
    assert all(len(n["workers"]) == 1 for n in report["nodes"].values())  # one actor per node (SPREAD)
    # the payload (database + location weights) went once to each node, through the object store
    db = RetrievalDatabase.open(assets[1])
    db_bytes = db.keys.nbytes + db.values.nbytes + db.locations.nbytes
    sizes = {n["payload_bytes"] for n in report["nodes"].values()}
    assert len(sizes) == 1 and sizes.pop() >= db_bytes
    assert report["payload_bytes_moved"] == sum(n["payload_bytes"] for n in report["nodes"].values())
    assert "2 Ray node(s)" in text and "MiB payload moved in all (once per node" in text
    print("\n".join(line for line in text.splitlines() if line.startswith("ray:") or "run report" in line))


def _lose_a_worker_node_midrun(cluster: LocalRayCluster, clean: np.ndarray, assets: tuple[Path, Path],
                               out: Path | str, s3: SeaweedS3 | None = None) -> None:
    """Submit the job (tiles slowed down), SIGKILL worker a's raylet mid-run: the cube equals the clean one."""
    _both_workers(cluster)
    job = f"range-dist-lost-node-{time.time_ns()}"
    res = _submit(cluster, _job_args(assets, out), "--no-wait", "--submission-id", job,
                  "--runtime-env-json", SLOW_TILES)
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.time() + 150
    _wait_running_until(cluster, job, out, 8, deadline)  # both actors have been computing for a while
    raylet = cluster.kill_node("a")
    assert _tiles_done(out) < TILES, "the run ended before the node was lost"
    status = _wait_finished(cluster, job, deadline)
    logs = _job_logs(cluster, job)
    assert status == "SUCCEEDED", logs[-4000:]
    lost = str(cluster.nodes["a"].node_id)
    # the lost node's replica was dropped: by the driver's node check, or when its calls failed first
    assert f"node {lost[:8]} is gone" in logs or "it is retried on another replica" in logs, logs[-4000:]
    print(f"killed raylet {raylet} of node {lost[:8]}")
    print("\n".join(line for line in logs.splitlines() if line.startswith("ray:") or "run report" in line))
    _assert_equal_cubes(out, clean, s3)
    report = _open(out, s3).attrs["range_dist:run_report"]
    assert report["tiles_computed"] == TILES
    # node b finished what node a left: it computed tiles, and more than node a (which was lost early)
    nodes = report["nodes"]
    kept = str(cluster.nodes["b"].node_id)
    assert nodes[kept]["tiles"] > nodes.get(lost, {"tiles": 0})["tiles"], (raylet, nodes)


# ---------------------------------------------------------------------------- the grid job, cube in a bucket
def test_s3_job_spreads_tiles_over_nodes_and_equals_the_local_cube(
        cluster: LocalRayCluster, s3: SeaweedS3, s3_env: None, bucket: str, clean_cube: np.ndarray,
        sample_assets: tuple[Path, Path]) -> None:
    # the same job with `--out` on local disk (a shared volume) differs only in the store's writes:
    # `_submit(cluster, _job_args(sample_assets, tmp_path / "c.zarr"))`, left out to keep this module short
    _both_workers(cluster)
    url = f"s3://{bucket}/cube.zarr"
    job = f"range-dist-s3-{time.time_ns()}"
    res = _submit(cluster, _job_args(sample_assets, url), "--submission-id", job)
    text = res.stdout + res.stderr
    assert res.returncode == 0 and "succeeded" in text, text[-4000:]
    assert f"cube: {url}" in text
    # what a user does: xr.open_zarr of the same URL (the local executor's cube on local disk is the reference)
    _assert_equal_cubes(url, clean_cube, s3)
    _assert_spread_over_both_workers(cluster, _open(url, s3).attrs["range_dist:run_report"], sample_assets, text)
    # really in the bucket (no local folder named `s3:` in the job's working dir), the lease released
    keys = s3.filesystem().find(bucket)
    assert f"{bucket}/cube.zarr/zarr.json" in keys and not any(k.endswith(".lease") for k in keys)
    assert not list(cluster.temp_dir.rglob("s3:*"))
    # the secret came from the nodes' environment: it is in no log and not in the job's record
    secret = s3.keys["admin"].secret_key
    assert secret not in text and secret not in _job_logs(cluster, job)
    assert secret not in json.dumps(_job_info(cluster, job))


def test_s3_job_with_its_driver_killed_resumes_only_the_missing_tiles(
        cluster: LocalRayCluster, s3: SeaweedS3, s3_env: None, bucket: str, clean_cube: np.ndarray,
        sample_assets: tuple[Path, Path]) -> None:
    _both_workers(cluster)
    url = f"s3://{bucket}/cube.zarr"
    job = f"range-dist-driver-{time.time_ns()}"
    res = _submit(cluster, _job_args(sample_assets, url), "--no-wait", "--submission-id", job,
                  "--runtime-env-json", SLOW_TILES)
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.time() + 150
    _wait_running_until(cluster, job, url, 8, deadline)
    # the lease names the driver's process: the one `ray job` records for the job (on the head node)
    holder = read_holder(url)
    assert holder is not None
    info = _job_info(cluster, job)
    driver = info.get("driver_info") or {}
    assert str(driver.get("pid")) == str(holder.pid), (driver, holder)
    # why credentials do not go in --runtime-env-json: the job's record shows its env_vars to every reader
    assert "RANGE_DIST_TEST_FAULTS" in json.dumps(info.get("runtime_env"))
    os.kill(holder.pid, signal.SIGKILL)  # a driver lost without any chance to clean up
    status = _wait_finished(cluster, job, deadline)
    assert status == "FAILED", _job_logs(cluster, job)[-4000:]
    done_at_kill = _tiles_done(url)
    assert 8 <= done_at_kill < TILES, done_at_kill
    left = read_holder(url)  # SIGKILL: the lease is left behind (its heartbeat may have moved on)
    assert left is not None and (left.run_id, left.pid) == (holder.run_id, holder.pid)

    # the same command again (not slowed down): on the same host, a lease whose process is gone is taken over
    rerun = f"range-dist-driver-rerun-{time.time_ns()}"
    res = _submit(cluster, _job_args(sample_assets, url), "--submission-id", rerun)
    text = res.stdout + res.stderr
    assert res.returncode == 0 and "succeeded" in text, text[-4000:]
    assert f"took over the lease of run {holder.run_id}" in text, text[-4000:]
    _assert_equal_cubes(url, clean_cube, s3)
    report = _open(url, s3).attrs["range_dist:run_report"]
    # only the missing tiles were computed: every tile the killed run finished was kept
    assert report["tiles_already_done"] >= done_at_kill
    assert report["tiles_computed"] == TILES - report["tiles_already_done"] > 0
    assert report["lease"]["took_over"]["pid"] == holder.pid
    assert "no longer runs on this host" in report["lease"]["took_over"]["reason"]
    assert read_holder(url) is None
    print(f"killed driver pid {holder.pid} after {done_at_kill} tiles; the rerun found "
          f"{report['tiles_already_done']} done and computed {report['tiles_computed']}")


def test_s3_job_loses_a_worker_node_midrun_and_equals_the_local_cube(
        cluster: LocalRayCluster, s3: SeaweedS3, s3_env: None, bucket: str, clean_cube: np.ndarray,
        sample_assets: tuple[Path, Path]) -> None:
    # with the cube on local disk (a shared volume) a node loss takes the same path but for the store's
    # writes: `_lose_a_worker_node_midrun(..., tmp_path / "c.zarr")`, left out to keep this module short
    _lose_a_worker_node_midrun(cluster, clean_cube, sample_assets, f"s3://{bucket}/cube.zarr", s3)


# ---------------------------------------------------------------------------- database build
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = make_world(tmp_path_factory.mktemp("s2world"))  # COGs and STAC on 127.0.0.1: every node reads them
    yield built
    built.close()


def _rows_by_id(path: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    db = RetrievalDatabase.open(path)
    return {str(i): (db.keys[k], db.values[k]) for k, i in enumerate(db.provenance["location_id"])}


def test_build_db_loses_the_encoder_node_midrun_and_equals_a_local_build(
        cluster: LocalRayCluster, world: World, tmp_path: Path, s3_env: None, bucket: str) -> None:
    _both_workers(cluster)  # the grid tests above lost a node: this test starts with two again
    local = tmp_path / "local.zarr"
    build_database(build_config(world, local), quiet=True)
    out = f"s3://{bucket}/multinode-db.zarr"  # the database goes straight into the bucket
    cfg = build_config(world, out, executor="ray", ray_address="auto", batch_size=1)
    job = f"range-dist-build-{time.time_ns()}"
    # the driver sleeps after each appended batch, so that the node is lost mid-build
    env = json.dumps({"env_vars": {"RANGE_DIST_TEST_FAULTS": "sleep_after_batch=1"}})
    res = _submit(cluster, ["range-dist", "build-db", *to_argv(cfg)], "--no-wait", "--submission-id", job,
                  "--runtime-env-json", env)
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.time() + 150
    encoder_node, rows = "", 0
    while not (encoder_node and rows >= 1):
        assert time.time() < deadline and _job_status(cluster, job) in ("PENDING", "RUNNING"), _job_logs(cluster, job)
        logs = _job_logs(cluster, job)
        if "ray: encoder actor on node " in logs:
            encoder_node = logs.split("ray: encoder actor on node ", 1)[1][:8]
        try:
            meta: Any = zarr.open_group(StoreLocation.parse(out).zarr_store(read_only=True),
                                        mode="r").attrs["range_dist_database"]
            rows = int(meta["rows"])
        except Exception:  # not created yet
            rows = 0
        time.sleep(0.3)
    victim = next(n for n in cluster.workers_nodes() if str(n.node_id).startswith(encoder_node))
    cluster.kill_node(victim.name)
    while (status := _job_status(cluster, job)) in ("PENDING", "RUNNING"):
        assert time.time() < deadline, _job_logs(cluster, job)
        time.sleep(1)
    logs = _job_logs(cluster, job)
    assert status == "SUCCEEDED", logs[-4000:]
    print("\n".join(line for line in logs.splitlines() if line.startswith(("ray:", "build-db:"))))
    # the driver saw the loss: by its node check, or as the encoder's calls failed
    seen = (f"node {encoder_node} (the encoder actor's) is gone", "the encoder actor died", "read and encoded again")
    assert any(line in logs for line in seen), logs[-4000:]
    # the same rows (each location once) and the same failures as the build on the local executor
    a, b = _rows_by_id(local), _rows_by_id(out)
    assert sorted(a) == sorted(b) == ["loc-clear", "loc-edge", "loc-flaky", "loc-old"]
    for loc in a:
        np.testing.assert_allclose(b[loc][0], a[loc][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b[loc][1], a[loc][1], rtol=1e-4, atol=1e-4)
    assert {r[0]: r[1] for r in failure_table(out)} == {r[0]: r[1] for r in failure_table(local)}
