"""Retrieval database: published npz, Zarr v3 form, round trips, validation, alignment check."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from range_dist import RetrievalDatabase
from range_dist.database import check_row_alignment
from range_dist.errors import DatabaseError


def _npz(path: Path, m: int = 20, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "locs": np.stack([rng.uniform(-180, 180, m), rng.uniform(-90, 90, m)], axis=1),
        "satclip_embeddings": rng.normal(size=(m, 256)).astype(np.float32),
        "image_embeddings": rng.normal(size=(m, 1024)).astype(np.float32),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def test_npz_zarr_npz_round_trip(tmp_path: Path, sample_db: RetrievalDatabase) -> None:
    sample_db.to_npz(tmp_path / "a.npz")
    db = RetrievalDatabase.open(tmp_path / "a.npz")
    assert db.attrs["sample"] is True  # the sample label survives the published layout
    db.to_zarr(tmp_path / "db.zarr")
    back = RetrievalDatabase.open(tmp_path / "db.zarr")
    np.testing.assert_array_equal(back.locations, sample_db.locations)
    np.testing.assert_array_equal(back.keys, sample_db.keys)
    np.testing.assert_array_equal(back.values, sample_db.values)
    np.testing.assert_array_equal(back.provenance["source_row"], np.arange(sample_db.rows))
    assert back.fingerprint() == sample_db.fingerprint()
    back.to_npz(tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz") as npz:
        np.testing.assert_array_equal(npz["satclip_embeddings"], sample_db.keys)
        assert npz["locs"].dtype == np.float64


def _content_sha256(db: RetrievalDatabase) -> str:
    """The fingerprint's definition, computed here on whole contiguous copies."""
    digest = hashlib.sha256()
    for arr in (db.locations, db.keys, db.values):
        digest.update(str(arr.shape).encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("values_dtype", [np.float32, np.float64, ">f4"])
def test_fingerprint_hashed_while_read(tmp_path: Path, values_dtype: str) -> None:
    """An opened database's fingerprint, hashed beside the read, is the rows' SHA-256 (.npz in any value
    dtype, and the Zarr form); its rows are read-only, and a database whose values were replaced is
    hashed again."""
    rng = np.random.default_rng(1)
    path = _npz(tmp_path / "db.npz", m=3000, locs=np.stack([rng.uniform(-180, 180, 3000),
                                                             rng.uniform(-90, 90, 3000)], axis=1).astype(np.float32),
                image_embeddings=rng.normal(size=(3000, 1024)).astype(values_dtype))
    db = RetrievalDatabase.open(path)
    assert "_fingerprint" in db.__dict__  # computed while reading, not afterwards
    assert db.fingerprint() == _content_sha256(db)
    assert not any(a.flags.writeable for a in (db.locations, db.keys, db.values, db.values_with_ones))
    db.to_zarr(tmp_path / "db.zarr")
    from_zarr = RetrievalDatabase.open(tmp_path / "db.zarr")
    assert "_fingerprint" in from_zarr.__dict__ and from_zarr.fingerprint() == db.fingerprint()
    db.values = db.values * 2.0
    assert db.fingerprint() == _content_sha256(db) != from_zarr.fingerprint()


def test_zarr_database_opens_with_xarray(tmp_path: Path, sample_db: RetrievalDatabase) -> None:
    sample_db.to_zarr(tmp_path / "db.zarr")
    ds = xr.open_zarr(tmp_path / "db.zarr", consolidated=False)
    assert ds["values"].dims == ("row", "value_feature")
    assert ds.attrs["range_dist_database"]["rows"] == sample_db.rows
    assert ds.attrs["range_dist_database"]["key_dim"] == 256


def test_string_provenance_columns(tmp_path: Path, sample_db: RetrievalDatabase) -> None:
    db = sample_db.select(slice(0, 10))
    db.provenance["item_id"] = np.array([f"S2A_{i}" for i in range(10)])
    db.to_zarr(tmp_path / "p.zarr")
    back = RetrievalDatabase.open(tmp_path / "p.zarr")
    assert list(back.provenance["item_id"]) == [f"S2A_{i}" for i in range(10)]


def test_existing_store_is_not_replaced_without_overwrite(tmp_path: Path, sample_db: RetrievalDatabase) -> None:
    sample_db.to_zarr(tmp_path / "db.zarr")
    with pytest.raises(DatabaseError, match="already exists; pass --overwrite"):
        sample_db.select(slice(0, 5)).to_zarr(tmp_path / "db.zarr")
    assert RetrievalDatabase.open(tmp_path / "db.zarr").rows == sample_db.rows  # untouched


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"locs": np.zeros((19, 2))}, r"keys has 20 rows but locations has 19"),
        ({"image_embeddings": np.zeros((20, 1024, 1))}, r"values must be 2-D"),
        ({"locs": np.zeros((20, 3))}, r"locations must have shape \(M, 2\)"),
    ],
)
def test_shape_errors(tmp_path: Path, override: dict[str, np.ndarray], pattern: str) -> None:
    with pytest.raises(DatabaseError, match=pattern):
        RetrievalDatabase.open(_npz(tmp_path / "x.npz", **override))


