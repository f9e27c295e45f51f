"""Inputs from URLs: ``--satclip`` / ``--db`` on a real S3 server (SeaweedFS on 127.0.0.1) and a local HTTP server.

Shows: a grid job whose checkpoint and npz database are ``s3://`` URLs makes the same cube as with local
paths, and its attributes name the URLs and hold no secret; a second run downloads nothing (the cached
copies are untouched); a damaged cached copy is refused with the fix; a wrong ``#sha256=`` pin is
refused naming both digests, and nothing is cached; a Zarr database is read in place from ``s3://``
(integrity record checked: a missing chunk object is refused); plain ``http://`` (for local and test
servers) downloads too. ``https://`` goes through the same code as ``http://`` (urllib) and is not
tested here: no TLS server is available to the tests.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from range_dist.cli.main import main
from range_dist.database.store import RetrievalDatabase
from range_dist.errors import AssetError, DatabaseError
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.jobs.grid.plan import load_inputs
from range_dist.testing.s3 import SeaweedS3
from range_dist.util import downloads
from range_dist.util.downloads import fetch_input, parse_remote

BETAS = (0.0, 0.5, 1.0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def env(aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The admin key and endpoint in the standard environment (``aws_env``); a fresh cache folder per test."""
    monkeypatch.setenv("RANGE_DIST_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bucket(s3: SeaweedS3, sample_assets: tuple[Path, Path]) -> str:
    """A bucket holding the sample checkpoint and npz database (uploaded once)."""
    name = f"inputs-{os.getpid()}"
    s3.create_bucket(name)
    fs = s3.filesystem()
    ckpt, db = sample_assets
    fs.put_file(str(ckpt), f"{name}/assets/{ckpt.name}")
    fs.put_file(str(db), f"{name}/assets/{db.name}")
    return name


@pytest.fixture(scope="module")
def urls(bucket: str, sample_assets: tuple[Path, Path]) -> tuple[str, str]:
    ckpt, db = sample_assets
    return f"s3://{bucket}/assets/{ckpt.name}", f"s3://{bucket}/assets/{db.name}"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> GridJobConfig:
    ckpt, db = sample_assets
    return GridJobConfig(resolution=10.0, betas=BETAS, satclip=ckpt, db=db,
                         out=tmp_path_factory.mktemp("local") / "cube.zarr", tile_size=6, chunk_size=3,
                         executor="local")


@pytest.fixture(scope="module")
def local_cube(config: GridJobConfig) -> xr.Dataset:
    """The reference: the job on local input paths."""
    embed_grid(config, executor="local")
    return xr.open_zarr(config.out).load()


def _same_cube(a: xr.Dataset, b: xr.Dataset) -> None:
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
    np.testing.assert_array_equal(a["tile_checksum"].values, b["tile_checksum"].values)
    assert a.attrs["range_dist:signature"] == b.attrs["range_dist:signature"]  # the same input digests


def _cache_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of the download cache: (inode, mtime in ns) — a new download would change both."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the grid job from s3:// inputs


def test_grid_job_from_s3_inputs_equals_local_and_downloads_once(
        s3: SeaweedS3, config: GridJobConfig, local_cube: xr.Dataset, urls: tuple[str, str], tmp_path: Path,
        sample_assets: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt_url, db_url = urls
    remote = replace(config, satclip=ckpt_url, db=db_url, out=tmp_path / "cube.zarr")
    embed_grid(remote, executor="local")
    cube = xr.open_zarr(remote.out).load()
    _same_cube(cube, local_cube)

    # the cache: one folder per URL, the file under its own name, the digest recorded beside it
    cache = tmp_path / "cache" / "downloads"
    ckpt, db = sample_assets
    for url, original in ((ckpt_url, ckpt), (db_url, db)):
        entry = parse_remote(url)
        assert entry is not None and entry.cached.parent.parent == cache
        assert entry.cached.read_bytes() == original.read_bytes()
        assert entry.record.read_text().strip() == _sha(original)
    assert not list(cache.rglob(".*.tmp"))

    # provenance: the URLs, the digests; no secret anywhere in the attributes
    attrs = cube.attrs
    assert attrs["range_dist:satclip_url"] == ckpt_url and attrs["range_dist:database_url"] == db_url
    assert attrs["range_dist:satclip_sha256"] == _sha(ckpt)
    assert attrs["range_dist:satclip"] == str(parse_remote(ckpt_url).cached)  # type: ignore[union-attr]
    text = json.dumps(attrs, default=str)
    admin = s3.keys["admin"]
    assert admin.secret_key not in text and admin.access_key not in text

    # a second run downloads nothing: no download is attempted, the cached files are the same files
    before = _cache_state(cache)

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(downloads, "_download", no_download)
    again = replace(remote, out=tmp_path / "again.zarr")
    embed_grid(again, executor="local")
    _same_cube(xr.open_zarr(again.out).load(), local_cube)
    assert _cache_state(cache) == before


def test_a_damaged_cached_copy_is_refused_with_the_fix(
        urls: tuple[str, str], config: GridJobConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt_url, db_url = urls
    first = fetch_input(ckpt_url, "--satclip")
    assert first.downloaded and first.source == ckpt_url
    assert not fetch_input(ckpt_url, "--satclip").downloaded  # reused, checked
    argv = ["embed-grid", "--satclip", ckpt_url, "--db", db_url, "--resolution", "10", "--tile-size", "6",
            "--chunk-size", "3", "--executor", "local", "--out", str(tmp_path / "c.zarr"), "--dry-run"]
    assert main(argv) == 0  # the plan names the URLs and the cached copies read
    plan = capsys.readouterr().out
    assert f"read:     {ckpt_url} (cached copy {first.path})" in plan and f"{db_url} (cached copy " in plan
    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    first.path.write_bytes(bytes(data))
    with pytest.raises(AssetError, match=r"is damaged or was replaced .*it is not used\. Delete the folder"):
        load_inputs(replace(config, satclip=ckpt_url, db=db_url))

    # the CLI: one line, exit 2, naming the cached file, both digests and the fix
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(first.path) in err and first.sha256 in err and _sha(first.path) in err
    assert "Delete the folder" in err and "Traceback" not in err
    assert not (tmp_path / "c.zarr").exists()


def test_a_wrong_sha256_pin_is_refused_and_nothing_is_cached(
        urls: tuple[str, str], sample_assets: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt_url, db_url = urls
    ckpt, _ = sample_assets
    wrong = "0" * 64
    argv = ["embed-grid", "--satclip", f"{ckpt_url}#sha256={wrong}", "--db", db_url, "--resolution", "10",
            "--tile-size", "6", "--chunk-size", "3", "--executor", "local", "--out", str(tmp_path / "c.zarr")]
    assert main(argv) == 2  # a real run: refused before anything is written
    assert not (tmp_path / "c.zarr").exists()
    err = capsys.readouterr().err
    assert "SHA-256 mismatch" in err and _sha(ckpt) in err and wrong in err and "nothing was used" in err
    entry = parse_remote(ckpt_url)
    assert entry is not None and list(entry.cache_folder.iterdir()) == []  # no file, no temporary left

    # the right pin is accepted, and a cached copy is checked against a pin on reuse too
    right = fetch_input(f"{ckpt_url}#sha256={_sha(ckpt).upper()}", "--satclip")
    assert right.downloaded and right.sha256 == _sha(ckpt) and right.source.endswith(f"#sha256={_sha(ckpt)}")
    with pytest.raises(AssetError, match=f"the cached copy .* has {_sha(ckpt)}, the URL pins {wrong}"):
        fetch_input(f"{ckpt_url}#sha256={wrong}", "--satclip")


def test_missing_objects_and_bad_urls_are_clear_errors(bucket: str) -> None:
    with pytest.raises(AssetError, match=f"--satclip s3://{bucket}/assets/nope.ckpt: no such object"):
        fetch_input(f"s3://{bucket}/assets/nope.ckpt", "--satclip")
    with pytest.raises(DatabaseError, match="does not exist"):
        RetrievalDatabase.open(f"s3://{bucket}/nope.zarr")


# ------------------------------------------------------------------ a Zarr database read in place


def test_zarr_database_read_in_place_from_s3(
        s3: SeaweedS3, bucket: str, config: GridJobConfig, local_cube: xr.Dataset, urls: tuple[str, str],
        sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    local = RetrievalDatabase.open(sample_assets[1])
    local.to_zarr(tmp_path / "db.zarr", rows_per_chunk=256)
    fs = s3.filesystem()
    fs.put(str(tmp_path / "db.zarr"), f"{bucket}/dbs/db.zarr", recursive=True)
    url = f"s3://{bucket}/dbs/db.zarr"

    db = RetrievalDatabase.open(url)
    assert db.source == url and db.fingerprint() == local.fingerprint()
    np.testing.assert_array_equal(db.values, local.values)
    assert not (tmp_path / "cache" / "downloads").exists()  # read in place: nothing downloaded

    cfg = replace(config, satclip=urls[0], db=url, out=tmp_path / "cube.zarr")
    embed_grid(cfg, executor="local")
    cube = xr.open_zarr(cfg.out).load()
    _same_cube(cube, local_cube)
    assert cube.attrs["range_dist:database_url"] == url and cube.attrs["range_dist:database"] == url

    # the integrity record is checked as for a local store: a lost chunk object is refused, naming its rows
    chunk = sorted(k for k in fs.find(f"{bucket}/dbs/db.zarr/values") if "/c/" in k)[1]
    fs.rm_file(chunk)
    with pytest.raises(DatabaseError, match=r"array 'values' is missing the chunk\(s\) that held rows 256-511"):
        RetrievalDatabase.open(url)


# ------------------------------------------------------------------ plain http:// (local test server)


@pytest.fixture
def http_root(tmp_path: Path, sample_assets: tuple[Path, Path]) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "db.npz").write_bytes(sample_assets[1].read_bytes())
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_http_download_of_an_npz_database(http_root: tuple[str, Path], sample_assets: tuple[Path, Path]) -> None:
    base, _ = http_root
    db = RetrievalDatabase.open(f"{base}/db.npz")
    assert db.source == f"{base}/db.npz"
    assert db.fingerprint() == RetrievalDatabase.open(sample_assets[1]).fingerprint()
    with pytest.raises(AssetError, match=r"db\.npz-missing: the server answered HTTP 404"):
        fetch_input(f"{base}/db.npz-missing", "--db")
    # a presigned-style query is never shown (it may hold a signature)
    with pytest.raises(AssetError) as info:
        fetch_input(f"{base}/missing.ckpt?X-Amz-Signature=s3cr3t", "--satclip")
    assert "s3cr3t" not in str(info.value) and "missing.ckpt?…" in str(info.value)


# ------------------------------------------------------------------ a dry run downloads nothing it keeps


def test_dry_runs_with_url_inputs_leave_the_cache_empty(
        urls: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt_url, db_url = urls
    cube = tmp_path / "cube.zarr"
    assert main(["embed-grid", "--satclip", ckpt_url, "--db", db_url, "--resolution", "10", "--tile-size", "6",
                 "--chunk-size", "3", "--executor", "local", "--out", str(cube), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "embed-grid plan:" in out and ckpt_url in out
    assert f"dry run: read {ckpt_url}, {db_url} from a temporary download, removed again" in out
    points = tmp_path / "points.csv"
    points.write_text("lon,lat\n10,45\n")
    assert main(["embed-points", "--satclip", ckpt_url, "--db", db_url, "--points", str(points),
                 "--out", str(tmp_path / "emb.npz"), "--dry-run"]) == 0
    assert main(["import-db", db_url, "--out", str(tmp_path / "db.zarr"), "--dry-run"]) == 0
    assert "embed-points plan:" in capsys.readouterr().out
    cache = tmp_path / "cache"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
    assert not cube.exists() and not (tmp_path / "emb.npz").exists() and not (tmp_path / "db.zarr").exists()
    # a copy already in the cache is used by a dry run (verified), and stays
    fetch_input(ckpt_url, "--satclip")
    before = _cache_state(cache)
    assert main(["embed-grid", "--satclip", ckpt_url, "--db", db_url, "--resolution", "10", "--tile-size", "6",
                 "--chunk-size", "3", "--executor", "local", "--out", str(cube), "--dry-run"]) == 0
    assert f"dry run: read {db_url} from a temporary download" in capsys.readouterr().out
    assert _cache_state(cache) == before


# ------------------------------------------------------------------ embed-points shares the loading


def test_embed_points_from_s3_inputs_equals_local(
        s3: SeaweedS3, urls: tuple[str, str], sample_assets: tuple[Path, Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    points = tmp_path / "points.csv"
    points.write_text("lon,lat\n10,45\n-70,-10\n135,-25\n")
    ckpt, db = sample_assets
    outputs = {}
    for name, (satclip, database) in {"local": (str(ckpt), str(db)), "s3": urls}.items():
        out = tmp_path / f"{name}.parquet"
        assert main(["embed-points", "--satclip", satclip, "--db", database, "--points", str(points),
                     "--out", str(out)]) == 0
        outputs[name] = pq.read_table(out)
    assert outputs["s3"].column("embedding").equals(outputs["local"].column("embedding"))
    attrs = json.loads(outputs["s3"].schema.metadata[b"range_dist"])
    assert attrs["satclip"] == urls[0] and attrs["database"] == urls[1] and attrs["satclip_sha256"] == _sha(ckpt)
    assert s3.keys["admin"].secret_key not in json.dumps(attrs)


# ------------------------------------------------------------------ what is accepted where


def test_input_urls_are_accepted_only_by_the_inputs_that_download() -> None:
    from range_dist.config.schema import from_sources
    from range_dist.errors import ConfigError
    from range_dist.util.paths import local_path

    pinned = ("https://huggingface.co/microsoft/SatCLIP-ViT16-L40/resolve/main/satclip-vit16-l40.ckpt#sha256="
              + "ab" * 32)
    cfg = from_sources(GridJobConfig, flags={"satclip": pinned, "db": "gs://b/db.zarr"})
    assert cfg.satclip == pinned and cfg.db == "gs://b/db.zarr"  # text: Path() would drop the '//'
    assert GridJobConfig(satclip="s3://b/x.ckpt", db=Path("db.npz")).satclip == "s3://b/x.ckpt"
    for bad, message in (("ftp://h/x.ckpt", "ftp:// inputs are not supported"),
                         ("https://user:pw@h/x.ckpt", "credentials in a URL are refused"),
                         ("https://h/x.ckpt#md5=00", "#sha256=<64 hex digits>"),
                         ("s3:///x.ckpt", "no bucket")):
        with pytest.raises(ConfigError, match=message) as info:
            from_sources(GridJobConfig, flags={"satclip": bad})
        assert "pw@" not in str(info.value)
    with pytest.raises(ConfigError, match="not supported; range-dist reads and writes local paths"):
        local_path("s3://b/points.csv", "--points")  # inputs that stay local still refuse URLs
