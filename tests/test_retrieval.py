"""RANGE / RANGE+ against the published formulas in float64; multi-β, shards, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from range_dist import RangeEncoder, RetrievalDatabase, encode_sharded
from range_dist.errors import ConfigError, CoordinateError, DatabaseError
from range_dist.retrieval import RetrievalSettings, merge_partials
from tests.helpers import random_points, reference_range

BETAS = (0.0, 0.25, 0.5, 1.0)


@pytest.mark.parametrize("variant", ["range+", "range"])
@pytest.mark.parametrize("db_name", ["random_db", "sample_db"])
def test_matches_float64_reference(variant: str, db_name: str, location_encoder, request) -> None:
    db: RetrievalDatabase = request.getfixturevalue(db_name)
    pts = random_points(300, seed=11)
    ours = RangeEncoder(location_encoder, db, variant=variant).encode(pts, BETAS)
    ref = reference_range(location_encoder, db, pts, BETAS, variant)
    assert ours.shape == (len(BETAS), len(pts), 1280) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-5


def test_duplicated_rows_and_clustered_database(location_encoder) -> None:
    rng = np.random.default_rng(5)
    centre = np.array([[10.0, 45.0]])
    locs = np.concatenate([centre + rng.normal(scale=0.5, size=(400, 2)), np.repeat(centre, 50, axis=0)])
    keys = rng.normal(size=(450, 256))
    keys[400:] = keys[0]
    db = RetrievalDatabase(locs, keys, rng.normal(size=(450, 1024)) * 3)
    pts = random_points(100, seed=3)
    ours = RangeEncoder(location_encoder, db).encode(pts, BETAS)
    assert np.abs(ours - reference_range(location_encoder, db, pts, BETAS)).max() <= 1e-5


def test_large_temperature_uses_running_max_and_stays_exact(location_encoder, random_db) -> None:
    pts = random_points(80, seed=4)
    enc = RangeEncoder(location_encoder, random_db, tau_sem=70.0, tau_geo=200.0)
    ours = enc.encode(pts, (0.3,))
    ref = reference_range(location_encoder, random_db, pts, (0.3,), tau_sem=70.0, tau_geo=200.0)
    assert np.isfinite(ours).all()
    assert np.abs(ours - ref).max() <= 2e-5


def test_multi_beta_equals_one_beta_at_a_time(location_encoder, sample_db) -> None:
    enc = RangeEncoder(location_encoder, sample_db)
    pts = random_points(150, seed=8)
    together = enc.encode(pts, BETAS)
    for i, beta in enumerate(BETAS):
        np.testing.assert_allclose(together[i], enc.encode(pts, (beta,))[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_equals_unsharded(location_encoder, sample_db, shards: int) -> None:
    pts = random_points(120, seed=9)
    whole = RangeEncoder(location_encoder, sample_db).encode(pts, BETAS)
    parts = [RangeEncoder(location_encoder, shard) for shard in sample_db.shards(shards)]
    assert sum(p.db.rows for p in parts) == sample_db.rows
    np.testing.assert_allclose(encode_sharded(parts, pts, BETAS), whole, atol=1e-6, rtol=0)


def test_merge_is_order_independent(location_encoder, sample_db) -> None:
    pts = random_points(40, seed=1)
    parts = [RangeEncoder(location_encoder, s).partials(pts, (0.5,))[0] for s in sample_db.shards(4)]
    a = merge_partials(parts).averages()
    b = merge_partials(parts[::-1]).averages()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("budget_mb", "db_chunk"), [(0.05, 97), (1.0, 1000), (64.0, 100_000)])
def test_batch_size_invariance(location_encoder, sample_db, budget_mb: float, db_chunk: int) -> None:
    pts = random_points(260, seed=12)
    base = RangeEncoder(location_encoder, sample_db).encode(pts, BETAS)
    other = RangeEncoder(location_encoder, sample_db, db_chunk=db_chunk, memory_budget_mb=budget_mb)
    np.testing.assert_allclose(other.encode(pts, BETAS), base, atol=1e-6, rtol=0)
    # a point's embedding does not depend on its batch companions (up to float32 summation order: a
    # single row takes another BLAS kernel, which on some CPUs moves values of ~1 by ~20 ulp)
    np.testing.assert_allclose(other.encode(pts[5:6], BETAS)[:, 0], base[:, 5], atol=5e-6, rtol=0)


def test_block_size_respects_memory_budget(location_encoder, sample_db) -> None:
    enc = RangeEncoder(location_encoder, sample_db, db_chunk=4096, memory_budget_mb=8)
    settings = enc.settings(BETAS)
    block_bytes = 2 * settings.query_chunk * (settings.db_chunk + 1025) * 4
    assert block_bytes <= 8 * 2**20


def test_cpu_blocks_keep_the_score_block_cache_sized(location_encoder, sample_db) -> None:
    from range_dist.retrieval.encoder import BLOCK_SHAPES, query_block_size

    rows, score_bytes = BLOCK_SHAPES["cpu"]
    settings = RangeEncoder(location_encoder, sample_db).settings(BETAS)  # RANGE+, two heads, on CPU
    assert settings.db_chunk == rows
    assert 2 * settings.query_chunk * rows * 4 <= score_bytes
    # one head fills the same score block with twice the queries; a small budget still wins
    assert query_block_size(rows, 1025, 1, 2**40, score_block_bytes=score_bytes) == 2 * settings.query_chunk
    assert query_block_size(rows, 1025, 2, 2**20, score_block_bytes=score_bytes) == 16
    # the GPU's shape is the one it had: 1024 queries of 4096 rows
    gpu_rows, gpu_bytes = BLOCK_SHAPES["cuda"]
    assert query_block_size(gpu_rows, 1025, 2, 2**40, score_block_bytes=gpu_bytes) == 1024


def test_only_needed_heads_are_computed() -> None:
    assert RetrievalSettings.for_variant("range+", (1.0,)).heads == ("sem",)
    assert RetrievalSettings.for_variant("range+", (0.0,)).heads == ("geo",)
    assert RetrievalSettings.for_variant("range+", (0.0, 1.0)).heads == ("sem", "geo")
    assert RetrievalSettings.for_variant("range", (0.3,)).heads == ("sem",)


def test_beta_one_is_semantic_with_its_own_tau(location_encoder, sample_db) -> None:
    pts = random_points(30, seed=2)
    plus = RangeEncoder(location_encoder, sample_db, variant="range+").encode(pts, (1.0,))
    plain = RangeEncoder(location_encoder, sample_db, variant="range").encode(pts, (1.0,))
    assert np.abs(plus - plain).max() > 1e-3  # τ 12 vs 15: not the same product


@pytest.mark.parametrize(
    ("points", "pattern"),
    [
        (np.array([[0.0, 0.0], [np.nan, 1.0]]), r"row 1 has lon=nan.*not finite"),
        (np.array([[0.0, 0.0], [1.0, 2.0], [10.0, 95.0]]), r"row 2 has lon=10.0, lat=95.0.*out of range"),
        (np.array([[181.0, 0.0]]), r"row 0 .*lon in \[-180, 180\]"),
        (np.array([[np.inf, 0.0]]), r"row 0 has lon=inf"),
        (np.zeros((3, 3)), r"shape \(N, 2\)"),
    ],
)
def test_bad_coordinates_name_the_row(location_encoder, sample_db, points, pattern: str) -> None:
    with pytest.raises(CoordinateError, match=pattern):
        RangeEncoder(location_encoder, sample_db).encode(points)


def test_bad_settings_are_refused(location_encoder, sample_db) -> None:
    with pytest.raises(ConfigError, match=r"1.5 is outside \[0, 1\]"):
        RangeEncoder(location_encoder, sample_db).encode(np.zeros((1, 2)), (1.5,))
    with pytest.raises(ConfigError, match=r"variant='rangex': use one of range\+, range"):
        RangeEncoder(location_encoder, sample_db, variant="rangex")
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        RangeEncoder(location_encoder, sample_db, device="cuda:0")
    with pytest.raises(ConfigError, match="device='tpu7': use auto, cpu, cuda or cuda:N"):
        RangeEncoder(location_encoder, sample_db, device="tpu7")


def test_key_dimension_mismatch(location_encoder) -> None:
    rng = np.random.default_rng(0)
    db = RetrievalDatabase(np.zeros((5, 2)), rng.normal(size=(5, 128)), rng.normal(size=(5, 1024)))
    with pytest.raises(DatabaseError, match="keys are 128-d but the location encoder produces 256-d"):
        RangeEncoder(location_encoder, db)


def test_encode_into_a_scattered_block(location_encoder, sample_db) -> None:
    """``out=`` / ``rows=`` write each point's embedding at its row of a larger block (a tile with ocean cells)
    and leave the other rows as they were: the same values as a plain call, in the block's dtype."""
    enc = RangeEncoder(location_encoder, sample_db, "range+")
    pts = random_points(40, seed=5)
    betas = (0.0, 0.5, 1.0)
    plain = enc.encode(pts, betas)
    n = len(pts)
    rows = np.sort(np.random.default_rng(0).choice(100, size=n, replace=False))
    block = np.full((3, 100, enc.output_dim), np.nan, dtype=np.float16)
    assert enc.encode(pts, betas, out=block, rows=rows) is block
    np.testing.assert_array_equal(block[:, rows], plain.astype(np.float16))
    others = np.setdiff1d(np.arange(100), rows)
    assert np.isnan(block[:, others]).all()
    with pytest.raises(ValueError, match=rf"do not fit 3 β × {n} points"):
        enc.encode(pts, betas, out=block, rows=rows[:-1])
    with pytest.raises(ValueError, match=rf"do not fit 3 β × {n} points"):
        enc.encode(pts, betas, out=np.empty((2, n, enc.output_dim), dtype=np.float32))
