"""The fast mode's cost model (falls back to exact, and says why), its plan saved for a resume, and
the database values held once per process."""

from __future__ import annotations

import io
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from range_dist import RangeEncoder
from range_dist.database.store import RetrievalDatabase
from range_dist.encoders.satclip import SatCLIPLocationEncoder
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.jobs.grid.run import fast_plan_path
from range_dist.retrieval.fast.approximations import fit_value_basis
from range_dist.retrieval.fast.plan import FastPlan, Workload, load_plan, save_plan
from range_dist.retrieval.fast.planner import PLAN_BUDGET_SHARE, plan_fast

BETAS = (0.0, 0.5, 1.0)


def _tile(west: float, south: float, step: float, side: int) -> np.ndarray:
    lon, lat = np.meshgrid(west + (np.arange(side) + 0.5) * step, south + (np.arange(side) + 0.5) * step)
    return np.stack([lon.ravel(), lat.ravel()], axis=1)


# ---------------------------------------------------------------- values held once
def test_database_values_are_a_view_of_the_engine_buffer(location_encoder: SatCLIPLocationEncoder,
                                                         random_db: RetrievalDatabase) -> None:
    db = RetrievalDatabase(random_db.locations, random_db.keys, np.array(random_db.values))
    aug = db.values_with_ones
    assert aug.shape == (db.rows, db.value_dim + 1) and (aug[:, -1] == 1.0).all()
    assert np.shares_memory(db.values, aug) and db.values_with_ones is aug  # no copy on each access
    encoder = RangeEncoder(location_encoder, db)
    assert encoder.db.values_aug.data_ptr() == aug.ctypes.data  # the engine reads the same rows
    # same content as a contiguous copy: the fingerprint (resume signature) does not change
    contiguous = RetrievalDatabase(db.locations, db.keys, np.ascontiguousarray(db.values))
    assert contiguous.fingerprint() == db.fingerprint()
    np.testing.assert_array_equal(db.select(slice(3, 9)).values, db.values[3:9])


def test_pickled_database_carries_one_buffer(random_db: RetrievalDatabase) -> None:
    """Ray's object store pickles the payload's database: one (M, D + 1) buffer, the view rebuilt."""
    payload = pickle.dumps(random_db, protocol=5)
    assert len(payload) < random_db.values.nbytes * 1.1 + random_db.keys.nbytes + random_db.locations.nbytes + 2**16
    back = pickle.loads(payload)
    assert np.shares_memory(back.values, back.values_with_ones)
    np.testing.assert_array_equal(back.values, random_db.values)


def test_encoders_over_an_opened_database_share_its_rows_sketches_and_coefficients(
        tmp_path: Path, location_encoder: SatCLIPLocationEncoder, random_db: RetrievalDatabase) -> None:
    """A grid run's planner and its tiles (one process) make the engine's rows, the error sketch and a
    plan's PCA coefficients once; a database built in memory (arrays that may change) gets new ones."""
    random_db.to_npz(tmp_path / "db.npz")
    opened = RetrievalDatabase.open(tmp_path / "db.npz")
    first, second = RangeEncoder(location_encoder, opened), RangeEncoder(location_encoder, opened)
    assert first.db is second.db
    for basis in (None, fit_value_basis(opened.values).truncated(300)):  # a basis wide enough for a sketch
        plan = FastPlan(1e-3, basis, {"geo": 5.0})
        first.use_plan(plan, BETAS)
        second.use_plan(plan, BETAS)
        assert first.fast is not None and second.fast is not None
        assert first.fast.db is second.fast.db and first.fast.sketch_db is second.fast.sketch_db
        assert first.fast.sketch_db is not first.fast.db  # 1024 and 300 columns are sketched
        sketch = first.fast.sketch
        assert sketch is not None
        rows = first.fast.db.values_aug[:, :-1].double().numpy()
        np.testing.assert_allclose(first.fast.sketch_db.values_aug[:, :-1].double().numpy(),
                                   rows @ sketch.matrix.astype(np.float64), rtol=1e-4, atol=1e-3)
        if basis is not None:  # the coefficients of this basis, not of another one kept before
            expected = (opened.values.astype(np.float64) - basis.mean) @ basis.components.astype(np.float64)
            np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-3)
    opened.drop_kept()  # a Ray driver: the workers make their own
    assert RangeEncoder(location_encoder, opened).db is not first.db
    in_memory = RetrievalDatabase(random_db.locations, random_db.keys, np.array(random_db.values))
    assert RangeEncoder(location_encoder, in_memory).db is not RangeEncoder(location_encoder, in_memory).db
    back = pickle.loads(pickle.dumps(opened))  # Ray's object store: nothing kept travels
    assert "_kept" not in back.__dict__ and "_fingerprint" not in back.__dict__
    assert back.fingerprint() == opened.fingerprint()


