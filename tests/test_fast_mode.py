"""The fast retrieval mode: approximations within their measured bound, refusal, provenance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from range_dist import RangeEncoder, RetrievalDatabase, load_satclip_location_encoder
from range_dist.cli.main import main
from range_dist.database.store import RetrievalDatabase as Database
from range_dist.encoders.satclip import SatCLIPLocationEncoder
from range_dist.errors import ConfigError, ToleranceError
from range_dist.executors import embed_grid
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.retrieval.engine import blend_heads
from range_dist.retrieval.fast.approximations import (
    TAPS,
    ErrorSketch,
    fit_value_basis,
    interpolate,
    lattice_node_count,
    lattice_stencils,
    max_row_residual,
    node_lonlat,
)
from range_dist.retrieval.fast.plan import FastPlan, head_budgets, rank_errors, relative_errors
from range_dist.retrieval.fast.retriever import (
    check_points,
    embedding_norms,
    points_in_failing_cells,
    retrieve_averages,
)
from tests.helpers import random_points

BETAS = (0.0, 0.5, 1.0)
TOLERANCE = 1e-3


def _grid(west: float, east: float, south: float, north: float, step: float) -> np.ndarray:
    lon, lat = np.meshgrid(np.arange(west, east, step) + step / 2, np.arange(south, north, step) + step / 2)
    lonlat = np.stack([lon.ravel(), lat.ravel()], axis=1)
    lonlat[:, 0] = (lonlat[:, 0] + 180.0) % 360.0 - 180.0
    return lonlat


POINT_SETS = {
    "antimeridian_tile": _grid(165.0, 195.0, -15.0, 15.0, 0.25),
    "north_polar_cap": _grid(-180.0, 180.0, 80.0, 90.0, 1.0),
    "south_pole_dense": _grid(-30.0, 30.0, -90.0, -80.0, 0.25),
    "random_sparse": random_points(1500, seed=5),
}


def _sphere(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))], axis=1)


def _databases() -> dict[str, Database]:
    rng = np.random.default_rng(7)
    m = 2000
    random_db = Database(_sphere(m, rng), rng.normal(size=(m, 256)), rng.normal(size=(m, 1024)))
    centres = _sphere(6, rng)
    labels = rng.integers(0, 6, m)
    locs = centres[labels] + rng.normal(scale=2.0, size=(m, 2))
    locs[:, 0] = (locs[:, 0] + 180.0) % 360.0 - 180.0
    locs[:, 1] = np.clip(locs[:, 1], -90.0, 90.0)
    clustered = Database(locs, rng.normal(size=(6, 256))[labels] + 0.3 * rng.normal(size=(m, 256)),
                         rng.normal(size=(6, 1024))[labels] + 0.3 * rng.normal(size=(m, 1024)))
    base = _sphere(500, rng)
    duplicated = Database(np.repeat(base, 4, axis=0), np.repeat(rng.normal(size=(500, 256)), 4, axis=0),
                          np.repeat(rng.normal(size=(500, 1024)), 4, axis=0))
    low_rank_values = rng.normal(size=(m, 12)) @ rng.normal(size=(12, 1024)) + 1e-5 * rng.normal(size=(m, 1024))
    low_rank = Database(_sphere(m, rng), rng.normal(size=(m, 256)), low_rank_values)
    return {"random": random_db, "clustered": clustered, "duplicated": duplicated, "low_rank": low_rank}


DATABASES = _databases()


# ---------------------------------------------------------------- pure parts
def test_heads_share_half_the_tolerance_and_the_semantic_head_most_of_it() -> None:
    """The heads' budgets sum to half the tolerance (three quarters without a PCA basis, which then errs
    by nothing): with the basis's quarter, a bound on the blended error at every β."""
    assert head_budgets(["sem", "geo"]) == pytest.approx({"sem": 0.45, "geo": 0.05})
    assert head_budgets(["sem"]) == {"sem": 0.5} and head_budgets(["geo"]) == {"geo": 0.5}
    assert head_budgets(["sem", "geo"], with_basis=False) == pytest.approx({"sem": 0.675, "geo": 0.075})
    assert head_budgets(["geo"], with_basis=False) == {"geo": 0.75}
    basis = fit_value_basis(np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)).truncated(4)
    plan = FastPlan(1e-3, basis, spacing={"sem": 0.75, "geo": 3.0})
    assert plan.head_budget("sem") + plan.head_budget("geo") == pytest.approx(0.5e-3)
    assert plan.describe()["interpolated_heads"]["geo"]["error_budget"] == pytest.approx(0.05e-3)
    assert FastPlan(1e-3, basis, spacing={"geo": 3.0}).head_budget("geo") == pytest.approx(0.5e-3)
    lattices_only = FastPlan(1e-3, None, spacing={"sem": 0.75, "geo": 3.0})
    assert lattices_only.head_budget("sem") + lattices_only.head_budget("geo") == pytest.approx(0.75e-3)
    assert FastPlan(1e-3, None, spacing={"geo": 3.0}).head_budget("geo") == pytest.approx(0.75e-3)


