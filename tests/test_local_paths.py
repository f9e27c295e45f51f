"""URLs are refused where an input must stay local, never silently turned into local folders.

Object storage (s3://, gs://, az://) is supported for the cube (embed-grid --out, map / sample /
similar): tests/test_object_store.py. Every other scheme is refused there too (tested here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from range_dist.config.schema import from_sources
from range_dist.errors import ConfigError
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.util.outputs import check_output_location
from range_dist.util.paths import local_path


@pytest.mark.parametrize("url", ["s3://bucket/cube.zarr", "gs://b/c.zarr", "az://c/d.zarr", "https://h/db.npz",
                                 "S3://Bucket/x"])
def test_urls_are_refused_with_the_fix(url: str) -> None:
    with pytest.raises(ConfigError, match="not supported; range-dist reads and writes local paths"):
        local_path(url, "--out")
    with pytest.raises(ConfigError, match="URL turned into a path"):
        local_path(Path(url), "--out")


def test_file_urls_and_plain_paths_are_local(tmp_path: Path) -> None:
    assert local_path(f"file://{tmp_path}/c.zarr") == tmp_path / "c.zarr"
    assert local_path("file://localhost/data/x%20y.zarr") == Path("/data/x y.zarr")
    assert local_path("runs/c.zarr") == Path("runs/c.zarr")
    assert local_path("C:/data/x.zarr") == Path("C:/data/x.zarr")  # a drive letter is not a scheme
    with pytest.raises(ConfigError, match="not on host 'server'"):
        local_path("file://server/share/x.zarr")


def test_config_and_output_checks_refuse_urls(tmp_path: Path) -> None:
    # s3:// is a supported cube location now (tests/test_object_store.py); other schemes are refused
    assert from_sources(GridJobConfig, flags={"out": "s3://bucket/c.zarr"}).out == "s3://bucket/c.zarr"
    with pytest.raises(ConfigError, match=r"flag --out: out 'https://host/c.zarr': https:// is not a supported "
                                          "store location"):
        from_sources(GridJobConfig, flags={"out": "https://host/c.zarr"})
    with pytest.raises(ConfigError, match="ftp://"):
        check_output_location("ftp://host/db.zarr", "--out")


LOCAL_ONLY = "is not supported; range-dist reads and writes local paths"


@pytest.mark.parametrize(("argv", "message"), [
    (["embed-grid", "--sample-assets", "--out", "https://host/cube.zarr", "--dry-run"],
     "https:// is not a supported store location"),
    (["export-cog", "runs/cube.zarr", "--out", "gs://bucket/c.tif"], LOCAL_ONLY),  # the COG is local
    (["map", "ftp://host/cube.zarr", "--out", "m.png"], "ftp:// is not a supported store location"),
    (["map", "runs/cube.zarr", "--out", "s3://bucket/m.png"], LOCAL_ONLY),  # the PNG is local
])
def test_cli_refuses_urls_and_writes_nothing(tmp_path: Path, argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "range_dist", *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "RAY_ADDRESS": ""}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:" or "gs:"
