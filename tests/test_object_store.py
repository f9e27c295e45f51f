"""The grid job and cube reading on object storage: a real S3 server (SeaweedFS) on 127.0.0.1.

Shows: a cube written to ``s3://`` (local executor) equals the same job on local disk, read by a plain
``xr.open_zarr(url, storage_options=...)``; no secret reaches the store, the report or the log; a
mismatched store is refused and kept; a killed driver resumes; the server stopped mid-run is one clear
error and a rerun after its restart completes; the four object-store faults are one-line messages;
``map`` / ``sample`` read a cube from its URL; and the lease's create-only write on S3.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor (a run no longer imports it)
import xarray as xr
import yaml

from range_dist.analysis.cube import open_cube
from range_dist.cli.main import main
from range_dist.cube.store import read_tile_status
from range_dist.errors import ConfigError, StoreMismatchError
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.testing.s3 import AWS_VARS, SeaweedS3
from range_dist.util.lease import StoreBusyError, StoreLease, read_holder
from range_dist.util.stores import StoreLocation
from tests.helpers import one_line_error

BETAS = (0.0, 0.5, 1.0)

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> GridJobConfig:
    ckpt, db = sample_assets
    return GridJobConfig(resolution=10.0, betas=BETAS, satclip=ckpt, db=db,
                         out=tmp_path_factory.mktemp("local") / "cube.zarr", tile_size=6, chunk_size=3,
                         executor="local")


@pytest.fixture(scope="module")
def local_cube(config: GridJobConfig) -> xr.Dataset:
    """The reference: the same job on local disk."""
    embed_grid(config, executor="local")
    return xr.open_zarr(config.out).load()


@pytest.fixture(scope="module")
def fine_config(config: GridJobConfig, tmp_path_factory: pytest.TempPathFactory) -> GridJobConfig:
    """A 20° grid in 2 × 2 tiles (45 tiles): long enough to stop a run in its middle."""
    return replace(config, resolution=20.0, tile_size=2, chunk_size=2,
                   out=tmp_path_factory.mktemp("fine") / "cube.zarr")


@pytest.fixture(scope="module")
def fine_cube(fine_config: GridJobConfig) -> xr.Dataset:
    embed_grid(fine_config, executor="local")
    return xr.open_zarr(fine_config.out).load()


def _open(s3: SeaweedS3, url: str) -> xr.Dataset:
    """What a user does: a plain xarray call with the URL and storage options."""
    return xr.open_zarr(url, storage_options=s3.storage_options(), decode_coords="all")


def _same_cube(a: xr.Dataset, b: xr.Dataset, exact: bool = True) -> None:
    if exact:
        np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
    else:  # another process: the project's tolerance for runs on other workers (tests/test_grid_job.py)
        np.testing.assert_allclose(a["embedding"].values.astype(np.float32), b["embedding"].values.astype(np.float32),
                                   rtol=2e-3, atol=2e-3, equal_nan=True)
    np.testing.assert_array_equal(a["tile_status"].values, b["tile_status"].values)
    if exact:
        np.testing.assert_array_equal(a["tile_checksum"].values, b["tile_checksum"].values)
    assert a.attrs["range_dist:signature"] == b.attrs["range_dist:signature"]


def _cli(cfg: GridJobConfig, url: str) -> list[str]:
    return [sys.executable, "-m", "range_dist", "embed-grid", "--satclip", str(cfg.satclip), "--db", str(cfg.db),
            "--resolution", str(cfg.resolution), "--tile-size", str(cfg.tile_size), "--chunk-size",
            str(cfg.chunk_size), "--betas", ",".join(map(str, cfg.betas)), "--executor", "local", "--out", url]


def _wait_for_tiles(proc: subprocess.Popen[bytes], url: str, count: int, timeout: float = 90) -> int:
    """Tiles done in the store once at least ``count`` are (the driver still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            done = int((read_tile_status(url) > 0).sum())
        except Exception:  # the template is not there yet
            done = 0
        if done >= count:
            return done
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} tiles done after {timeout} s")


# ------------------------------------------------------------------ locations


@pytest.mark.parametrize("value", ["https://host/c.zarr", "gcs://b/c.zarr", "ftp://h/c.zarr", "abfs://c/d.zarr",
                                   "s3://", "s3://key:secret@bucket/c.zarr", "s3://b/c.zarr?x=1"])
def test_other_schemes_and_odd_urls_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"store location|no bucket|without user"):
        StoreLocation.parse(value, "--out")