def test_stencil_weights_sum_to_one_and_nodes_continue_through_the_poles() -> None:
    pts = np.array([[179.9, 89.9], [-180.0, -90.0], [0.1, 0.1], [180.0, 45.0]])
    st = lattice_stencils(pts, 2.0)
    np.testing.assert_allclose(st.weights.sum(axis=1), 1.0, atol=1e-6)
    assert (st.nodes[:, 1] <= 90.0).all() and (st.nodes[:, 1] >= -90.0).all()
    assert (st.nodes[:, 0] >= -180.0).all() and (st.nodes[:, 0] < 180.0).all()
    # row 91 of a 2° lattice is lat 92°, column 10 lon -160°: the point at lat 88° on the opposite meridian
    np.testing.assert_allclose(node_lonlat(np.array([91, -1]), np.array([10, 10]), 2.0), [[20.0, 88.0], [20.0, -88.0]])


def test_queries_on_lattice_lines_use_only_that_lines_nodes() -> None:
    # 4 x 4 cells of a 1° lattice: their 0.25° grid points and check points (edge midpoints lie on lattice lines)
    g = np.arange(10.125, 14.0, 0.25)
    lon, lat = np.meshgrid(g, g + 20.0)
    points = np.stack([lon.ravel(), lat.ravel()], axis=1)
    queries = np.concatenate([points, check_points(points, 1.0)])
    st = lattice_stencils(queries, 1.0)
    assert len(np.unique(st.index[st.weights != 0])) == len(st.nodes) == lattice_node_count(queries, 1.0)
    # the points' stencils span columns (rows) 10-2 .. 13+3: 9 x 9 nodes; the midpoints of the right and top
    # edges (columns 14, rows 34) add no column or row beyond, as their weights there are zero
    assert len(st.nodes) == 9 * 9
    on_line = st.weights[len(points):]
    # every check point but the 16 cells' centres is an edge midpoint, weighing one line's TAPS nodes
    assert ((on_line != 0).sum(axis=1) == TAPS).sum() == len(on_line) - 16

    def polynomial(lonlat: np.ndarray) -> torch.Tensor:  # degree 5 per axis: reproduced by 6-tap Lagrange
        x, y = lonlat[:, 0] - 12.0, lonlat[:, 1] - 32.0
        return torch.from_numpy(0.01 * x**5 - 0.1 * x**2 * y**3 + 0.05 * y**4 + 1.0)

    np.testing.assert_allclose(interpolate(polynomial(st.nodes), st), polynomial(queries), rtol=1e-5, atol=1e-5)


def test_interpolation_error_shrinks_with_the_order_of_the_spacing() -> None:
    rng = np.random.default_rng(0)
    pts = np.concatenate([random_points(400, seed=1), [[180.0, 89.99], [-179.99, -89.9], [0.0, 90.0]]])
    directions = rng.normal(size=(3, 8))

    def field(lonlat: np.ndarray) -> torch.Tensor:  # smooth on the sphere (through poles and antimeridian)
        lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
        xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
        return torch.from_numpy(np.sin(2.0 * xyz @ directions))

    errors = []
    for spacing in (8.0, 4.0, 2.0):
        st = lattice_stencils(pts, spacing)
        errors.append(float((interpolate(field(st.nodes), st) - field(pts)).abs().max()))
    # error ∝ h^TAPS = h^6 asymptotically: halving the spacing divides it by ~64
    assert errors[0] < 1e-2 and errors[0] / errors[1] > 25 and errors[1] / errors[2] > 25, errors


