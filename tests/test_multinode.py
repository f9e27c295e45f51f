"""The grid job and the database build on a real multi-node Ray cluster on this machine: a head and
two worker nodes, each its own ``ray start`` (raylet, object store, 1 CPU, a custom resource), the
jobs submitted with ``ray job submit``. The tiles spread over both nodes, the payload goes once to
each node, and a node lost mid-run (its raylet SIGKILLed by its process id) leaves a cube (or a
database) equal to a clean run."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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
from tests.stac_world import World, build_config, make_world

REPO = Path(__file__).resolve().parents[1]
# 18 × 36 cells in 3 × 3 tiles: 72 tiles, enough for two nodes to share and to lose one mid-run
SETTINGS = {"resolution": 10.0, "tile_size": 3, "chunk_size": 3, "betas": (0.0, 0.5, 1.0)}
TILES = 72


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    # head without CPUs (the job's driver and the payload holder run there), two 1-CPU workers
    with LocalRayCluster(workers=("a", "b"), head_cpus=0, worker_cpus=1, object_store_mb=200) as c:
        yield c


@pytest.fixture(scope="module")
def clean_cube(sample_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The same settings on the local executor in this process: the reference."""
    ckpt, db = sample_assets
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    embed_grid(GridJobConfig(satclip=ckpt, db=db, out=out, executor="local", **SETTINGS),  # type: ignore[arg-type]
               executor="local")
    return np.asarray(xr.open_zarr(out)["embedding"].values, dtype=np.float32)


def _job_args(assets: tuple[Path, Path], out: Path) -> list[str]:
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


def _assert_equal_cubes(out: Path, clean: np.ndarray) -> None:
    assert (read_tile_status(out) == TILE_COMPUTED).all()
    got = np.asarray(xr.open_zarr(out)["embedding"].values, dtype=np.float32)
    np.testing.assert_allclose(got, clean, rtol=2e-3, atol=2e-3, equal_nan=True)  # float16 cube, Ray threads


def test_job_spreads_tiles_over_nodes_payload_once_per_node(
        cluster: LocalRayCluster, clean_cube: np.ndarray, sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "multinode.zarr"
    res = _submit(cluster, _job_args(sample_assets, out))
    text = res.stdout + res.stderr
    assert res.returncode == 0 and "succeeded" in text, text[-4000:]
    _assert_equal_cubes(out, clean_cube)

    report = xr.open_zarr(out).attrs["range_dist:run_report"]
    workers = {cluster.nodes["a"].node_id, cluster.nodes["b"].node_id}
    # every tile says where it was computed; both worker nodes computed some, the head (no CPUs) none
    assert report["tiles_computed"] == TILES and len(report["tile_nodes"]) == TILES
    assert {t["node_id"] for t in report["tile_nodes"]} == workers
    assert set(report["nodes"]) == workers and all(n["tiles"] > 0 for n in report["nodes"].values())
    assert sum(n["tiles"] for n in report["nodes"].values()) == TILES
    assert all(len(n["workers"]) == 1 for n in report["nodes"].values())  # one actor per node (SPREAD)
    # the payload (database + location weights) went once to each node, through the object store
    db = RetrievalDatabase.open(sample_assets[1])
    db_bytes = db.keys.nbytes + db.values.nbytes + db.locations.nbytes
    sizes = {n["payload_bytes"] for n in report["nodes"].values()}
    assert len(sizes) == 1 and sizes.pop() >= db_bytes
    assert report["payload_bytes_moved"] == sum(n["payload_bytes"] for n in report["nodes"].values())
    assert "2 Ray node(s)" in text and "MiB payload moved in all (once per node" in text
    print("\n".join(line for line in text.splitlines() if line.startswith("ray:") or "run report" in line))


def test_killed_worker_node_midrun_gives_the_clean_cube(
        cluster: LocalRayCluster, clean_cube: np.ndarray, sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "lost-node.zarr"
    job = f"range-dist-lost-node-{time.time_ns()}"
    # the test seam slows every tile down (0.4 s after each), so that the node is lost mid-run
    env = json.dumps({"env_vars": {"RANGE_DIST_TEST_FAULTS": "sleep_after_batch=0.4"}})
    res = _submit(cluster, _job_args(sample_assets, out), "--no-wait", "--submission-id", job,
                  "--runtime-env-json", env)
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.time() + 150
    done = 0
    while done < 8:  # both actors have been computing for a while
        assert time.time() < deadline and _job_status(cluster, job) in ("PENDING", "RUNNING"), _job_logs(cluster, job)
        if (out / "tile_status").exists():
            done = int((read_tile_status(out) != TILE_MISSING).sum())
        time.sleep(0.3)
    raylet = cluster.kill_node("a")
    assert int((read_tile_status(out) != TILE_MISSING).sum()) < TILES, "the run ended before the node was lost"
    while (status := _job_status(cluster, job)) in ("PENDING", "RUNNING"):
        assert time.time() < deadline, _job_logs(cluster, job)
        time.sleep(1)
    logs = _job_logs(cluster, job)
    assert status == "SUCCEEDED", logs[-4000:]
    lost = str(cluster.nodes["a"].node_id)
    # the lost node's replica was dropped: by the driver's node check, or when its calls failed first
    assert f"node {lost[:8]} is gone" in logs or "it is retried on another replica" in logs, logs[-4000:]
    print(f"killed raylet {raylet} of node {lost[:8]}")
    print("\n".join(line for line in logs.splitlines() if line.startswith("ray:") or "run report" in line))
    _assert_equal_cubes(out, clean_cube)
    report = xr.open_zarr(out).attrs["range_dist:run_report"]
    assert report["tiles_computed"] == TILES
    # node b finished what node a left: it computed tiles, and more than node a (which was lost early)
    nodes = report["nodes"]
    kept = str(cluster.nodes["b"].node_id)
    assert nodes[kept]["tiles"] > nodes.get(lost, {"tiles": 0})["tiles"], (raylet, nodes)


# ---------------------------------------------------------------------------- database build
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = make_world(tmp_path_factory.mktemp("s2world"))  # COGs and STAC on 127.0.0.1: every node reads them
    yield built
    built.close()


def _rows_by_id(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    db = RetrievalDatabase.open(path)
    return {str(i): (db.keys[k], db.values[k]) for k, i in enumerate(db.provenance["location_id"])}


def test_build_db_loses_the_encoder_node_midrun_and_equals_a_local_build(
        cluster: LocalRayCluster, world: World, tmp_path: Path) -> None:
    for name in ("a", "b"):  # the grid test above lost a node: this test starts with two again
        if cluster.nodes[name].node_id not in cluster.alive_nodes():
            cluster.restart_node(name)
    local = tmp_path / "local.zarr"
    build_database(build_config(world, local), quiet=True)
    out = tmp_path / "multinode-db.zarr"
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
            rows = int(zarr.open_group(str(out), mode="r").attrs["range_dist_database"]["rows"])
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
