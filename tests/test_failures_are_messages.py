"""Bad input and full disks give one-line messages naming the input, a non-zero exit, and lose nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from range_dist.cli.main import main
from range_dist.cube.store import TILE_MISSING, read_tile_status


@contextlib.contextmanager
def tmpfs(where: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real small file system (tmpfs) at ``where``: its ENOSPC / EROFS are the kernel's own."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _grid(ckpt: Path, db: Path, out: Path, executor: str = "local") -> list[str]:
    return ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "10",
            "--tile-size", "6", "--chunk-size", "3", "--executor", executor, "--betas", "0,0.5,1"]


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_disk_full_is_a_message_and_a_rerun_resumes(sample_assets: tuple[Path, Path], tmp_path: Path, executor: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    clean = tmp_path / "clean.zarr"
    assert main(_grid(ckpt, db, clean)) == 0
    with tmpfs(tmp_path / "small", "700k") as small:
        out = small / "cube.zarr"
        capsys.readouterr()
        # on Ray the OSError is raised in an actor: it must still reach the user as this one line
        assert main(_grid(ckpt, db, out, executor)) == 2
        err = capsys.readouterr().err.strip()
        last = err.splitlines()[-1]  # the plan and progress come first, then one error line
        assert last.startswith("range-dist embed-grid: error: writing tile")
        assert "No space left on device" in last and str(out) in last and "rerun the same command" in last
        assert "Traceback" not in err
        status = read_tile_status(out)
        assert (status == TILE_MISSING).any() and (status != TILE_MISSING).any()
        # more space, the same command: it resumes, and the cube equals a clean run
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        assert main(_grid(ckpt, db, out)) == 0
        assert "resuming:" in capsys.readouterr().err
        a = xr.open_zarr(clean)["embedding"].values
        b = xr.open_zarr(out)["embedding"].values
        np.testing.assert_array_equal(a, b)


def test_read_only_output_is_refused_before_computing(sample_assets: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n8.5,47.4\n")
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        for args in (_grid(ckpt, db, ro / "cube.zarr"),
                     ["embed-points", "--satclip", str(ckpt), "--db", str(db), "--points", str(points),
                      "--out", str(ro / "sub" / "e.npz")]):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert "not writable" in err and str(ro) in err


def test_output_under_a_file_is_refused(sample_assets: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(_grid(ckpt, db, blocker / "cube.zarr")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_missing_output_folders_are_created(sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, db = sample_assets
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n8.5,47.4\n")
    out = tmp_path / "new" / "deeper" / "e.npz"
    assert main(["embed-points", "--satclip", str(ckpt), "--db", str(db), "--points", str(points),
                 "--out", str(out)]) == 0
    assert out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("lon,lat\n", "has a header (lon, lat) but no rows"),
        ("lat,lon\n91,0\n", "is out of range"),
        ("x_coord,y\n1,2\n", "no longitude column"),
    ],
)
def test_bad_points_files(sample_assets: tuple[Path, Path], tmp_path: Path, content: str, message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    points = tmp_path / "p.csv"
    points.write_text(content)
    out = tmp_path / "e.npz"
    assert main(["embed-points", "--satclip", str(ckpt), "--db", str(db), "--points", str(points),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(points) in err and "Traceback" not in err
    assert not out.exists()


def _start_driver(args: list[str], out: Path, tiles: int, stderr: int) -> subprocess.Popen[bytes]:
    """``python -m range_dist ARGS`` in its own session, from a plain shell's environment (no RAY_*),
    returned once at least ``tiles`` tiles of ``out`` are done (and the driver still runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "range_dist", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "tile_status").exists() and (read_tile_status(out) != TILE_MISSING).sum() >= tiles:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    return proc