def test_rank_errors_equal_the_direct_truncation_error() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(size=(300, 64)) @ np.diag(np.linspace(2, 0.01, 64)).astype(np.float32)
    basis = fit_value_basis(values)
    weights = torch.softmax(torch.from_numpy(rng.normal(size=(2, 5, 300)) * 3), dim=-1)  # (H, n, M)
    averages = weights @ torch.from_numpy(values).double()  # (H, n, D)
    head_w = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    norms = torch.ones(3, 5, dtype=torch.float64)
    coefficients = (averages - torch.from_numpy(basis.mean).double()) @ torch.from_numpy(basis.components).double()
    errors = rank_errors(coefficients, head_w, norms)
    rank = 10
    truncated = basis.truncated(rank)
    approx = truncated.reconstruct(((averages - torch.from_numpy(basis.mean).double()) @ torch.from_numpy(
        truncated.components).double()).float()).double()
    blended_exact = torch.einsum("hb,hnd->bnd", torch.from_numpy(head_w), averages)
    blended_approx = torch.einsum("hb,hnd->bnd", torch.from_numpy(head_w), approx)
    direct = (blended_exact - blended_approx).norm(dim=-1).max()
    assert float(errors[rank]) == pytest.approx(float(direct), rel=1e-4)
    assert float(errors[64]) == 0.0
    assert max_row_residual(values, truncated) >= float(errors[rank])  # the worst-case bound holds


@pytest.mark.parametrize("with_basis", [False, True])
@pytest.mark.parametrize(("variant", "heads"), [("range+", ("sem", "geo")), ("range", ("sem",))])
def test_embedding_norms_without_forming_the_embeddings(with_basis: bool, variant: str, heads: tuple) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(200, 32)).astype(np.float32) + 2.0
    basis = fit_value_basis(values).truncated(12) if with_basis else None
    width = 12 if with_basis else 32
    averages = {h: torch.from_numpy(rng.normal(size=(7, width)).astype(np.float32)) for h in heads}
    q_hat = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(7, 5)).astype(np.float32)), dim=1)
    betas = (0.0, 0.3, 1.0)
    reconstruct = None if basis is None else basis.reconstruct
    expected = blend_heads(averages, q_hat, betas, variant, reconstruct).double().norm(dim=-1)
    torch.testing.assert_close(embedding_norms(averages, q_hat, betas, variant, basis), expected, rtol=1e-5,
                               atol=1e-5)


def test_error_sketch_estimates_norms_within_a_factor_of_two() -> None:
    sketch = ErrorSketch.for_width(1024)
    assert sketch is not None and ErrorSketch.for_width(256) is None  # too narrow to pay: full values
    rng = np.random.default_rng(3)
    vectors = np.concatenate([
        rng.normal(size=(2000, 1024)),  # dense
        np.eye(1024)[:500] * rng.uniform(0.1, 10.0, size=(500, 1)),  # one coordinate each
        rng.normal(size=(200, 1024)) * (rng.uniform(size=(200, 1024)) < 0.01),  # sparse
        np.ones((1, 1024)),
    ]).astype(np.float32)
    x = torch.from_numpy(vectors)
    ratio = sketch.project(x).double().norm(dim=1) / x.double().norm(dim=1)
    assert float(ratio.min()) > 0.5 and float(ratio.max()) < 2.0
    assert abs(float(ratio.square().mean()) - 1.0) < 0.02  # unbiased in the square


