"""The Zarr database's integrity record: missing chunks refused on open, every checksum in `verify`,
and damaged / non-database .npz files as messages (no traceback)."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from range_dist.assets import make_sample_database
from range_dist.cli.main import main
from range_dist.database import RetrievalDatabase, verify_database
from range_dist.database.append import PROVENANCE_COLUMNS, DatabaseAppender, RowBatch
from range_dist.database.store import ATTRS_KEY, INTEGRITY_KEY
from range_dist.errors import DatabaseError

CHUNK = 1024  # 3000 rows -> chunks of rows 0-1023, 1024-2047, 2048-2999


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine imported database; tests copy it before damaging it."""
    path = tmp_path_factory.mktemp("imported") / "db.zarr"
    make_sample_database(rows=3000, seed=0).to_zarr(path, rows_per_chunk=CHUNK)
    return path


@pytest.fixture()
def db_copy(imported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(imported, tmp_path / "db.zarr"))


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def _flip(path: Path) -> None:
    """Flip 8 bytes in the middle of a file, keeping its length (the chunk still decodes)."""
    data = bytearray(path.read_bytes())
    for k in range(8):
        data[len(data) // 2 + k] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- imported databases
def test_intact_database_opens_and_verifies(db_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = zarr.open_group(str(db_copy), mode="r").attrs[ATTRS_KEY]
    record = meta[INTEGRITY_KEY]["arrays"]
    assert set(record) == {"locations", "keys", "values", "source_row"}
    assert record["values"]["chunk_rows"] == CHUNK and len(record["values"]["digests"]) == 3
    assert RetrievalDatabase.open(db_copy).rows == 3000
    report = verify_database(db_copy)
    assert report.ok and len(report.checks) == 12
    rc, out, _ = _cli(capsys, "verify", db_copy)
    assert rc == 0
    assert "values" in out and "0-2999" in out and "OK" in out


@pytest.mark.parametrize("array", ["values", "locations"])
def test_deleted_chunk_is_refused_on_open(db_copy: Path, array: str, capsys: pytest.CaptureFixture[str]) -> None:
    (db_copy / array / "c" / "1" / "0").unlink()
    with pytest.raises(DatabaseError) as info:
        RetrievalDatabase.open(db_copy)
    message = str(info.value)
    assert f"array {array!r}" in message and "rows 1024-2047" in message
    assert str(db_copy) in message and f"range-dist verify {db_copy}" in message
    rc, _, err = _cli(capsys, "db-info", db_copy)
    assert rc == 2 and f"array {array!r} is missing" in err and "rows 1024-2047" in err
    rc, out, err = _cli(capsys, "verify", db_copy)
    assert rc == 2
    assert [line.split()[:3] for line in out.splitlines() if "missing" in line] == [[array, "1024-2047", "missing"]]
    assert "1 missing" in err


def test_flipped_bytes_open_but_verify_reports_damage(db_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _flip(db_copy / "values" / "c" / "1" / "0")
    assert RetrievalDatabase.open(db_copy).rows == 3000  # the cheap check only looks for the chunk files
    report = verify_database(db_copy)
    assert not report.ok
    assert [(c.array, c.start, c.stop) for c in report.checks if c.status == "damaged"] == [("values", 1024, 2048)]
    rc, out, err = _cli(capsys, "verify", db_copy)
    assert rc == 2 and "damaged" in out and "1 damaged" in err


def test_undecodable_chunk_is_a_message(db_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (db_copy / "keys" / "c" / "2" / "0").write_bytes(b"not zstd at all")
    with pytest.raises(DatabaseError, match=r"cannot decode array 'keys'.*range-dist verify"):
        RetrievalDatabase.open(db_copy)
    report = verify_database(db_copy)
    damaged = [c for c in report.checks if c.status == "damaged"]
    assert [(c.array, c.start) for c in damaged] == [("keys", 2048)] and "cannot decode" in damaged[0].detail
    assert _cli(capsys, "verify", db_copy)[0] == 2


def test_undecodable_values_chunk_is_a_message(db_copy: Path) -> None:
    """The values are read chunk by chunk into the engine's buffer: a chunk that does not decode is named."""
    (db_copy / "values" / "c" / "1" / "0").write_bytes(b"not zstd at all")
    with pytest.raises(DatabaseError, match=r"cannot decode array 'values'.*range-dist verify"):
        RetrievalDatabase.open(db_copy)


def test_database_without_record_warns_and_verify_says_so(db_copy: Path, caplog: pytest.LogCaptureFixture,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    group = zarr.open_group(str(db_copy), mode="r+")
    meta = dict(group.attrs[ATTRS_KEY])
    del meta[INTEGRITY_KEY]
    group.attrs[ATTRS_KEY] = meta
    with caplog.at_level(logging.WARNING):
        assert RetrievalDatabase.open(db_copy).rows == 3000
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no integrity record" in warnings[0] and "\n" not in warnings[0]
    rc, out, err = _cli(capsys, "verify", db_copy)
    assert rc == 2 and "unrecorded" in out and "no integrity record" in err


def test_verify_refuses_what_is_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (cubes are verified too: tests/test_cube_integrity.py)
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    rc, _, err = _cli(capsys, "verify", tmp_path / "other.zarr")
    assert rc == 2 and "not a range-dist database" in err and "embedding cubes written by embed-grid" in err
    (tmp_path / "notes.txt").write_text("hello")
    rc, _, err = _cli(capsys, "verify", tmp_path / "notes.txt")
    assert rc == 2 and "not a range-dist database" in err
    rc, _, err = _cli(capsys, "verify", tmp_path / "none.zarr")
    assert rc == 2 and "does not exist" in err


# ---------------------------------------------------------------------------- databases built by appends
def _batch(rng: np.random.Generator, first: int, n: int) -> RowBatch:
    locs = np.stack([rng.uniform(-180, 180, n), rng.uniform(-60, 60, n)], axis=1)
    columns = {
        "location_id": np.array([f"loc-{first + i}" for i in range(n)], dtype=str),
        "query_lon": locs[:, 0], "query_lat": locs[:, 1],
        "item_id": np.array([f"S2A_{first + i}" for i in range(n)], dtype=str),
        "datetime": np.array(["2023-06-01T10:00:00Z"] * n, dtype=str),
        "processing_baseline": np.array(["05.09"] * n, dtype=str),
        "offset_applied": np.zeros(n, np.int32),  # all-fill chunks: still stored, so still checked
        "provider_offset_applied": np.zeros(n, bool),
        "scene_cloud_cover": rng.uniform(0, 20, n).astype(np.float32),
        "cloud_fraction": np.zeros(n, np.float32),
        "nodata_fraction": np.zeros(n, np.float32),
        "chip_crs": np.array(["EPSG:32633"] * n, dtype=str),
    }
    assert set(columns) == set(PROVENANCE_COLUMNS)
    return RowBatch(locations=locs, keys=rng.normal(size=(n, 16)).astype(np.float32),
                    values=rng.normal(size=(n, 32)).astype(np.float32), provenance=columns)


ATTRS = {"key_encoder": "test-key", "value_encoder": "test-value", "radiometry": "test"}


def _build(path: Path, sizes: list[int], seed: int = 0) -> list[RowBatch]:
    rng = np.random.default_rng(seed)
    appender = DatabaseAppender.open_or_create(path, 16, 32, ATTRS, chunk_rows=64)
    batches, rows = [], 0
    for n in sizes:
        batches.append(_batch(rng, rows, n))
        rows = appender.append(batches[-1])
    return batches


def test_appended_database_verifies_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "built.zarr"
    batches = _build(path, [50, 100, 14, 64, 3])  # blocks of 64 rows, completed across batches
    rng = np.random.default_rng(1)
    # a run killed mid-batch: arrays grown and written past `rows`, nothing committed
    group = zarr.open_group(str(path), mode="r+")
    for name in ("locations", "keys", "values"):
        arr = group[name]
        arr.resize((arr.shape[0] + 40, *arr.shape[1:]))
        arr[-40:] = 7
    # the resumed run reads the committed head of the partial block back, then goes on
    appender = DatabaseAppender.open_or_create(path, 16, 32, ATTRS, chunk_rows=64)
    assert appender.rows == 231
    for n in (30, 70):
        batches.append(_batch(rng, appender.rows, n))
        appender.append(batches[-1])
    db = RetrievalDatabase.open(path)
    assert db.rows == 331
    np.testing.assert_array_equal(db.values, np.concatenate([b.values for b in batches]))
    report = verify_database(path)
    assert report.ok, report.table()
    assert len([c for c in report.checks if c.array == "values"]) == 6
    assert _cli(capsys, "verify", path)[0] == 0


def test_appended_database_detects_a_deleted_chunk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "built.zarr"
    _build(path, [100, 100, 100])
    (path / "offset_applied" / "c" / "2").unlink()  # an all-zero column: zarr would have skipped it
    with pytest.raises(DatabaseError, match=r"array 'offset_applied' is missing .* rows 128-191.*--overwrite"):
        RetrievalDatabase.open(path)
    rc, out, _ = _cli(capsys, "verify", path)
    assert rc == 2
    assert [line.split()[:3] for line in out.splitlines() if "missing" in line] == \
        [["offset_applied", "128-191", "missing"]]


def test_resuming_a_database_without_record_adopts_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "built.zarr"
    _build(path, [100, 40])
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs[ATTRS_KEY])
    del meta[INTEGRITY_KEY]
    group.attrs[ATTRS_KEY] = meta
    with caplog.at_level(logging.WARNING):
        appender = DatabaseAppender.open_or_create(path, 16, 32, ATTRS, chunk_rows=64)
    assert any("recording the 140 committed rows" in r.getMessage() for r in caplog.records)
    appender.append(_batch(np.random.default_rng(5), 140, 20))
    assert verify_database(path).ok


# ---------------------------------------------------------------------------- .npz files and other inputs
def _sample_npz(path: Path) -> Path:
    make_sample_database(rows=200, seed=0).to_npz(path)
    return path


def _assert_message(capsys: pytest.CaptureFixture[str], path: Path, pattern: str) -> None:
    with pytest.raises(DatabaseError, match=pattern) as info:
        RetrievalDatabase.open(path)
    assert str(path) in str(info.value)
    rc, _, err = _cli(capsys, "db-info", path)
    assert rc == 2 and str(path) in err
    assert err.startswith("range-dist db-info: error:")


def test_truncated_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _sample_npz(tmp_path / "db.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _assert_message(capsys, path, r"damaged or truncated \.npz.*re-download or re-export")
    rc, _, err = _cli(capsys, "verify", path)
    assert rc == 2 and "not a complete zip archive" in err


def test_npz_values_with_a_damaged_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A flipped byte inside the values (read block by block into the engine's buffer) fails the member's
    CRC-32: refused as damaged, never loaded."""
    path = _sample_npz(tmp_path / "db.npz")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("image_embeddings.npy")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200 + 4 * 1000  # inside the array
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    _assert_message(capsys, path, r"damaged or truncated \.npz \(BadZipFile.*re-download or re-export")


@pytest.mark.parametrize("layout", ["float32", "float64", "float16", "fortran", "compressed"])
def test_npz_values_read_as_numpy_reads_them(tmp_path: Path, layout: str) -> None:
    """Whatever the values' dtype, order or compression, the opened database holds numpy's own reading of
    them (as float32), in the ones-column buffer the engine reads."""
    db = make_sample_database(rows=300, seed=1)
    values = {"float64": db.values.astype(np.float64), "float16": db.values.astype(np.float16),
              "fortran": np.asfortranarray(db.values)}.get(layout, db.values)
    path = tmp_path / f"{layout}.npz"
    save = np.savez_compressed if layout == "compressed" else np.savez
    save(path, locs=db.locations, satclip_embeddings=db.keys, image_embeddings=values)
    opened = RetrievalDatabase.open(path)
    with np.load(path) as npz:
        expected = np.asarray(npz["image_embeddings"], dtype=np.float32)
    np.testing.assert_array_equal(opened.values, expected)
    buffer = opened.values_with_ones
    assert buffer.shape == (300, values.shape[1] + 1) and (buffer[:, -1] == 1.0).all()
    assert np.shares_memory(buffer, opened.values)


def test_row_checks_match_the_elementwise_ones() -> None:
    """The screened finiteness and zero-key checks give the element-wise answers, edge cases included:
    finite rows whose sum overflows, NaN / inf rows, keys just below and above the zero threshold."""
    from range_dist.database.store import _non_finite_rows, _zero_rows

    rng = np.random.default_rng(0)
    values = rng.normal(size=(64, 32)).astype(np.float32)
    values[3] = 3e38  # finite, but the row's sum overflows
    values[5, 7] = np.nan
    values[9, 0] = -np.inf
    values[11, :2] = (np.inf, -np.inf)  # sums to NaN
    assert (_non_finite_rows(values) == ~np.isfinite(values).all(axis=1)).all()
    assert list(np.flatnonzero(_non_finite_rows(values))) == [5, 9, 11]
    keys = rng.normal(size=(64, 16)).astype(np.float32)
    keys[1] = 0.0
    keys[2] = 1e-14  # norm 4e-14: zero
    keys[4] = 2e-13  # norm 8e-13: zero
    keys[6] = 5e-13  # norm 2e-12: not zero
    keys[8] = 0.0
    keys[8, 0] = 1e-40  # subnormal: zero
    keys[10] = 1e-11
    expected = np.linalg.norm(keys.astype(np.float64), axis=1) < 1e-12
    assert (_zero_rows(keys) == expected).all() and list(np.flatnonzero(expected)) == [1, 2, 4, 8]


def test_npz_with_string_arrays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = make_sample_database(rows=20, seed=0)
    path = tmp_path / "strings.npz"
    np.savez(path, locs=db.locations.astype(str), satclip_embeddings=db.keys, image_embeddings=db.values)
    _assert_message(capsys, path, r"array 'locs' holds strings \(dtype <U\d+\), not numbers")


def test_npz_with_object_arrays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = make_sample_database(rows=20, seed=0)
    path = tmp_path / "objects.npz"
    np.savez(path, locs=db.locations, satclip_embeddings=db.keys,
             image_embeddings=np.array([list(r) for r in db.values], dtype=object))
    _assert_message(capsys, path, r"array 'image_embeddings' holds Python objects \(pickled data\)")


def test_text_file_named_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "points.npz"
    path.write_text("lon,lat\n1.0,2.0\n")
    _assert_message(capsys, path, r"not an \.npz database \(it starts with 'lon,lat', a text file\?\)")
    with pytest.raises(DatabaseError) as info:
        RetrievalDatabase.open(path)
    assert "pickled" not in str(info.value)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _assert_message(capsys, empty, r"the file is empty")


def test_intact_npz_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _sample_npz(tmp_path / "db.npz")
    rc, out, _ = _cli(capsys, "verify", path)
    assert rc == 0 and "image_embeddings" in out and "zip CRC-32 matches" in out


def test_record_is_json_in_zarr_json(imported: Path) -> None:
    """The record travels with the group's attributes (readable without range-dist)."""
    attrs = json.loads((imported / "zarr.json").read_text())["attributes"][ATTRS_KEY]
    assert attrs["rows"] == 3000 and attrs[INTEGRITY_KEY]["version"] == 1
