"""Planning the ``fast`` retrieval mode: choose the approximations and validate them.

:func:`plan_fast` measures each approximation of :mod:`range_dist.retrieval.fast.approximations` against the exact
mode on the run's own points and keeps the cheapest that fit the tolerance:

1. The values' PCA rank: the truncation error of every rank comes out of one exact pass on the
   selection sample (the basis is orthonormal, so the error is the norm of the dropped
   coefficients of the weighted averages). The smallest rank within :data:`PCA_SHARE` of the tolerance.
   With a cost model the gate's points (:data:`GATE_POINTS`) are tried first: where no rank fits
   them, none fits the sample, and the rest of it is not computed.
   The basis is fitted on at most :data:`BASIS_FIT_ROWS` rows: its errors are measured, not assumed.
2. Per head, the coarsest lattice spacing whose interpolation error is within the head's part of
   :data:`HEADS_SHARE` of the tolerance (``head_budgets``: the semantic head, probed first, gets
   most of it) with a margin (:data:`PROBE_MARGIN`) for the cells the probes did not see (with a
   cost model, a spacing within the budget but not the margin is taken when it still costs less:
   ``fits`` in :func:`plan_fast`), measured
   where a lattice cell errs most (its centre and edge midpoints, as the
   per-call check of :class:`~range_dist.retrieval.fast.retriever.FastRetriever` does) in
   :data:`PROBES` small patches of cells around the run's points: a few hundred exact evaluations
   per spacing instead of a stencil of 36 nodes per sample point (spacings predicted from
   error ∝ h^REFINE_ORDER, the order the heads converge at, then checked; :data:`SCOUT_PROBES` of them
   first, since most spacings tried fail and the scouts show it at a quarter of the cost). The probes
   need error norms only, so they run on the error sketch of the values
   (:class:`~range_dist.retrieval.fast.approximations.ErrorSketch`), at a third of the cost of the
   semantic head and a sixth of the spatial one.
3. A final check of everything together on a second sample of the run's points (contiguous
   patches, so their lattice nodes are shared); the plan is refused (``ToleranceError``) when that
   error exceeds the tolerance, or when no approximation fits at all. A grid run's plan of lattices
   only skips it: each of its calls checks every lattice cell it touches as it runs, where the
   sample would see 256 points.
4. With a :class:`~range_dist.retrieval.fast.plan.Workload` (the grid job passes one), a cost model
   from the per-point costs measured while planning, one head at a time as the fast mode computes
   them: before planning, the run must be large enough to pay for it (planning's estimate within
   :data:`PLAN_BUDGET_SHARE` of the best-case saving, :func:`best_case_seconds`, with the exact
   retrieval timed on :data:`GATE_POINTS` points and the probes priced at one head each); a spacing
   is probed only if the plan could still be clearly faster with it (:data:`FAST_MARGIN`); after, the
   fast mode's predicted time for the run's calls must be below that share of the exact mode's.
   Otherwise the plan says ``fallback`` (and why) and the run computes exactly: the fast mode never
   makes a run slower than exact, by its estimate.

The check is a sample bound, not a guarantee for every point; the report says how many points it
saw. The PCA part also has a worst-case bound (``FastPlan.pca_worst_case``).

Embedding with the plan is :class:`~range_dist.retrieval.fast.retriever.FastRetriever`'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import torch

from range_dist.config.values import check_tolerance
from range_dist.errors import ToleranceError
from range_dist.geo.coords import validate_lonlat
from range_dist.retrieval.engine import LOCATION_BATCH, DeviceDatabase, RetrievalSettings, blend_heads
from range_dist.retrieval.fast.approximations import (
    TAPS,
    ErrorSketch,
    ValueBasis,
    fit_value_basis,
    interpolate,
    lattice_count_bounds,
    lattice_node_count,
    lattice_stencils,
)
from range_dist.retrieval.fast.plan import (
    PCA_SHARE,
    SPACING_LADDER,
    FastPlan,
    Workload,
    candidate_ranks,
    head_budgets,
    head_weights,
    next_spacing,
    rank_errors,
    relative_errors,
)
from range_dist.retrieval.fast.retriever import (
    LATTICE_COST_RATIO,
    PROBE_FRACTIONS,
    REFINE_ORDER,
    VALIDATION_POINTS,
    FastRetriever,
    RetrievalContext,
    check_points,
    check_share,
    retrieve_averages,
)
from range_dist.retrieval.timing import StageTimes

#: Largest share of the run's best-case saving (:func:`best_case_seconds`) that planning may take (the run is
#: computed exactly when planning alone would cost more): what planning costs when no approximation then fits.
#: Against the saving, not the exact time (0.15 of it before): at 0.25° over 30°×30° with 8,000 rows planning
#: took ~1.0 s of a 5.6 s exact estimate and the plan saved 2.6 s (``benchmarks/grid_job.py --only 3``:
#: 6.7 s exact, 5.2 s fast), but a run falling either side of 15 % (the planning estimate 0.9 s) fell back
#: in one run of three, at 0.85x with the run-to-run noise.
PLAN_BUDGET_SHARE = 0.25
#: Value rows the PCA basis is fitted on (a random subset: the basis's error is measured anyway).
BASIS_FIT_ROWS = 8192
#: Patches of lattice cells where the interpolation error of a spacing is measured, and their side (cells).
PROBES = 32
PROBE_CELLS = 1
#: Probes tried first at each spacing (half at sampled points, half at the sparsest rows): most spacings
#: tried fail, and these show it at a quarter of the cost of all :data:`PROBES`.
SCOUT_PROBES = 8
#: Neighbours counted for the row density around a point (:func:`probe_centres`).
SPARSE_NEIGHBOURS = 16
#: How much larger than the probes' largest error the per-call check may find: it takes the largest
#: error over every lattice cell of a tile (thousands), the probes over :data:`PROBES` cells. On the
#: L = 40 benchmark (``benchmarks/grid_job.py``, 100k rows) a tile's worst cell erred 3-8x more than the
#: probes at the same spacing, mostly in a few cells (islands, coasts) that the per-call check now
#: computes directly; 2 instead of 4 (when a failed check refined the whole tile) made the 0.25° run
#: 1.34x faster and the 1° global run 1.06x, with no refinement (18-29 points of failing cells).
#: With a cost model the margin is a price, not a rule: a spacing within the budget but not the margin is
#: taken when its lattice plus the points of its probes' share within the margin of the budget (at least
#: one probe's), computed directly, cost less than the finer lattice the margin asks for. At 0.25° there
#: the semantic head's probes erred 3.5e-4 at 0.75° (budget 4.5e-4; all cells of the tile 3.6e-4), and
#: 0.75° instead of 0.6° took the fast run from 41.4 to 37.4 s wall.
PROBE_MARGIN = 2.0
#: The fast mode is used only when its estimate is below this share of the exact one: a plan that saves
#: less than the estimate's error (and a refined lattice in one tile costs more than that) is not worth it.
FAST_MARGIN = 0.9
#: Times the final check may make every lattice one ladder step finer before the plan is refused.
FINAL_REFINEMENTS = 2
#: Points of the exact retrieval timed before planning, to decide whether planning can pay; their per-point
#: costs are the cost model's unless a PCA basis may fit (then the rest of the selection is computed too).
#: 128: calls of 64 points read 25-45 % slower per point than calls of 128-256 (the values are streamed
#: once per call and head), those of 128 within ~10 % (``benchmarks/grid_job.py``, 100k rows, L = 40).
GATE_POINTS = 128
#: Points of the warm-up call of SatCLIP before its cost is timed.
COST_PROBE_POINTS = 16
#: Points of the larger calls timed for the per-point costs of SatCLIP and of the interpolation.
COST_FIT_POINTS = 2048


def _sample(points: npt.NDArray[np.float64], size: int, seed: int) -> tuple[npt.NDArray[np.float64], ...]:
    """Two disjoint samples (selection, check) of ``size`` points each, or all points twice if too few.

    The check sample is a few clusters of neighbouring points (their lattice nodes are shared)."""
    if len(points) < 2 * size:
        return points, points
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(points))
    selection, rest = points[order[:size]], points[order[size:]]
    clusters, per = 4, -(-size // 4)
    xyz = _unit(rest)
    picked: list[npt.NDArray[np.int64]] = []
    for seed_row in rng.choice(len(rest), size=clusters, replace=False):
        near = np.argsort(-(xyz @ xyz[seed_row]), kind="stable")[:per]
        picked.append(near)
    check = np.unique(np.concatenate(picked))[: size]
    return selection, rest[check]


def _unit(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


@dataclass
class _Costs:
    """Per-point seconds measured while planning."""

    features: float = 0.0  # per point, beyond the fixed cost of a call
    features_call: float = 0.0  # fixed seconds per SatCLIP call (the published harmonics' many small ops)
    exact: float = 0.0
    exact_blend: float = 0.0
    fast_blend: float = 0.0
    head: dict[str, float] = field(default_factory=dict)  # one head at the plan's value width
    check: dict[str, float] = field(default_factory=dict)  # one head on the error sketch (a check point)
    interpolation: float = 0.0


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _exact(context: RetrievalContext, lonlat: npt.NDArray[np.float64], settings: RetrievalSettings,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query features and exact (H, n, D) head averages."""
    q_hat, xyz = context.features(lonlat)
    return q_hat, xyz, torch.stack(retrieve_averages(context.db, settings.heads, q_hat, xyz, settings))