# ---------------------------------------------------------------- fast vs exact
def test_sketched_checks_decide_as_full_checks(location_encoder: SatCLIPLocationEncoder) -> None:
    """The per-call check on the error sketch passes and fails exactly where a check in full does."""
    db, points = DATABASES["random"], POINT_SETS["antimeridian_tile"]
    fast = RangeEncoder(location_encoder, db, mode="fast", tolerance=TOLERANCE)
    plan = fast.plan_fast(points, BETAS)
    # the count rule, not the measured costs, decides whether each lattice below pays: with timings a
    # fast machine priced the 0.5° lattice above the points computed directly, one run in three
    fast.use_plan(replace(plan, costs={}), BETAS)
    retriever = fast.fast
    assert retriever is not None and retriever.sketch is not None
    settings = fast.settings(BETAS)
    q_hat, xyz = fast.query_features(points)
    # the sketch of a softmax average is the softmax average of the sketched rows
    (sketched,) = retrieve_averages(retriever.sketch_db, ("sem",), q_hat[:64], xyz[:64], settings)
    (full,) = retrieve_averages(retriever.db, ("sem",), q_hat[:64], xyz[:64], settings)
    torch.testing.assert_close(sketched, retriever.sketched(full), rtol=1e-4, atol=1e-5)
    weights = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    norms = torch.ones(3, dtype=torch.float64)
    decided = set()
    for spacing in (15.0, 6.0, 2.0, 0.5):
        lattice = retriever._checked_lattice("geo", spacing, points, settings)
        assert lattice is not None
        check_lonlat, approx = lattice[1]
        q, x = fast.query_features(check_lonlat)
        (exact,) = retrieve_averages(retriever.db, ("geo",), q, x, settings)
        full_error = float((approx - exact).double().norm(dim=1).max())
        for budget in (full_error / 3, full_error / 1.1, full_error * 1.1, full_error * 3):
            before = retriever.stats.rechecked_points
            error = retriever._check("geo", lattice[1], settings, weights, norms, budget)
            assert (error <= budget) == (full_error <= budget), (spacing, budget, error, full_error)
            assert full_error / 2 <= error <= full_error * 2
            decided.add("in full" if retriever.stats.rechecked_points > before else "on the sketch")
    assert decided == {"in full", "on the sketch"}


def test_a_clearly_failing_check_point_leaves_the_others_to_their_full_error(
        location_encoder: SatCLIPLocationEncoder) -> None:
    """Each check point fails on its own error: one far above the budget does not fail the points whose
    sketched error was merely close to it (those are evaluated in full, and pass when within it)."""
    db, points = DATABASES["random"], POINT_SETS["antimeridian_tile"]
    fast = RangeEncoder(location_encoder, db, mode="fast", tolerance=TOLERANCE)
    fast.use_plan(replace(fast.plan_fast(points, BETAS), costs={}), BETAS)
    retriever = fast.fast
    assert retriever is not None and retriever.sketch is not None
    settings = fast.settings(BETAS)
    check_lonlat = points[:4]
    q, x = fast.query_features(check_lonlat)
    (exact,) = retrieve_averages(retriever.db, ("sem",), q, x, settings)
    budget = 1e-3
    # errors of 0.8, 3, 0.9 and 1.2 budgets in full: the sketch puts 0.8, 0.9 and 1.2 between budget / 2 and
    # 2 budgets (undecided), 3 above (clearly failing)
    scales = torch.tensor([0.8, 3.0, 0.9, 1.2], dtype=exact.dtype)[:, None] * budget
    offset = torch.nn.functional.normalize(torch.randn(exact.shape, generator=torch.Generator().manual_seed(0)), dim=1)
    approx = exact + scales * offset
    weights, norms = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    before = retriever.stats.rechecked_points
    errors, failing = retriever._check_errors("sem", (check_lonlat, approx), settings, weights, norms, budget)
    assert failing.tolist() == [False, True, False, True]
    assert retriever.stats.rechecked_points - before == 3
    torch.testing.assert_close(errors[[0, 2, 3]].float(), scales[[0, 2, 3], 0], rtol=1e-3, atol=0.0)