@pytest.mark.parametrize(("executor", "signum", "code"), [
    ("local", signal.SIGINT, 130),
    ("local", signal.SIGTERM, 143),
    ("ray", signal.SIGTERM, 143),
    ("ray", signal.SIGINT, 130),
])
def test_signals_stop_cleanly_and_a_rerun_resumes(sample_assets: tuple[Path, Path], tmp_path: Path, executor: str,
                                                  signum: int, code: int) -> None:
    import psutil

    ckpt, db = sample_assets
    out = tmp_path / "cube.zarr"
    args = ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "5",
            "--tile-size", "3", "--chunk-size", "3", "--executor", executor, "--betas", "0,1"]  # 288 tiles
    proc = _start_driver(args, out, tiles=10, stderr=subprocess.PIPE)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole foreground process group
    else:
        proc.send_signal(signum)  # `kill PID`, as a scheduler does
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.decode()
    assert proc.returncode == code, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(signum).name} after" in last and "Rerun the same command" in last, text[-3000:]
    assert "Traceback" not in text and "SIGTERM received" not in text
    done = int((read_tile_status(out) != TILE_MISSING).sum())
    assert 10 <= done < 288
    # nothing the driver started outlives it (a local Ray is shut down with it)
    time.sleep(2)
    left = [p for p in psutil.process_iter(["pid"]) if _session_of(p.pid) == proc.pid]
    assert not left, [p.cmdline() for p in left]
    # the same command resumes
    assert main([*args[:-4], "--executor", "local", "--betas", "0,1"]) == 0
    assert (read_tile_status(out) != TILE_MISSING).all()


def test_sigterm_passes_through_a_library_that_catches_exceptions() -> None:
    """What the SIGTERM handler raises is not an ``Exception``: Ray's deserialisation of a result (``except
    Exception``: log the traceback, return a RaySystemError) once took it for a failed tile and the run went
    on to the end. It still becomes the job's "stopped by SIGTERM" message, exit 143."""
    from range_dist.cli.main import _terminate
    from range_dist.errors import Interrupted, Terminated

    with pytest.raises(Terminated) as info:
        try:
            _terminate(signal.SIGTERM, None)
        except Exception:  # what such a library does
            pytest.fail("the stop request was caught as an error")
    stopped = Interrupted.after(info.value, "3 of 9 tiles", "cube.zarr")
    assert stopped.exit_code == 143 and str(stopped).startswith("stopped by SIGTERM after 3 of 9 tiles")


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_a_killed_driver_leaves_no_ray_process(sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGKILL of the driver alone: the local Ray it started (agents included) goes with it."""
    ckpt, db = sample_assets
    out = tmp_path / "cube.zarr"
    args = ["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(out), "--resolution", "2",
            "--tile-size", "3", "--chunk-size", "3", "--executor", "ray", "--betas", "0,1"]
    proc = _start_driver(args, out, tiles=5, stderr=subprocess.DEVNULL)
    names = sorted(_names_in_session(proc.pid))
    assert any("raylet" in n for n in names), names  # a local Ray is running in the driver's session
    proc.kill()  # the driver only, not its session
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and _names_in_session(proc.pid):
        time.sleep(0.5)
    assert not _names_in_session(proc.pid)


def _names_in_session(sid: int) -> list[str]:
    import psutil

    names = []
    for p in psutil.process_iter(["pid", "name"]):
        if _session_of(p.pid) == sid:
            try:
                names.append(" ".join(p.cmdline())[:80] or p.name())
            except psutil.Error:
                continue
    return names


def test_overwrite_of_a_plain_file_is_refused(sample_assets: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, db = sample_assets
    plain = tmp_path / "cube.zarr"
    plain.write_text("not a store")
    assert main([*_grid(ckpt, db, plain), "--overwrite"]) == 2
    assert "is a file, not a Zarr store" in capsys.readouterr().err
    assert plain.read_text() == "not a store"


def test_a_sample_checkpoint_flags_the_cube_even_with_a_real_database(sample_assets: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    import zarr

    from range_dist.database.store import NPZ_KEYS, NPZ_LOCATIONS, NPZ_VALUES, RetrievalDatabase

    ckpt, db = sample_assets
    sample_db = RetrievalDatabase.open(db)
    plain_db = tmp_path / "plain.npz"  # the published layout, without the sample note
    np.savez(plain_db, **{NPZ_LOCATIONS: sample_db.locations, NPZ_KEYS: sample_db.keys, NPZ_VALUES: sample_db.values})
    assert not RetrievalDatabase.open(plain_db).describe().get("sample")
    out = tmp_path / "cube.zarr"
    assert main(_grid(ckpt, plain_db, out)) == 0
    assert zarr.open_group(str(out), mode="r").attrs["range_dist:sample_assets"] is True
