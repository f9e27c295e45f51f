"""`ray job submit` against a real Ray head started by the test (ended by its process id)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr

from range_dist.cube.store import TILE_COMPUTED, read_tile_status

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ray_bin = BIN / "ray"
    if not ray_bin.exists() or shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("the ray CLI is not installed beside this Python")
    gcs, dashboard = _free_port(), _free_port()
    # The job's `python` is the one on the head's PATH: this environment's.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path_factory.mktemp("ray_head") / "head.log"
    with open(log, "wb") as fh:
        head = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             "--num-cpus=2", "--disable-usage-stats"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                    break
            except OSError:
                if head.poll() is not None or time.time() > deadline:
                    pytest.fail(f"Ray head did not come up: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started, by process group
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        # `ray start` records the head here; a bare ray.init() elsewhere would try to join it.
        record = Path("/tmp/ray/ray_current_cluster")
        if record.exists() and record.read_text().strip().endswith(f":{gcs}"):
            record.unlink()


def test_ray_job_submit_embed_grid(ray_head: str, sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, db = sample_assets
    out = tmp_path / "job.zarr"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", ".", "--",
           "python", "-m", "range_dist", "embed-grid", "--config", "workflows/global_1deg.yaml",
           "--resolution", "10", "--tile-size", "6", "--chunk-size", "3", "--satclip", str(ckpt), "--db", str(db),
           "--out", str(out), "--ray-address", "auto"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "disabled"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in (res.stdout + res.stderr)
    assert "run report: 18 tiles computed" in res.stdout + res.stderr
    ds = xr.open_zarr(out, decode_coords="all")
    assert ds["embedding"].shape == (3, 18, 36, 1280) and ds.rio.crs.to_epsg() == 4326
    assert (read_tile_status(out) == TILE_COMPUTED).all()