@pytest.mark.parametrize("db_name", sorted(DATABASES))
@pytest.mark.parametrize("points_name", sorted(POINT_SETS))
def test_fast_mode_within_tolerance_of_exact(location_encoder: SatCLIPLocationEncoder, db_name: str,
                                             points_name: str) -> None:
    db, points = DATABASES[db_name], POINT_SETS[points_name]
    exact = RangeEncoder(location_encoder, db).encode(points, BETAS)
    fast = RangeEncoder(location_encoder, db, mode="fast", tolerance=TOLERANCE)
    plan = fast.plan_fast(points, BETAS)
    assert plan.measured_error <= TOLERANCE and plan.validation_points > 0
    got = fast.encode(points, BETAS)
    # every point of the set, not only the validation sample
    errors = relative_errors(torch.from_numpy(got), torch.from_numpy(exact))
    assert float(errors.max()) <= TOLERANCE, (plan.describe(), float(errors.max()))
    if db_name == "low_rank":
        assert plan.value_rank is not None and plan.value_rank <= 16
        assert plan.pca_worst_case is not None and plan.pca_worst_case < TOLERANCE


def test_a_failing_cell_check_refines_the_lattice(location_encoder: SatCLIPLocationEncoder) -> None:
    """A plan with a lattice far too coarse for this call is caught by the per-call check, not trusted."""
    db, points = DATABASES["clustered"], POINT_SETS["antimeridian_tile"]
    fast = RangeEncoder(location_encoder, db, mode="fast", tolerance=TOLERANCE)
    plan = fast.plan_fast(points, BETAS)
    fast.use_plan(replace(plan, spacing={"geo": 15.0}), BETAS)  # as if the sample had missed the hard places
    got = fast.encode(points, BETAS)
    exact = RangeEncoder(location_encoder, db).encode(points, BETAS)
    assert fast.fast is not None and fast.fast.stats.refinements >= 1
    assert float(relative_errors(torch.from_numpy(got), torch.from_numpy(exact)).max()) <= TOLERANCE
    # the next call (a neighbouring tile) starts at the spacing that passed: no lattice is tried twice
    refinements = fast.fast.stats.refinements
    again = fast.encode(points, BETAS)
    assert fast.fast.stats.refinements == refinements
    assert float(relative_errors(torch.from_numpy(again), torch.from_numpy(exact)).max()) <= TOLERANCE


def test_failing_cells_are_computed_directly_when_few_and_the_call_refined_when_many(
        location_encoder: SatCLIPLocationEncoder) -> None:
    """A check failing in a few cells computes their points directly; failing in many, the call is refined.

    Spacings and costs are fixed here (the count rule, no timings) so the decisions do not depend on how
    fast this machine is: at 3° the semantic head fails in too many cells (refined once), at 4° the
    spatial head, on its tenth of the heads' error budget, in a few cells: 432 points of 14,400 (computed
    directly, the lattice kept).
    """
    db, points = DATABASES["clustered"], POINT_SETS["antimeridian_tile"]
    fast = RangeEncoder(location_encoder, db, mode="fast", tolerance=TOLERANCE)
    plan = fast.plan_fast(points, BETAS)
    fast.use_plan(replace(plan, spacing={"sem": 3.0, "geo": 4.0}, costs={}), BETAS)
    got = fast.encode(points, BETAS)
    exact = RangeEncoder(location_encoder, db).encode(points, BETAS)
    assert fast.fast is not None
    stats = fast.fast.stats
    assert stats.refinements == 1 and stats.direct_heads == 0, stats  # the semantic head, once
    assert 0 < stats.local_points < len(points) // 10, stats  # the spatial head's few cells
    assert float(relative_errors(torch.from_numpy(got), torch.from_numpy(exact)).max()) <= TOLERANCE
    assert "points of failing cells computed directly" in stats.summary()


def test_failing_check_points_mark_their_own_cells() -> None:
    """A centre marks its cell, an edge midpoint the two cells sharing the edge, across the antimeridian too."""
    spacing = 2.0
    points = np.array([[1.0, 1.0], [3.0, 1.0], [-1.0, 1.0], [1.0, 3.0], [179.0, 1.0], [-179.0, 1.0], [1.0, -1.0]])
    checks = np.array([[1.0, 1.0],  # the centre of cell (0°..2°, 0°..2°)
                       [-180.0, 1.0]])  # the antimeridian edge between 178°..180° and -180°..-178°
    first = points_in_failing_cells(points, checks, np.array([True, False]), spacing)
    np.testing.assert_array_equal(first, [True, False, False, False, False, False, False])
    second = points_in_failing_cells(points, checks, np.array([False, True]), spacing)
    np.testing.assert_array_equal(second, [False, False, False, False, True, True, False])
    edge = points_in_failing_cells(points, np.array([[2.0, 1.0]]), np.array([True]), spacing)  # x edge at 2°
    np.testing.assert_array_equal(edge, [True, True, False, False, False, False, False])