def _timed_heads(db: DeviceDatabase, q_hat: torch.Tensor, xyz: torch.Tensor, settings: RetrievalSettings,
                 ) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Each head's (n, C) averages over ``db``, computed one head at a time, and its seconds per point.

    One head at a time because that is how the fast mode computes a head it does not interpolate: its
    cost, and the exact mode's (their sum), then come from calls of the same size. Heads timed on 64
    points but the exact mode on 256 read 12-20 % high per point (fixed costs per database chunk), which
    priced a semantic head computed directly above its real cost and turned plans that pay into
    fallbacks (``benchmarks/grid_job.py``, 1° global land).
    """
    averages, seconds = [], {}
    for head in settings.heads:
        (average,), spent = _timed(retrieve_averages, db, (head,), q_hat, xyz, settings)
        averages.append(average)
        seconds[head] = spent / max(1, len(q_hat))
    return averages, seconds


def lattice_counts(workload: Workload, spacing: float) -> tuple[int, int]:
    """(lattice nodes, check points) of the workload's typical call at ``spacing`` (counted once per spacing)."""
    counts = workload.counts.get(spacing)
    if counts is None:
        checks = check_points(workload.call, spacing)
        nodes = lattice_node_count(np.concatenate([workload.call, checks]), spacing)
        counts = workload.counts[spacing] = (nodes, len(checks))
    return counts