def test_locations_parse_to_local_paths_or_urls(tmp_path: Path) -> None:
    assert StoreLocation.parse(f"file://{tmp_path}/c.zarr").local == tmp_path / "c.zarr"
    assert StoreLocation.parse("runs/c.zarr").local == Path("runs/c.zarr")
    for url in ("s3://b/x/c.zarr", "gs://b/c.zarr", "az://container/c.zarr"):
        loc = StoreLocation.parse(url)
        assert loc.url == url and str(loc) == url and loc.describe() == url
        assert StoreLocation.parse(Path(url)) == loc  # Path() dropped the '//': read back as the URL
    loc = StoreLocation.parse("S3://Bucket/c.zarr/")
    assert loc.url == "s3://Bucket/c.zarr" and loc.bucket == "Bucket"
    assert loc.child("tile_status").url == "s3://Bucket/c.zarr/tile_status"
    assert loc.sibling(".lease").url == "s3://Bucket/c.zarr.lease"
    cfg = GridJobConfig(out="s3://b/c.zarr", storage_options={"secret": "xyz-very-secret", "endpoint_url": "http://h"})
    assert cfg.out == "s3://b/c.zarr" and "xyz-very-secret" not in repr(cfg)
    assert GridJobConfig(out="s3://b/c.zarr", overviews=2.0).overviews == 2.0  # built in the bucket too


# ------------------------------------------------------------------ the grid job


def test_grid_job_to_s3_equals_local_and_keeps_secrets_out(
        s3: SeaweedS3, bucket: str, config: GridJobConfig, local_cube: xr.Dataset, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # the credentials only in the YAML's storage_options: none in the environment
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    admin = s3.keys["admin"]
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"storage_options": {"key": admin.access_key, "secret": admin.secret_key,
                                                       "endpoint_url": s3.endpoint, "region": "us-east-1"}}))
    url = f"s3://{bucket}/runs/cube.zarr"
    argv = ["embed-grid", "--config", str(job), "--satclip", str(config.satclip), "--db", str(config.db),
            "--resolution", "10", "--tile-size", "6", "--chunk-size", "3", "--betas", "0,0.5,1", "--executor",
            "local", "--out", url]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert f"cube: {url}" in printed.err

    cube = _open(s3, url)
    _same_cube(cube, local_cube)
    assert cube["embedding"].dims == ("beta", "lat", "lon", "feature") and cube.rio.crs.to_epsg() == 4326

    # nothing secret anywhere: every object of the store (metadata, shards), the printed log
    fs = s3.filesystem()
    keys = fs.find(f"{bucket}/runs")
    assert any(k.endswith("cube.zarr/zarr.json") for k in keys)
    assert not any(k.endswith(".lease") for k in keys)  # released
    for key in keys:
        assert admin.secret_key.encode() not in fs.cat_file(key), key
    assert admin.secret_key not in printed.out + printed.err
    assert admin.secret_key not in str(cube.attrs)


def test_mismatched_store_is_refused_and_kept_and_overwrite_validates(
        s3: SeaweedS3, bucket: str, config: GridJobConfig, local_cube: xr.Dataset) -> None:
    url = f"s3://{bucket}/cube.zarr"
    cfg = replace(config, out=url)
    embed_grid(cfg, executor="local")
    again = embed_grid(cfg, executor="local")  # the same settings: resumes, nothing to compute
    assert again.tiles_computed == 0 and again.tiles_already_done == again.tiles_total
    with pytest.raises(StoreMismatchError, match=r"betas: store has \[0.0, 0.5, 1.0\], this run \[0.0, 0.25\]"):
        embed_grid(replace(cfg, betas=(0.0, 0.25)), executor="local")
    _same_cube(_open(s3, url), local_cube)  # untouched
    embed_grid(replace(cfg, betas=(0.0, 0.25), overwrite=True), executor="local")
    assert _open(s3, url)["beta"].values.tolist() == [0.0, 0.25]

    # a prefix that is not a range-dist store is never deleted, even with --overwrite
    fs = s3.filesystem()
    fs.pipe_file(f"{bucket}/foreign.zarr/data.bin", b"not a cube")
    with pytest.raises(StoreMismatchError, match="is not a range-dist cube"):
        embed_grid(replace(cfg, out=f"s3://{bucket}/foreign.zarr", overwrite=True), executor="local")
    assert fs.cat_file(f"{bucket}/foreign.zarr/data.bin") == b"not a cube"