def test_fast_mode_interpolates_dense_calls_and_computes_sparse_ones(location_encoder: SatCLIPLocationEncoder,
                                                                      ) -> None:
    db = DATABASES["random"]
    fast = RangeEncoder(location_encoder, db, mode="fast", tolerance=TOLERANCE)
    plan = fast.plan_fast(POINT_SETS["antimeridian_tile"], BETAS)
    assert "geo" in plan.spacing  # the spatial head is smooth: always interpolated at 1e-3
    sparse = random_points(50, seed=9)  # stencils of sparse points need more nodes than points: direct
    exact = RangeEncoder(location_encoder, db).encode(sparse, BETAS)
    assert plan.value_rank is None  # random values: no useful low-rank basis, so direct = exact
    np.testing.assert_allclose(fast.encode(sparse, BETAS), exact, atol=1e-5)


def test_range_variant_and_single_head_betas(location_encoder: SatCLIPLocationEncoder) -> None:
    db, points = DATABASES["clustered"], POINT_SETS["antimeridian_tile"]
    for variant, betas in (("range", (0.5,)), ("range+", (0.0,)), ("range+", (1.0,))):
        exact = RangeEncoder(location_encoder, db, variant=variant).encode(points, betas)
        fast = RangeEncoder(location_encoder, db, variant=variant, mode="fast", tolerance=TOLERANCE)
        got = fast.encode(points, betas)  # plans on the call's own points
        assert fast.fast is not None and fast.fast.plan.measured_error <= TOLERANCE
        assert float(relative_errors(torch.from_numpy(got), torch.from_numpy(exact)).max()) <= TOLERANCE


# ---------------------------------------------------------------- refusal and bad input
def test_unreachable_tolerance_is_refused_with_the_fix(location_encoder: SatCLIPLocationEncoder) -> None:
    fast = RangeEncoder(location_encoder, DATABASES["random"], mode="fast", tolerance=1e-12)
    with pytest.raises(ToleranceError, match=r"tolerance 1e-12.*--mode exact, or a larger --tolerance"):
        fast.encode(POINT_SETS["antimeridian_tile"][:2000], BETAS)
    assert fast.fast is None  # nothing half-configured


def test_bad_mode_and_tolerance_messages(location_encoder: SatCLIPLocationEncoder) -> None:
    db = DATABASES["random"]
    with pytest.raises(ConfigError, match="needs a tolerance"):
        RangeEncoder(location_encoder, db, mode="fast")
    with pytest.raises(ConfigError, match="mode='quick': use one of exact, fast"):
        RangeEncoder(location_encoder, db, mode="quick")
    with pytest.raises(ConfigError, match=r"mode=fast needs a tolerance in \(0, 1\), got 2.0"):
        RangeEncoder(location_encoder, db, mode="fast", tolerance=2.0).encode(random_points(10), BETAS)
    with pytest.raises(ConfigError, match="mode=fast with db_shards=2"):
        GridJobConfig(mode="fast", tolerance=1e-3, db_shards=2)
    with pytest.raises(ConfigError, match="mode=fast needs a tolerance"):
        GridJobConfig(mode="fast")