def paying_spacings(workload: Workload, ladder: Sequence[float], check_weight: float = 1.0) -> tuple[float, ...]:
    """The spacings of ``ladder`` whose lattice could pay for the workload's typical call.

    A call interpolates a head only when its lattice nodes, plus its check points at ``check_weight``
    of a node each (sketched checks are cheaper), number fewer than :data:`LATTICE_COST_RATIO` per
    point (a node costs about what a point computed directly costs), so a spacing too fine for the
    run's calls (e.g. a 0.25° lattice for a 0.5° grid) is never worth probing. The ladder is coarsest
    first, so this is a prefix of it.
    """
    limit = LATTICE_COST_RATIO * len(workload.call)

    def pays(spacing: float) -> bool:
        if spacing not in workload.counts:
            # the cells' corner nodes and centres bound the counts from below: a spacing too fine is refused
            # from one unique() over the call's points, not the unique() over every cell's 36 stencil nodes
            # (both ladders: 0.09 -> 0.04 s on a 0.25° tile's 9k land cells, 0.22 -> 0.14 s on a 0.1° tile's 41k)
            corners, cells = lattice_count_bounds(workload.call, spacing)
            if corners + check_weight * cells >= limit:
                return False
        nodes, checks = lattice_counts(workload, spacing)
        return nodes + check_weight * checks < limit

    # a finer lattice has more nodes and check points: bisect for the first that does not pay
    low, high = 0, len(ladder)
    while low < high:
        middle = (low + high) // 2
        if pays(ladder[middle]):
            low = middle + 1
        else:
            high = middle
    return tuple(ladder[:low])