def test_killed_driver_resumes_only_the_missing_tiles(
        s3: SeaweedS3, bucket: str, fine_config: GridJobConfig, fine_cube: xr.Dataset) -> None:
    url = f"s3://{bucket}/cube.zarr"
    proc = subprocess.Popen(_cli(fine_config, url), env=dict(os.environ), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_tiles(proc, url, 8)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    status = read_tile_status(url)
    done_before = int((status > 0).sum())
    assert 8 <= done_before < status.size
    assert read_holder(url) is not None  # SIGKILL: the lease is left behind
    # what a reader sees mid-run: the whole template, each finished tile's values, NaN where none is written
    with pytest.warns(RuntimeWarning, match="consolidated metadata"):  # written only when a run finishes
        partial = _open(s3, url)
    emb = partial["embedding"].values.astype(np.float32)
    size = fine_config.tile_size
    rows, cols = np.nonzero(status > 0)
    for row, col in zip(rows[:3], cols[:3], strict=True):
        block = (slice(None), slice(size * row, size * (row + 1)), slice(size * col, size * (col + 1)))
        np.testing.assert_allclose(emb[block], fine_cube["embedding"].values[block].astype(np.float32),
                                   rtol=2e-3, atol=2e-3)
    # the last tile in the local executor's order was not started (the first missing one may have its data
    # written and its status not yet: the tile in flight, redone by the resume)
    row, col = (int(i[-1]) for i in np.nonzero(status == 0))
    assert np.isnan(emb[:, size * row:size * (row + 1), size * col:size * (col + 1)]).all()
    # same host, holder gone: the lease is taken over; --verify reads every done tile back from the bucket
    report = embed_grid(replace(fine_config, out=url, verify=True), executor="local")
    assert report.tiles_already_done == done_before
    assert report.tiles_computed == status.size - done_before  # no finished tile computed twice
    assert report.lease is not None and "took_over" in report.lease
    _same_cube(_open(s3, url), fine_cube, exact=False)


def test_server_stopped_mid_run_is_a_clear_error_and_a_rerun_completes(
        s3: SeaweedS3, bucket: str, fine_config: GridJobConfig, fine_cube: xr.Dataset) -> None:
    url = f"s3://{bucket}/cube.zarr"
    proc = subprocess.Popen(_cli(fine_config, url), env=dict(os.environ), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_tiles(proc, url, 5)
        s3.stop(grace_s=0.5)  # gone at once: the run must not finish in SeaweedFS's wind-down
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if s3.proc is None:
            s3.start()
    message = err.decode()
    assert proc.returncode == 2, message
    line = message.strip().splitlines()[-1]
    assert line.startswith("range-dist embed-grid: error: ") and "Traceback" not in message, message
    assert f"object store at {s3.endpoint}" in line and "rerun the same command to resume" in line, line
    report = embed_grid(replace(fine_config, out=url), executor="local")
    assert report.tiles_already_done >= 5
    _same_cube(_open(s3, url), fine_cube, exact=False)


# ------------------------------------------------------------------ fault messages


def test_fault_messages(s3: SeaweedS3, bucket: str, config: GridJobConfig, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["embed-grid", "--satclip", str(config.satclip), "--db", str(config.db), "--resolution", "30",
            "--tile-size", "6", "--chunk-size", "3", "--executor", "local"]

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    line = one_line_error(capsys, [*base, "--out", f"s3://{bucket}/c.zarr", "--dry-run"])
    assert "refused the credentials" in line and "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.keys["admin"].secret_key)

    line = one_line_error(capsys, [*base, "--out", "s3://no-such-bucket-here/c.zarr", "--dry-run"])
    assert "bucket 'no-such-bucket-here' does not exist at " + s3.endpoint in line
    assert f"aws s3 mb s3://no-such-bucket-here --endpoint-url {s3.endpoint}" in line

    for name, value in s3.env("reader").items():  # a key that may list and read, not write
        monkeypatch.setenv(name, value)
    line = one_line_error(capsys, [*base, "--out", f"s3://{bucket}/c.zarr"])
    assert "lacks write permission on bucket" in line and bucket in line
    assert s3.filesystem().find(bucket) == []  # refused at the lease, the run's first write: nothing written
    for name, value in s3.env("admin").items():
        monkeypatch.setenv(name, value)

    port = _closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    line = one_line_error(capsys, [*base, "--out", f"s3://{bucket}/c.zarr", "--dry-run"])
    assert f"cannot reach the object store at http://127.0.0.1:{port}" in line
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)

    line = one_line_error(capsys, ["map", "s3://no-such-bucket-here/c.zarr", "--out", str(tmp_path / "m.png")])
    assert "bucket 'no-such-bucket-here' does not exist" in line


@pytest.mark.parametrize("url", ["gs://bucket/c.zarr", "az://container/c.zarr", "s3://bucket/c.zarr"])
def test_unreachable_hosts_of_every_client_are_explained(url: str) -> None:
    """aiohttp's errors (gcsfs, adlfs) and their subclasses, raised by real failed connections, are messages."""
    import asyncio

    import aiohttp

    async def connect(address: str) -> None:
        async with aiohttp.ClientSession() as session, session.get(address):
            pass

    location = StoreLocation.parse(url)
    for address in (f"http://127.0.0.1:{_closed_port()}/", "http://no-such-host.invalid/"):  # refused; DNS
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            asyncio.run(connect(address))
        error = location.explain(caught.value, "opening the bucket of")
        assert error is not None, f"{type(caught.value).__name__} not recognised as unreachable"
        assert f"opening the bucket of {url}: cannot reach the object store" in str(error)
        assert "rerun the same command" in str(error)


def test_client_retry_logs_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from range_dist.cli.main import _one_line_client_logs

    _one_line_client_logs()
    try:
        raise ConnectionRefusedError("Connect call failed")
    except ConnectionRefusedError:
        logging.getLogger("gcsfs").exception("_request out of retries on exception")
    err = capsys.readouterr().err
    assert err == "gcsfs: _request out of retries on exception\n"


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ reading, lease


def test_map_and_sample_read_a_cube_from_its_url(s3: SeaweedS3, bucket: str, config: GridJobConfig,
                                                 local_cube: xr.Dataset, tmp_path: Path) -> None:
    url = f"s3://{bucket}/cube.zarr"
    embed_grid(replace(config, out=url), executor="local")
    points = tmp_path / "p.csv"
    pd.DataFrame({"lon": [8.5, -70.6, 179.9], "lat": [47.4, -33.4, 0.0]}).to_csv(points, index=False)
    assert main(["sample", url, "--points", str(points), "--out", str(tmp_path / "s3.npz")]) == 0
    assert main(["sample", str(config.out), "--points", str(points), "--out", str(tmp_path / "local.npz")]) == 0
    with np.load(tmp_path / "s3.npz") as a, np.load(tmp_path / "local.npz") as b:
        np.testing.assert_array_equal(a["embedding"], b["embedding"])
    assert main(["map", url, "--beta", "0.5", "--out", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").stat().st_size > 0
    assert main(["similar", url, "--lon", "13", "--lat", "47", "--beta", "0.5", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    ds = open_cube(url, beta=0.5)  # the library call: the environment's credentials and endpoint
    np.testing.assert_array_equal(ds["embedding"].values, open_cube(config.out, beta=0.5)["embedding"].values)


def test_fast_plan_sidecar_is_kept_in_the_bucket_and_reused(s3: SeaweedS3, bucket: str, config: GridJobConfig) -> None:
    url = f"s3://{bucket}/fast.zarr"
    cfg = replace(config, out=url, mode="fast", tolerance=1e-3)
    log = io.StringIO()
    embed_grid(cfg, executor="local", log=log)
    assert "fast mode -> exact:" in log.getvalue()  # the decision (its reason depends on measured speed)
    assert s3.filesystem().isfile(f"{bucket}/fast.zarr.fastplan.npz")  # STORE.fastplan.npz beside the cube
    log = io.StringIO()
    embed_grid(cfg, executor="local", log=log)  # a resume: the saved decision is read from the bucket
    assert "reusing the plan saved by an earlier run of these settings" in log.getvalue()


def test_lease_on_s3_is_a_conditional_create(s3: SeaweedS3, bucket: str) -> None:
    url = f"s3://{bucket}/cube.zarr"
    marker = StoreLocation.parse(f"s3://{bucket}/once")
    assert marker.write_bytes(b"1", create_only=True) is True
    assert marker.write_bytes(b"2", create_only=True) is False  # If-None-Match: * refused the second
    assert marker.read_bytes() == b"1"
    with StoreLease(url, "first") as lease:
        assert read_holder(url) == lease.holder
        with pytest.raises(StoreBusyError, match="is being written by another driver"):
            StoreLease(url, "second").acquire()
    assert read_holder(url) is None and not StoreLocation.parse(url).sibling(".lease").exists()
