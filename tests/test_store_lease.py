"""One driver per store: the lease refuses a second driver at once, and is taken over only when stale."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zarr

from range_dist.cli.main import main
from range_dist.cube.store import TILE_MISSING, read_tile_status
from range_dist.util.lease import StoreBusyError, StoreLease, lease_path, read_holder


def _grid(ckpt: Path, db: Path, out: Path, *extra: str) -> list[str]:
    return ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "10",
            "--tile-size", "6", "--chunk-size", "3", "--executor", "local", "--betas", "0,1", *extra]


def _fake_lease(store: Path, host: str, pid: int, heartbeat_age: float) -> None:
    now = time.time()
    lease_path(store).write_text(json.dumps({"host": host, "pid": pid, "run_id": "feedbeef0000", "command": "x",
                                             "started": now - 3600, "heartbeat": now - heartbeat_age}))


def test_a_second_driver_is_refused_at_once(sample_assets: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    out = tmp_path / "cube.zarr"
    args = ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "5",
            "--tile-size", "3", "--chunk-size", "3", "--executor", "local", "--betas", "0,1"]  # 288 tiles
    first = subprocess.Popen([sys.executable, "-m", "range_dist", *args], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / "tile_status").exists() and read_holder(out) is not None):
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            time.sleep(0.1)
        holder = read_holder(out)
        assert holder is not None and holder.pid == first.pid
        # the same settings, and other settings: both refused before computing anything
        for extra in ([], ["--betas", "0,0.5,1", "--overwrite"]):
            started = time.perf_counter()
            assert main([*args[:-2], *(extra or ["--betas", "0,1"])]) == 2
            err = capsys.readouterr().err
            assert "being written by another driver" in err and f"pid {first.pid}" in err, err
            assert time.perf_counter() - started < 30
        attrs = zarr.open_group(str(out), mode="r").attrs
        assert attrs["range_dist:betas"] == [0.0, 1.0]  # the first driver's store is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == 143
    assert not lease_path(out).exists()  # released on the way out
    assert main(args) == 0  # and the store resumes
    assert (read_tile_status(out) != TILE_MISSING).all()


def test_stale_lease_of_another_host_needs_takeover(sample_assets: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    out = tmp_path / "cube.zarr"
    _fake_lease(out, "another-host", 4242, heartbeat_age=3600)
    assert main(_grid(ckpt, db, out)) == 2
    err = capsys.readouterr().err
    assert "looks dead" in err and "another-host" in err and "--takeover" in err
    assert not out.exists()
    assert main(_grid(ckpt, db, out, "--takeover")) == 0
    assert "took over the lease of run feedbeef0000" in capsys.readouterr().err
    report = zarr.open_group(str(out), mode="r").attrs["range_dist:run_report"]
    assert report["lease"]["took_over"]["host"] == "another-host"
    assert not lease_path(out).exists()


def test_live_lease_is_never_taken_over(sample_assets: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    out = tmp_path / "cube.zarr"
    _fake_lease(out, "another-host", 4242, heartbeat_age=1)
    assert main(_grid(ckpt, db, out, "--takeover")) == 2
    assert "being written by another driver" in capsys.readouterr().err
    assert not out.exists()


def test_lease_of_a_dead_local_driver_is_taken_over(sample_assets: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    out = tmp_path / "cube.zarr"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _fake_lease(out, socket.gethostname(), gone.pid, heartbeat_age=1)
    assert main(_grid(ckpt, db, out)) == 0
    assert f"its process {gone.pid} no longer runs on this host" in capsys.readouterr().err


def test_of_two_drivers_starting_together_exactly_one_gets_the_lease(tmp_path: Path) -> None:
    store = tmp_path / "db.zarr"
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def contender() -> None:
        lease = StoreLease(store, "test")
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("held")
            time.sleep(0.5)
            lease.release()
        except StoreBusyError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["held"] + ["refused"] * 7
    assert not lease_path(store).exists()


def test_heartbeat_is_renewed(tmp_path: Path) -> None:
    store = tmp_path / "cube.zarr"
    with StoreLease(store, "test", heartbeat_s=0.1) as lease:
        first = read_holder(store)
        time.sleep(0.5)
        later = read_holder(store)
        assert first is not None and later is not None and later.heartbeat > first.heartbeat
        assert later.run_id == lease.holder.run_id and later.pid == os.getpid()
    assert read_holder(store) is None