# ---------------------------------------------------------------- saved plans
def test_a_saved_plan_loads_only_for_its_key(tmp_path: Path, random_db: RetrievalDatabase) -> None:
    basis = fit_value_basis(random_db.values).truncated(8)
    plan = FastPlan(1e-3, basis, {"geo": 5.0}, measured_error=2e-4, component_errors={"pca": 1e-4},
                    validation_points=256, pca_worst_case=0.5, planning_seconds=1.5,
                    estimate={"exact": 10.0, "fast": 2.0}, costs={"features": 1e-4})
    path = tmp_path / "cube.zarr.fastplan.npz"
    save_plan(plan, path, "key-1")
    back = load_plan(path, "key-1")
    assert back is not None and back.basis is not None
    np.testing.assert_array_equal(back.basis.components, basis.components)
    assert replace(back, basis=None) == replace(plan, basis=None)
    assert load_plan(path, "key-2") is None and load_plan(tmp_path / "absent.npz", "key-1") is None
    fallback = replace(plan, basis=None, fallback="too small")
    save_plan(fallback, path, "key-3")
    assert load_plan(path, "key-3") == fallback


# ---------------------------------------------------------------- the cost model
def test_a_run_too_small_to_pay_for_planning_falls_back_and_says_why(
        location_encoder: SatCLIPLocationEncoder, random_db: RetrievalDatabase) -> None:
    encoder = RangeEncoder(location_encoder, random_db)
    points = _tile(10.0, 40.0, 0.25, 12)
    plan = plan_fast(encoder.retrieval_context(), points, BETAS, 1e-3, workload=Workload(len(points), points))
    assert plan.fallback is not None and "too small for the fast mode to pay" in plan.fallback
    assert plan.describe()["mode"] == "exact" and plan.describe()["reason"] == plan.fallback
    assert plan.estimate["planning"] > PLAN_BUDGET_SHARE * plan.estimate["gain"]
    assert 0 < plan.estimate["gain"] < plan.estimate["exact"]


def test_a_large_dense_run_is_planned_with_its_estimate(location_encoder: SatCLIPLocationEncoder,
                                                        random_db: RetrievalDatabase) -> None:
    encoder = RangeEncoder(location_encoder, random_db)
    tile = _tile(10.0, 40.0, 0.05, 128)  # one dense call; the run is a thousand of them
    plan = plan_fast(encoder.retrieval_context(), tile, BETAS, 1e-3, workload=Workload(1000 * len(tile), tile))
    assert plan.fallback is None, plan.fallback
    assert plan.estimate["fast"] < plan.estimate["exact"] and plan.spacing
    assert {"features", "features_call", "exact", "interpolation", "head:sem", "head:geo"} <= set(plan.costs)


def test_only_spacings_that_could_pay_for_the_calls_are_probed() -> None:
    from range_dist.retrieval.fast.plan import SPACING_LADDER
    from range_dist.retrieval.fast.planner import paying_spacings

    dense = _tile(10.0, 0.0, 0.1, 128)  # a 0.1° tile: lattices down to a fraction of a degree pay
    coarse = _tile(0.0, 40.0, 1.0, 6)  # 36 cells of 1°: no lattice of the ladder pays (one stencil is 36 nodes)
    sem = paying_spacings(Workload(len(dense), dense), SPACING_LADDER["sem"])
    assert sem == SPACING_LADDER["sem"][: len(sem)] and 0.25 <= sem[-1] <= 1.0
    few = Workload(len(coarse), coarse)
    assert paying_spacings(few, SPACING_LADDER["sem"]) == () and paying_spacings(few, SPACING_LADDER["geo"]) == ()