def _feature_costs(context: RetrievalContext, lonlat: npt.NDArray[np.float64], costs: _Costs,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of ``lonlat``, and SatCLIP's cost model: fixed per call plus per point, fitted on a
    call of these points and one of :data:`COST_FIT_POINTS` (the fixed part dominates small calls)."""
    context.features(lonlat[:COST_PROBE_POINTS])  # warm-up: first-call allocations are not the model's
    features, t_small = _timed(context.features, lonlat)
    large = np.resize(lonlat, (max(COST_FIT_POINTS, 2 * len(lonlat)), 2))
    _, t_large = _timed(context.features, large)
    costs.features = max(t_large - t_small, 0.0) / (len(large) - len(lonlat))
    costs.features_call = max(0.0, t_small - len(lonlat) * costs.features)
    return features


def _interpolation_cost(lonlat: npt.NDArray[np.float64], spacing: float, width: int, device: torch.device,
                        dtype: torch.dtype) -> float:
    """Seconds per point of :func:`interpolate` on a call of :data:`COST_FIT_POINTS` points near these."""
    jitter = np.random.default_rng(0).uniform(-spacing, spacing, size=(COST_FIT_POINTS, 2))
    points = np.resize(lonlat, (COST_FIT_POINTS, 2)) + jitter
    points[:, 1] = np.clip(points[:, 1], -89.9, 89.9)
    start = time.perf_counter()
    stencils = lattice_stencils(points, spacing)
    interpolate(torch.zeros((len(stencils.nodes), width), dtype=dtype, device=device), stencils)
    return (time.perf_counter() - start) / len(points)


def choose_rank(
    basis: ValueBasis, averages: torch.Tensor, weights: npt.NDArray[np.float64], norms: torch.Tensor, target: float,
) -> tuple[int | None, float]:
    """Smallest ladder rank whose measured truncation error is within ``target`` (None: none fits)."""
    mean = torch.as_tensor(basis.mean, dtype=torch.float64)
    coefficients = (averages.double() - mean) @ torch.as_tensor(basis.components, dtype=torch.float64)
    errors = rank_errors(coefficients, weights, norms)
    for rank in candidate_ranks(basis.components.shape[0]):
        if float(errors[rank]) <= target:
            return rank, float(errors[rank])
    return None, 0.0


def probe_points(centres: npt.NDArray[np.float64], spacing: float) -> npt.NDArray[np.float64]:
    """Check points (centres and edge midpoints) of PROBE_CELLS² lattice cells at each of ``centres``."""
    offsets = (np.arange(PROBE_CELLS) - (PROBE_CELLS - 1) / 2.0) * spacing
    dx, dy = np.meshgrid(offsets, offsets)
    cells = (centres[:, None, :] + np.stack([dx.ravel(), dy.ravel()], axis=1)[None]).reshape(-1, 2)
    cells[:, 0] = (cells[:, 0] + 180.0) % 360.0 - 180.0
    cells[:, 1] = np.clip(cells[:, 1], -89.999, 89.999)
    return check_points(cells, spacing, PROBE_FRACTIONS)


def probe_centres(context: RetrievalContext, selection: npt.NDArray[np.float64], points: npt.NDArray[np.float64],
                  count: int) -> npt.NDArray[np.float64]:
    """(count, 2) where to probe: sample points and the run's points with the sparsest rows around, alternating.

    The spatial head is sharpest where few database rows lie within its ~9° kernel: on the L = 40
    benchmark at 1° over global land, cells of remote islands (Polynesia, South Georgia) erred 30x
    the continents' at the same spacing, and random probes never met them.
    """
    half = count // 2
    xyz = torch.as_tensor(_unit(points), dtype=context.db.dtype, device=context.db.device)
    k = min(SPARSE_NEIGHBOURS, context.db.rows)
    # the k-th nearest row's cosine per point, in blocks (no (n, M) matrix at once)
    kth = torch.cat([torch.topk(xyz[s : s + 256] @ context.db.xyz.T, k, dim=1).values[:, -1]
                     for s in range(0, len(xyz), 256)])
    sparsest = points[torch.argsort(kth)[:half].cpu().numpy()]
    sampled = selection[: count - len(sparsest)]
    # alternating, so that the first few (the scouts, :data:`SCOUT_PROBES`) hold both kinds
    order = np.argsort(np.concatenate([np.arange(len(sampled)), np.arange(len(sparsest)) + 0.5]), kind="stable")
    return np.concatenate([sampled, sparsest])[order]


def basis_rows(rows: int, seed: int) -> npt.NDArray[np.int64]:
    """Sorted rows the basis is fitted on (all of them for a small database)."""
    if rows <= BASIS_FIT_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=BASIS_FIT_ROWS, replace=False))


def row_residual_bound(values: npt.NDArray[np.floating], basis: ValueBasis, rows_per_block: int = 16384) -> float:
    """``max_i ||v_i - P_r v_i||`` over every row, in float32 torch products (a reported bound, not a choice)."""
    comps = torch.from_numpy(np.ascontiguousarray(basis.components))
    mean = torch.from_numpy(basis.mean)
    worst = 0.0
    for start in range(0, len(values), rows_per_block):
        x = torch.from_numpy(np.asarray(values[start : start + rows_per_block], dtype=np.float32)) - mean
        residual = x - (x @ comps) @ comps.T
        worst = max(worst, float(residual.norm(dim=1).max()))
    return worst


def plan_fast(
    context: RetrievalContext,
    lonlat: npt.ArrayLike,
    betas: Sequence[float],
    tolerance: float,
    validation_points: int = VALIDATION_POINTS,
    seed: int = 0,
    workload: Workload | None = None,
    check_lonlat: npt.ArrayLike | None = None,
) -> FastPlan:
    """Choose the approximations for ``tolerance`` and validate them on the run's own points.

    Args:
        context: the exact retrieval of the run (e.g. ``RangeEncoder.retrieval_context()``).
        lonlat: (N, 2) the run's points (or a sample of them), degrees.
        betas: the run's β levels.
        tolerance: largest accepted ``||fast - exact|| / ||exact||`` per point and β (e.g. 1e-3).
        validation_points: size of each of the two samples (selection, final check).
        seed: sampling seed.
        workload: the run's size and a typical call: enables the cost model (a plan may then come
            back with ``fallback`` set: compute exactly, and why).
        check_lonlat: (n, 2) points of the run for the final check (default: clusters of ``lonlat``);
            contiguous cells keep the check cheap.

    Returns:
        The plan, with its measured error, planning time and cost estimate.

    Raises:
        ConfigError: a tolerance outside (0, 1).
        ToleranceError: the tolerance is not met, or nothing can be approximated within it.
    """
    started = time.perf_counter()
    check_tolerance("fast", tolerance)
    points = validate_lonlat(lonlat)
    betas = tuple(float(b) for b in betas)
    settings = context.settings(betas)
    selection, check = _sample(points, validation_points, seed)
    if check_lonlat is not None:
        check = validate_lonlat(check_lonlat)[:validation_points]
    weights = np.stack([head_weights(context.variant, betas, h) for h in settings.heads])  # (H, B)
    costs = _Costs()

    def fallback(reason: str, estimate: dict[str, float]) -> FastPlan:
        return FastPlan(tolerance, None, fallback=reason, planning_seconds=time.perf_counter() - started,
                        estimate=estimate)

    # the spacings worth probing per head: all of the ladder, or those that could pay for the run's calls
    # (none on a grid too coarse for any lattice: then only the PCA basis is tried, which may still pay)
    sketch = ErrorSketch.for_width(context.db.value_dim)
    shares = {h: check_share(h, int(context.db.keys.shape[1]), context.db.value_dim,
                             None if sketch is None else sketch.dim) for h in settings.heads}
    ladders = {h: SPACING_LADDER[h] if workload is None else paying_spacings(workload, SPACING_LADDER[h],
                                                                             shares[h])
               for h in settings.heads}
    with torch.no_grad():
        q_hat, xyz = _feature_costs(context, selection, costs)
        retrieve_averages(context.db, settings.heads, q_hat[:8], xyz[:8], settings)  # first-call allocations
        # the selection's exact heads, one head at a time and timed: the first GATE_POINTS decide whether
        # planning can pay at all and give the per-point costs; the rest (or all, for a small sample) are
        # computed only where a PCA basis may fit (below)
        gate = min(GATE_POINTS, len(selection) // 2) if workload is not None else 0
        first, seconds = _timed_heads(context.db, q_hat[:gate], xyz[:gate], settings) if gate else ([], {})
        if workload is not None:  # can this run pay for planning at all?
            costs.exact = sum(seconds.values())
            exact_total = estimate_exact(costs_dict(costs), workload)
            # two samples with every head; ~3 spacings tried per head, each PROBES patches of nodes +
            # probe points with that head alone (about 1/H of the exact cost), on the error sketch
            both = 2 * len(selection)
            per_try = PROBES * ((PROBE_CELLS + 5) ** 2 + 5 * PROBE_CELLS**2)
            planning = (both * (costs.features + costs.exact) + 12 * costs.features_call
                        + sum(min(3, len(ladder)) * per_try * (costs.features + shares[h] * costs.exact
                                                               / len(settings.heads))
                              for h, ladder in ladders.items()))
            gain = exact_total - best_case_seconds(workload, settings.heads, ladders, costs_dict(costs), seconds,
                                                   shares, int(context.db.keys.shape[1]), context.db.value_dim)
            if planning > PLAN_BUDGET_SHARE * gain:
                return fallback(
                    f"the run is too small for the fast mode to pay: exact ≈ {exact_total:.1f} s for "
                    f"{workload.points:,} points, of which the fast mode could save ≈ {max(gain, 0.0):.1f} s at "
                    f"best; planning alone ≈ {planning:.1f} s (more than {PLAN_BUDGET_SHARE:.0%} of that)",
                    {"exact": exact_total, "planning": planning, "gain": gain})
        full_basis = fit_value_basis(np.asarray(context.values)[basis_rows(len(context.values), seed)])

        def blended_and_rank(averages: torch.Tensor) -> tuple[torch.Tensor, float, int | None, float]:
            """(B, n) norms of the exact embeddings of the first n selection points from their (H, n, D) head
            averages, the blend's seconds, and the rank that fits them (None: none) with its error."""
            emb, spent = _timed(blend_heads, dict(zip(settings.heads, averages)), q_hat[: averages.shape[1]], betas,
                                context.variant)
            emb_norms = emb.double().norm(dim=-1)
            return (emb_norms, spent,
                    *choose_rank(full_basis, averages.cpu(), weights, emb_norms.cpu(), PCA_SHARE * tolerance))

        if first:
            # a rank that fails on the gate's points fails on the whole selection (its error is the largest
            # over the points): where none fits them, the rest of the selection is not computed exactly
            # (0.5 s of a 3.5 s plan at 0.25° over 30°×30° with 100k rows, ``benchmarks/grid_job.py``)
            exact_avg = torch.stack(first)  # (H, n, D)
            norms, blend_s, rank, rank_error = blended_and_rank(exact_avg)
        if not first or rank is not None:
            rest, seconds = _timed_heads(context.db, q_hat[gate:], xyz[gate:], settings)
            exact_avg = torch.stack([torch.cat([f, r]) for f, r in zip(first, rest)] if first else rest)
            norms, blend_s, rank, rank_error = blended_and_rank(exact_avg)
        costs.head = dict(seconds)  # at the full value width, the exact mode's (the gate's, or the rest's)
        costs.exact = sum(seconds.values())
        costs.exact_blend = blend_s / exact_avg.shape[1]
        # norms: (B, n) of the points computed exactly
        min_norms = norms.amin(dim=1) * (1.0 - tolerance)  # (B,) as the per-call check
        basis = None if rank is None else full_basis.truncated(rank)
        component_errors = {} if rank is None else {"pca": rank_error}
        plan = FastPlan(tolerance, basis)
        stages = StageTimes()
        retriever = FastRetriever(context, plan, stages=stages)
        # per-point cost of each head at the plan's width (computed directly) and on the error sketch (a
        # check point), on calls as large as the exact timing's (the cost per point does not depend on
        # the points, but small calls read high)
        timed = slice(gate, len(selection))
        if basis is not None:
            _, seconds = _timed_heads(retriever.db, q_hat[timed], xyz[timed], settings)
            costs.head = dict(seconds)
        _, seconds = _timed_heads(retriever.sketch_db, q_hat[timed], xyz[timed], settings)
        costs.check = dict(seconds)

        spacing: dict[str, float] = {}
        if workload is not None:  # for pricing the spacings before probing them
            costs.interpolation = _interpolation_cost(selection, min(min(x, default=90.0) for x in ladders.values()),
                                                      int(retriever.db.values_aug.shape[1]) - 1, context.db.device,
                                                      context.db.dtype)
            costs.fast_blend = costs.exact_blend * (1.0 if basis is None else 2.0)
        centres = probe_centres(context, selection, points, PROBES)
        # the heads that may get a lattice, semantic first: each is probed for its part of the heads' budget
        # among those that got one so far, itself and those still to probe
        candidates = [h for h_index, h in enumerate(settings.heads) if float(weights[h_index].max()) > 0.0]
        for h_index, head in enumerate(settings.heads):
            weight = torch.as_tensor(weights[h_index], dtype=torch.float64, device=norms.device)
            if head not in candidates:
                continue
            if workload is not None:
                # only spacings at which the plan could still be clearly faster (the heads not yet probed
                # at their coarsest): a finer one would be probed only to fall back to exact after all
                ladders[head] = tuple(x for x in ladders[head] if _could_pay(
                    replace(plan, spacing={**{h: ladders[h][0] for h in settings.heads[h_index + 1:] if ladders[h]},
                                           **spacing, head: x}, costs=costs_dict(costs)), settings.heads, workload))
            ladder = ladders[head]
            later = [h for h in candidates[candidates.index(head) + 1 :] if ladders[h]]
            target = head_budgets([*spacing, head, *later], with_basis=basis is not None)[head] * tolerance

            def probe_errors(step: float, where: npt.NDArray[np.float64], head: str = head,
                             weight: torch.Tensor = weight) -> npt.NDArray[np.float64]:
                """(p,) weighted relative error at each probe point (largest over β)."""
                probes = probe_points(where, step)
                # an orthonormal PCA basis keeps norms: the coefficient error is the value error (the
                # sketch estimates its norm, within the margin below)
                diff = (retriever.sketched_interpolated(head, step, probes, settings)
                        - retriever.sketched_exact(head, probes, settings))
                per_point = weight[:, None] * diff.double().norm(dim=-1)[None, :] / min_norms[:, None]
                return per_point.amax(dim=0).cpu().numpy()

            def probed(step: float, target: float = target) -> npt.NDArray[np.float64]:
                """The probes' errors at ``step``: the scouts first, and the rest only if the scouts could still
                fit (a spacing the scouts fail fails anyway; the rest would only sharpen the next guess)."""
                errors = probe_errors(step, centres[:SCOUT_PROBES])
                limit = target if workload is not None else target / PROBE_MARGIN  # see ``fits``
                if errors.max() > limit or len(centres) <= SCOUT_PROBES:
                    return errors
                return np.concatenate([errors, probe_errors(step, centres[SCOUT_PROBES:])])

            def fits(step: float, errors: npt.NDArray[np.float64], head: str = head, target: float = target,
                     ladder: tuple[float, ...] = ladder) -> bool:
                """Whether ``step`` is the head's spacing: its probes within the target with the margin, or, with
                a cost model, within the target alone and cheaper than the finer lattice the margin asks for
                (with the points of the cells at risk, within the margin of the target, computed directly)."""
                if errors.max() * PROBE_MARGIN <= target:
                    return True
                if workload is None or errors.max() > target:
                    return False
                finer = next_spacing(ladder, step, float(errors.max()) * PROBE_MARGIN, target, safety=1.0)
                if finer is None:
                    return True
                c = costs_dict(costs)
                head_cost, check_cost = costs.head[head], costs.check.get(head, costs.head[head])
                at_risk = max(1, int((errors * PROBE_MARGIN > target).sum())) / len(errors)
                risky = (lattice_cost(workload, step, c, head_cost, check_cost)
                         + at_risk * len(workload.call) * head_cost)
                return risky < lattice_cost(workload, finer, c, head_cost, check_cost)

            # the spacings to try next are predicted from the error with the margin, or without it where
            # ``fits`` may take a spacing within the target alone
            margin = PROBE_MARGIN if workload is None else 1.0
            step: float | None = ladder[0] if ladder else None
            failed = float("inf")  # the finest spacing that failed so far
            while step is not None:
                errors = probed(step)
                error = float(errors.max())
                if fits(step, errors):
                    # the prediction may have jumped over coarser spacings that fit too (each saves ~1/h² of
                    # the lattice in every tile): try those that the slower convergence of real heads still
                    # lets fit, coarsest first
                    reach = _predicted(step, error * margin, target, REFINE_ORDER)
                    for coarser in [x for x in ladder if step < x < failed and x <= reach]:
                        coarse_errors = probed(coarser)
                        if fits(coarser, coarse_errors):
                            step, error = coarser, float(coarse_errors.max())
                            break
                    spacing[head] = step
                    component_errors[f"interpolation_{head}"] = error
                    break
                failed = step
                if workload is not None and _predicted(step, error, target) < 0.8 * ladder[-1]:
                    break  # even the error model's optimistic guess is finer than any lattice that pays
                # the guess from the order the heads converge at (REFINE_ORDER, no safety factor): the kernel's
                # TAPS guessed too coarse from the coarse end of the ladder, and each step it fell short cost a
                # round of scouts (the semantic head went 4 -> 1.5 -> 1.2 -> 1.0° on the L = 40 benchmark at 0.25°
                # and 0.1°, 4 -> 1.0° with REFINE_ORDER); a guess too fine that passes is followed by the coarser
                # spacings that its error predicts to fit (above)
                step = next_spacing(ladder, step, error * margin, target, order=REFINE_ORDER, safety=1.0)

        if basis is None and not spacing and workload is not None and any(
                len(ladders[h]) < len(SPACING_LADDER[h]) for h in settings.heads):
            tried = ", ".join(f"{h} down to {ladders[h][-1]:g}°" for h in settings.heads if ladders[h])
            return fallback("no approximation fits the tolerance and pays for this grid's calls: no PCA basis "
                            "of the values within it, and " + (f"no lattice (tried {tried})" if tried else
                                                                 "no lattice pays at this grid's density"), {})
        if basis is None and not spacing:
            raise ToleranceError(
                f"fast mode cannot meet tolerance {tolerance:g} on this run's points: neither a PCA basis of at "
                f"most {context.db.value_dim // 2} of {context.db.value_dim} dimensions nor any lattice interpolation "
                "fits it; use --mode exact, or a larger --tolerance")

        plan = replace(plan, spacing=spacing, component_errors=component_errors,
                       pca_worst_case=None if basis is None else row_residual_bound(context.values, basis))
        if workload is not None:  # before the final check: stop here when the chosen plan cannot pay
            if spacing:
                costs.interpolation = max(_interpolation_cost(check, h, int(retriever.db.values_aug.shape[1]) - 1,
                                                              context.db.device, context.db.dtype)
                                          for h in spacing.values())
            costs.fast_blend = costs.exact_blend * (1.0 if basis is None else 2.0)
            early = replace(plan, costs=costs_dict(costs), planning_seconds=time.perf_counter() - started)
            slower = _not_clearly_faster(early, settings.heads, workload)
            if slower is not None:
                return slower
            if basis is None:
                # only lattices: the run's per-call checks bound each interpolated head on every lattice cell
                # of every call (within its error budget), which a final sample of 256 points cannot
                # add to; it would only move a refinement from the first tile into planning, at 2-4 s
                return replace(early, estimate=estimate_seconds(early, settings.heads, workload),
                               planning_seconds=time.perf_counter() - started)
        q_check, xyz_check, check_avg = _exact(context, check, settings)
        exact_check = blend_heads(dict(zip(settings.heads, check_avg)), q_check, betas, context.variant)
        for _ in range(FINAL_REFINEMENTS + 1):
            checker = FastRetriever(context, plan, stages=stages)
            averages = checker.head_averages(check, q_check, xyz_check, betas, settings, force=True)
            fast_check, blend_s = _timed(blend_heads, averages, q_check, betas, context.variant, checker.reconstruct)
            measured = float(relative_errors(fast_check, exact_check).max())
            finer = {h: [x for x in SPACING_LADDER[h] if x < v] for h, v in spacing.items()}
            if measured <= tolerance or not any(finer.values()):
                break
            # the probes missed a hard place that the run's own points hold: every lattice one step finer
            spacing = {h: (f[0] if f else spacing[h]) for h, f in finer.items()}
            plan = replace(plan, spacing=spacing)
        if spacing:
            costs.interpolation = max(_interpolation_cost(check, h, int(checker.db.values_aug.shape[1]) - 1,
                                                          context.db.device, context.db.dtype)
                                      for h in spacing.values())
        # blends are one fused pass (plus the basis product); per point on a small sample they read high
        costs.fast_blend = min(blend_s / len(check), costs.exact_blend * (1.0 if basis is None else 2.0))
    plan = replace(plan, measured_error=measured, validation_points=len(check),
                   planning_seconds=time.perf_counter() - started)
    if measured > tolerance:
        raise ToleranceError(
            f"fast mode measured a relative error of {measured:.3g} on {len(check)} of this run's points, above "
            f"tolerance {tolerance:g} (plan: {plan.describe()}); use --mode exact, or a larger --tolerance")
    plan = replace(plan, costs=costs_dict(costs))
    if workload is None:
        return plan
    plan = replace(plan, planning_seconds=time.perf_counter() - started)
    return _not_clearly_faster(plan, settings.heads, workload) or replace(
        plan, estimate=estimate_seconds(plan, settings.heads, workload))