# ---------------------------------------------------------------- the grid job and the CLI
def test_grid_job_fast_mode_writes_provenance_and_stays_within_tolerance(
    tmp_path: Path, sample_assets: tuple[Path, Path]
) -> None:
    ckpt, db = sample_assets
    exact_cfg = GridJobConfig(resolution=0.5, bbox=(150.0, 50.0, 180.0, 80.0), betas=BETAS, satclip=ckpt, db=db,
                              out=tmp_path / "exact.zarr", tile_size=40, chunk_size=20, executor="local",
                              dtype="float32")
    fast_cfg = replace(exact_cfg, out=tmp_path / "fast.zarr", mode="fast", tolerance=TOLERANCE)
    embed_grid(exact_cfg, executor="local")
    embed_grid(fast_cfg, executor="local")
    exact = xr.open_zarr(exact_cfg.out)
    fast = xr.open_zarr(fast_cfg.out)
    assert exact.attrs["range_dist:retrieval_mode"] == "exact" and "range_dist:fast" not in exact.attrs
    provenance = fast.attrs["range_dist:fast"]
    assert fast.attrs["range_dist:retrieval_mode"] == "fast"
    a = torch.from_numpy(fast["embedding"].values)
    b = torch.from_numpy(exact["embedding"].values)
    assert float(relative_errors(a, b).max()) <= TOLERANCE
    if provenance["mode"] == "exact":  # the cost model judged this small run: exact, and why
        assert provenance["requested_mode"] == "fast" and provenance["reason"]
        assert fast.attrs["range_dist:run_report"]["fast_checks"] is None
        return
    assert provenance["tolerance"] == TOLERANCE and provenance["interpolated_heads"]
    if provenance["value_rank"] is None:  # lattices only: no sample check, every tile checks its cells instead
        assert provenance["measured_error"] is None and provenance["validation_points"] == 0
        assert provenance["checked"] == "every call's lattice cells"
    else:
        assert 0 < provenance["measured_error"] <= TOLERANCE and provenance["validation_points"] == 256
    checks = fast.attrs["range_dist:run_report"]["fast_checks"]  # every tile's cell-centre checks
    assert checks["interpolated_heads"] >= 1 and checks["checked_points"] > 0
    # relative, as the tolerance; each head within its part of half the tolerance (three quarters without a
    # PCA basis), as the provenance says
    budgets = {head: spec["error_budget"] for head, spec in provenance["interpolated_heads"].items()}
    heads_share = 0.5 if provenance["value_rank"] is not None else 0.75
    assert sum(budgets.values()) == pytest.approx(heads_share * TOLERANCE)
    assert 0 < checks["max_checked_error"] <= max(budgets.values())
    assert exact.attrs["range_dist:run_report"]["fast_checks"] is None
    a = torch.from_numpy(fast["embedding"].values)
    b = torch.from_numpy(exact["embedding"].values)
    assert float(relative_errors(a, b).max()) <= TOLERANCE
    # a fast store is not resumed as an exact one (and vice versa)
    from range_dist.errors import StoreMismatchError

    with pytest.raises(StoreMismatchError):
        embed_grid(replace(exact_cfg, out=fast_cfg.out), executor="local")


def test_embed_points_cli_fast_mode(tmp_path: Path, sample_assets: tuple[Path, Path], capsys) -> None:
    ckpt, npz = sample_assets
    points = tmp_path / "pts.csv"
    grid = _grid(0.0, 20.0, 40.0, 60.0, 0.25)
    points.write_text("lon,lat\n" + "\n".join(f"{lon},{lat}" for lon, lat in grid))
    out = tmp_path / "fast.npz"
    assert main(["embed-points", "--satclip", str(ckpt), "--db", str(npz), "--betas", "0,0.5,1", "--points",
                 str(points), "--out", str(out), "--mode", "fast", "--tolerance", "1e-3"]) == 0
    printed = capsys.readouterr().out
    assert "fast mode: measured error" in printed and "fast mode checks:" in printed
    exact = RangeEncoder(load_satclip_location_encoder(ckpt), RetrievalDatabase.open(npz)).encode(grid, BETAS)
    with np.load(out) as res:
        assert float(relative_errors(torch.from_numpy(res["embedding"]), torch.from_numpy(exact)).max()) <= 1e-3
    assert main(["embed-points", "--satclip", str(ckpt), "--db", str(npz), "--points", str(points), "--out",
                 str(tmp_path / "x.npz"), "--mode", "fast"]) == 2
    assert "needs a tolerance" in capsys.readouterr().err