def test_the_cell_bounds_refuse_only_spacings_the_full_counts_refuse() -> None:
    """``paying_spacings`` refuses fine spacings from the cells' corners and centres (lower bounds of the
    nodes and check points): the same prefix as the full counts give, on tiles, scattered points, the
    antimeridian and the poles."""
    from range_dist.retrieval.fast.approximations import lattice_count_bounds
    from range_dist.retrieval.fast.plan import SPACING_LADDER
    from range_dist.retrieval.fast.planner import LATTICE_COST_RATIO, lattice_counts, paying_spacings

    rng = np.random.default_rng(3)
    calls = [_tile(10.0, 0.0, 0.1, 64), _tile(170.0, -30.0, 0.25, 64), _tile(-180.0, -90.0, 2.0, 90),
             np.stack([rng.uniform(-180, 180, 3000), rng.uniform(-90, 90, 3000)], axis=1),
             np.array([[180.0, 90.0], [-180.0, -90.0], [180.0, 0.0], [-180.0, 0.0], [179.99, 89.99]])]
    calls[1][:, 0] = (calls[1][:, 0] + 180.0) % 360.0 - 180.0  # across the antimeridian
    for call in calls:
        counted = Workload(len(call), call)
        for ladder in SPACING_LADDER.values():
            for spacing in (*ladder[::3], ladder[-1]):
                bounds, counts = lattice_count_bounds(call, spacing), lattice_counts(counted, spacing)
                assert bounds[0] <= counts[0] and bounds[1] <= counts[1], (len(call), spacing, bounds, counts)
            for weight in (1.0, 0.3):
                expected: list[float] = []  # the ladder's prefix that pays, by the full counts
                for spacing in ladder:
                    nodes, checks = lattice_counts(counted, spacing)
                    if nodes + weight * checks >= LATTICE_COST_RATIO * len(call):
                        break
                    expected.append(spacing)
                # a fresh workload: no counts cached, so the bounds are used
                assert paying_spacings(Workload(len(call), call), ladder, weight) == tuple(expected)


def test_a_grid_too_coarse_for_any_lattice_still_tries_the_pca_basis(
        location_encoder: SatCLIPLocationEncoder) -> None:
    """No lattice pays for 1° cells in 8-cell tiles, but a low-rank database's PCA basis does."""
    rng = np.random.default_rng(7)
    m = 2000
    locs = np.stack([rng.uniform(-180, 180, m), np.degrees(np.arcsin(rng.uniform(-1, 1, m)))], axis=1)
    values = rng.normal(size=(m, 12)) @ rng.normal(size=(12, 1024)) + 1e-5 * rng.normal(size=(m, 1024))
    encoder = RangeEncoder(location_encoder, RetrievalDatabase(locs, rng.normal(size=(m, 256)), values))
    call = _tile(0.0, 40.0, 1.0, 8)
    plan = plan_fast(encoder.retrieval_context(), call, BETAS, 1e-3, workload=Workload(10_000 * len(call), call))
    assert plan.spacing == {} and plan.value_rank is not None, (plan.fallback, plan.describe())


# ---------------------------------------------------------------- the grid job
def test_grid_job_falls_back_saves_the_decision_and_a_resume_reuses_it(
        tmp_path: Path, sample_assets: tuple[Path, Path]) -> None:
    ckpt, db = sample_assets
    exact_cfg = GridJobConfig(resolution=1.0, bbox=(0.0, 40.0, 8.0, 48.0), betas=BETAS, satclip=ckpt, db=db,
                              out=tmp_path / "exact.zarr", tile_size=8, chunk_size=8, executor="local",
                              dtype="float32")
    fast_cfg = replace(exact_cfg, out=tmp_path / "fast.zarr", mode="fast", tolerance=1e-3)
    embed_grid(exact_cfg)
    log = io.StringIO()
    report = embed_grid(fast_cfg, log=log)
    printed = log.getvalue()
    assert "fast mode -> exact: the run is too small for the fast mode to pay" in printed
    assert "fast mode fell back to exact:" in printed  # in the run report too
    assert report.fast_plan is not None and report.fast_plan["mode"] == "exact"
    cube = xr.open_zarr(fast_cfg.out)
    decided = cube.attrs["range_dist:fast"]
    assert decided["mode"] == "exact" and decided["requested_mode"] == "fast" and decided["reason"]
    np.testing.assert_array_equal(cube["embedding"].values, xr.open_zarr(exact_cfg.out)["embedding"].values)
    assert fast_plan_path(fast_cfg.out).exists()
    # the same settings again (a resume): the saved decision is reused, nothing is planned
    log = io.StringIO()
    embed_grid(fast_cfg, log=log)
    assert "reusing the plan saved by an earlier run of these settings" in log.getvalue()
    assert "fast mode -> exact" not in log.getvalue()