def _predicted(spacing: float, error: float, target: float, order: float = TAPS) -> float:
    """The spacing the error model (error ∝ h^order) predicts for ``target``, from ``error`` at ``spacing``."""
    return spacing * (target / error) ** (1.0 / order) if error > 0 else spacing


def _not_clearly_faster(plan: FastPlan, heads: Sequence[str], workload: Workload) -> FastPlan | None:
    """``plan`` marked ``fallback`` (with the estimate and why) when its estimate is not below
    :data:`FAST_MARGIN` of the exact mode's; None when it pays."""
    if _could_pay(plan, heads, workload):
        return None
    estimate = estimate_seconds(plan, heads, workload)
    costs = plan.costs
    return replace(plan, estimate=estimate, fallback=(
        f"the fast mode would not be clearly faster here: estimated {estimate['fast']:.1f} s against "
        f"{estimate['exact']:.1f} s exact (it must be below {FAST_MARGIN:.0%} of it) for {workload.points:,} points "
        f"in calls of {len(workload.call):,} (value rank {plan.value_rank}, lattice {plan.spacing or 'none'}; per "
        f"point: features {costs['features'] * 1e3:.3f} ms, exact retrieval {costs['exact'] * 1e3:.3f} ms)"))


def _could_pay(plan: FastPlan, heads: Sequence[str], workload: Workload) -> bool:
    """Whether the estimate of ``plan`` is below :data:`FAST_MARGIN` of the exact mode's."""
    estimate = estimate_seconds(plan, heads, workload)
    return estimate["fast"] < FAST_MARGIN * estimate["exact"]