def test_content_errors_name_the_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(20, 1024)).astype(np.float32)
    values[7, 3] = np.nan
    with pytest.raises(DatabaseError, match=r"values row 7 contains NaN or infinite"):
        RetrievalDatabase.open(_npz(tmp_path / "a.npz", image_embeddings=values))
    keys = rng.normal(size=(20, 256)).astype(np.float32)
    keys[4] = 0
    with pytest.raises(DatabaseError, match=r"keys row 4 has zero norm"):
        RetrievalDatabase.open(_npz(tmp_path / "b.npz", satclip_embeddings=keys))
    locs = np.zeros((20, 2))
    locs[2] = [45.0, 120.0]
    with pytest.raises(DatabaseError, match=r"locations row 2 = \(45.0, 120.0\) is outside.*swapped"):
        RetrievalDatabase.open(_npz(tmp_path / "c.npz", locs=locs))


def test_missing_arrays_and_unknown_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", locs=np.zeros((3, 2)))
    with pytest.raises(DatabaseError, match=r"missing array\(s\) \['satclip_embeddings', 'image_embeddings'\]"):
        RetrievalDatabase.open(tmp_path / "m.npz")
    with pytest.raises(DatabaseError, match=r"does not exist.*import-db"):
        RetrievalDatabase.open(tmp_path / "none.zarr")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatabaseError, match="not a retrieval database"):
        RetrievalDatabase.open(tmp_path / "notes.txt")


def test_alignment_check_tells_aligned_from_shuffled(sample_db: RetrievalDatabase) -> None:
    good = check_row_alignment(sample_db)
    assert good.aligned and good.neighbour_similarity > good.random_similarity + 0.2
    shuffled = RetrievalDatabase(
        sample_db.locations, sample_db.keys, sample_db.values[np.random.default_rng(0).permutation(sample_db.rows)]
    )
    bad = check_row_alignment(shuffled)
    assert not bad.aligned
    assert "misaligned" in bad.summary()


def test_shards_cover_all_rows(sample_db: RetrievalDatabase) -> None:
    bounds = sample_db.shard_bounds(4)
    assert bounds[0][0] == 0 and bounds[-1][1] == sample_db.rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    with pytest.raises(DatabaseError, match="cannot split"):
        sample_db.shard_bounds(sample_db.rows + 1)


def test_non_numeric_arrays_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match=r"<memory>: values holds strings \(dtype <U1\), not numbers"):
        RetrievalDatabase(np.zeros((2, 2)), np.ones((2, 4)), np.array([["a"], ["b"]]))
    with pytest.raises(DatabaseError, match=r"x\.npz: array 'satclip_embeddings' holds strings"):
        RetrievalDatabase.open(_npz(tmp_path / "x.npz", satclip_embeddings=np.full((20, 256), "1.0")))