def costs_dict(costs: _Costs) -> dict[str, float]:
    """The measured per-point seconds as the plan keeps them (``head:<name>`` per head)."""
    out = {"features": costs.features, "features_call": costs.features_call, "exact": costs.exact,
           "exact_blend": costs.exact_blend, "fast_blend": costs.fast_blend, "interpolation": costs.interpolation}
    out.update({f"head:{h}": v for h, v in costs.head.items()})
    out.update({f"check:{h}": v for h, v in costs.check.items()})
    return out


def best_case_seconds(workload: Workload, heads: Sequence[str], ladders: dict[str, tuple[float, ...]],
                      costs: dict[str, float], head_seconds: dict[str, float], check_shares: dict[str, float],
                      key_dim: int, value_dim: int) -> float:
    """The fast mode's lowest conceivable time for the run's calls, before anything is probed: each head on the
    coarsest lattice that could pay for the calls (or computed directly without one), with values at the
    smallest PCA rank of :data:`RANK_LADDER`, and no interpolation cost. Planning is worth its cost only
    against the saving this leaves.

    Args:
        workload: the run's size and a typical call.
        heads: the run's retrieval heads.
        ladders: per head, the spacings that could pay for the calls (coarsest first; may be empty).
        costs: the per-point costs measured so far (:func:`costs_dict`).
        head_seconds: per head, seconds per point computed directly at the full value width.
        check_shares: per head, a sketched check point's cost relative to a direct evaluation.
        key_dim: K, the keys' width.
        value_dim: D, the values' width.

    Returns:
        Seconds for all the run's calls (``workload.calls`` of them).
    """
    n = len(workload.call)
    total = feature_seconds(n, costs)
    ranks = candidate_ranks(value_dim)  # none for values narrower than twice the smallest rank (choose_rank)
    for head in heads:
        # the same FLOP model as a check on the sketch: scores, exponential and the values product at width r
        rank_share = check_share(head, key_dim, value_dim, ranks[0]) if ranks else 1.0
        head_cost = head_seconds[head] * rank_share
        per_head = n * head_cost
        if ladders[head]:
            per_head = min(per_head, lattice_cost(workload, ladders[head][0], costs, head_cost,
                                                  check_shares[head] * head_seconds[head]))
        total += per_head
    return total * workload.calls


def estimate_seconds(plan: FastPlan, heads: Sequence[str], workload: Workload) -> dict[str, float]:
    """Predicted seconds of the run's calls, exact and fast (with the plan's measured per-point costs).

    Per call of n points: exact = n·(features + exact + blend); fast = n·(features + blend) plus, per
    head, either its lattice ((nodes + check points)·(features + head) + n·interpolation, when the
    retriever would interpolate this call) or n·head computed directly. Casting and writing are the
    same in both modes and left out.
    """
    c = plan.costs
    call = workload.call
    n = len(call)
    fast = feature_seconds(n, c) + n * c["fast_blend"]
    for head in heads:
        per_point = c.get(f"head:{head}", c["exact"])
        spacing = plan.spacing.get(head)
        lattice = None if spacing is None else lattice_cost(workload, spacing, c, per_point,
                                                             c.get(f"check:{head}", per_point))
        fast += n * per_point if lattice is None else min(lattice, n * per_point)
    return {"exact": estimate_exact(c, workload), "fast": fast * workload.calls, "planning": plan.planning_seconds}


def feature_seconds(points: int, costs: dict[str, float]) -> float:
    """Predicted SatCLIP seconds for one call's points (fixed cost per location batch, plus per point)."""
    return -(-points // LOCATION_BATCH) * costs["features_call"] + points * costs["features"]


def estimate_exact(costs: dict[str, float], workload: Workload) -> float:
    """Predicted seconds of the run's calls in exact mode."""
    n = len(workload.call)
    per_call = feature_seconds(n, costs) + n * (costs["exact"] + costs.get("exact_blend", 0.0))
    return per_call * workload.calls


def lattice_cost(workload: Workload, spacing: float, costs: dict[str, float], head_per_point: float,
                 check_per_point: float) -> float:
    """Predicted seconds of one head interpolated over the workload's typical call: nodes exactly and check
    points on the error sketch (two SatCLIP calls), then the interpolation."""
    nodes, checks = lattice_counts(workload, spacing)
    return (2 * costs["features_call"] + nodes * (costs["features"] + head_per_point)
            + checks * (costs["features"] + check_per_point) + len(workload.call) * costs["interpolation"])
