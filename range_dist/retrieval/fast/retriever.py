"""The ``fast`` retrieval mode at embedding time: :class:`FastRetriever` applies a validated :class:`FastPlan`.

It needs no encoder, only a :class:`RetrievalContext`: the exact retrieval's rows on their device,
its query featurisation, variant and settings (a :class:`~range_dist.retrieval.encoder.RangeEncoder`
gives one with ``retrieval_context()``).

While embedding, a head is interpolated only for calls whose lattice nodes and check points cost
less than the points themselves (dense grids, tiles); sparse calls compute it directly. Every
interpolated head is then checked in the call: evaluated exactly at the centre and edge midpoints
of each lattice cell holding points, its error relative to the call's smallest embedding norm must
stay within the head's error budget (``FastPlan.head_budget``: the heads share half the tolerance, three
quarters without a PCA basis).
Where it does not, the points of the failing cells are computed directly and the rest keep the
lattice, or, when that would cost more (many cells fail), the call moves to a finer lattice, down to
computing directly.
The check evaluates the head on an :class:`~range_dist.retrieval.fast.approximations.ErrorSketch` of
the values (about a third of the cost for the semantic head, a sixth for the spatial one): a point
whose sketched error is within half the budget passes, one above twice the budget fails, and the
points between are evaluated in full (:meth:`FastRetriever._check_errors`).
A spacing that a call had to refine to is where the retriever's later calls (neighbouring tiles)
start, so a run pays for a too-coarse lattice once, not once per tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt
import torch

from range_dist.retrieval.engine import (
    MAX_QUERY_BLOCK,
    DeviceDatabase,
    RetrievalSettings,
    blend_heads,
    retrieve_partials,
)
from range_dist.retrieval.fast.approximations import (
    ErrorSketch,
    Stencils,
    ValueBasis,
    check_spacing,
    interpolate,
    lattice_node_count,
    lattice_stencils,
)
from range_dist.retrieval.fast.plan import SPACING_LADDER, FastPlan, head_weights, next_spacing
from range_dist.retrieval.timing import StageTimes

#: Interpolate a head in a call only when its lattice nodes and check points number fewer than this
#: many per point (each costs about what a point computed directly costs).
LATTICE_COST_RATIO = 0.8
#: Default size of each of the two validation samples.
VALIDATION_POINTS = 256
#: Bytes of lattice-node values kept between calls per (head, spacing), so that neighbouring tiles
#: of a run share the nodes of their common border instead of evaluating them again.
NODE_CACHE_BYTES = 64 * 2**20
#: The order of convergence a failed check assumes when it predicts the spacing to refine to: below the
#: kernel's TAPS, as measured on the L = 40 benchmark's heads (error ∝ h^3.5 to h^5 at 1e-4 to 1e-3).
REFINE_ORDER = 4.0
#: A check point passes on its sketched error when that is within budget / SKETCH_SCREEN, and fails
#: (its cells) when it is above budget · SKETCH_SCREEN; in between it is evaluated in full. The sketch is
#: off by more than this factor with probability < 1e-17 per point (see ``ErrorSketch``).
SKETCH_SCREEN = 2.0


@dataclass(frozen=True)
class RetrievalContext:
    """What the fast mode needs of an exact retrieval: the rows on their device, how to featurise
    queries, the variant, and the settings per β list.

    Attributes:
        db: the database rows on their device (its dtype is the computation's).
        features: (n, 2) (lon, lat) degrees -> q̂ (n, K) and unit vectors (n, 3), on ``db.device`` in ``db.dtype``.
        variant: ``range+`` or ``range``.
        settings: the retrieval settings of a run at these β levels.
        values: (M, D) the rows' values on the host, for fitting the PCA basis.
    """

    db: DeviceDatabase
    features: Callable[[npt.NDArray[np.float64]], tuple[torch.Tensor, torch.Tensor]]
    variant: str
    settings: Callable[[Sequence[float]], RetrievalSettings]
    values: npt.NDArray[np.floating]


@dataclass
class FastStats:
    """What the per-call checks saw (summed over calls).

    Attributes:
        interpolated_heads: (call, head) pairs interpolated and passing their check.
        direct_heads: (call, head) pairs computed directly (sparse points, or a check never passed).
        refinements: checks failed and retried at a finer spacing.
        checked_points: check points evaluated exactly (:data:`CHECK_FRACTIONS` per touched lattice cell),
            on the error sketch.
        rechecked_points: check points whose sketched error was too close to the budget to decide, evaluated
            in full.
        max_checked_error: the largest passing check error (relative to the embedding's norm).
        local_points: points of cells whose check failed, computed directly while the rest of the call
            kept its lattice (cheaper than refining the whole call's lattice).
        lattice_nodes: lattice nodes evaluated exactly.
        shared_nodes: lattice nodes reused from an earlier call (a neighbouring tile) instead.
    """

    interpolated_heads: int = 0
    direct_heads: int = 0
    refinements: int = 0
    checked_points: int = 0
    rechecked_points: int = 0
    max_checked_error: float = 0.0
    local_points: int = 0
    lattice_nodes: int = 0
    shared_nodes: int = 0

    def summary(self) -> str:
        return (f"fast mode checks: {self.interpolated_heads} interpolated head(s) passed their per-cell check "
                f"(largest error {self.max_checked_error:.2e}, {self.checked_points:,} points evaluated, "
                f"{self.rechecked_points:,} of them in full, "
                f"{self.refinements} refinement(s), {self.local_points:,} points of failing cells computed directly); "
                f"{self.direct_heads} computed directly; "
                f"{self.lattice_nodes:,} lattice nodes evaluated, {self.shared_nodes:,} shared with a neighbour")

    def merge(self, other: FastStats) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(mine, theirs) if f.name == "max_checked_error" else mine + theirs)


#: Where each touched lattice cell of a call is checked, as fractions of the cell (x, y): its centre,
#: where tensor-product interpolation errs most, and the midpoints of its four edges, where the error
#: of one axis alone peaks (shared with the neighbouring cells, so evaluated once). Centres alone
#: were tried: they miss edge errors of a lattice far too coarse (tests/test_fast_mode.py).
CHECK_FRACTIONS: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.5, 0.0), (0.0, 0.5), (1.0, 0.5), (0.5, 1.0))
#: The planner's probe points per lattice cell: the same.
PROBE_FRACTIONS = CHECK_FRACTIONS


def check_points(lonlat: npt.NDArray[np.float64], spacing: float,
                 fractions: tuple[tuple[float, float], ...] = CHECK_FRACTIONS) -> npt.NDArray[np.float64]:
    """(c, 2) (lon, lat) check points (``fractions`` of each cell) of the lattice cells holding the points.

    Sorted by column, then row; a point shared by neighbouring cells (an edge midpoint) appears once.
    """
    x = np.floor((lonlat[:, 0] + 180.0) / spacing).astype(np.int64)
    y = np.floor((lonlat[:, 1] + 90.0) / spacing).astype(np.int64)
    # the fractions are multiples of 1/2: points on the half-spacing lattice, one int64 key each
    # (unique on pairs of floats is ~50x slower on a 65k-point tile)
    half = np.array([(round(2 * fx), round(2 * fy)) for fx, fy in fractions], dtype=np.int64)
    if np.any(np.abs(half / 2.0 - np.array(fractions)) > 1e-12):
        raise ValueError(f"check fractions must be multiples of 1/2, got {fractions}")
    rows = check_spacing(spacing) + 8  # > the largest half-step row key, 360/h + 4 (fraction 1 at lat 90°)
    cells = np.unique((2 * x + 2) * rows + 2 * y + 2)
    keys = np.unique((cells[:, None] + half[:, 0] * rows + half[:, 1]).reshape(-1))
    px, py = keys // rows - 2, keys % rows - 2
    lon = (-180.0 + px * (spacing / 2.0) + 180.0) % 360.0 - 180.0
    lat = np.clip(-90.0 + py * (spacing / 2.0), -90.0, 90.0)
    return np.stack([lon, lat], axis=1)


def points_in_failing_cells(lonlat: npt.NDArray[np.float64], check_lonlat: npt.NDArray[np.float64],
                            failing: npt.NDArray[np.bool_], spacing: float) -> npt.NDArray[np.bool_]:
    """(n,) which points lie in a lattice cell that one of its failing check points belongs to.

    Check points lie on the half-spacing lattice (:func:`check_points`): a centre belongs to one cell,
    an edge midpoint to the two cells that share the edge. Cells are indexed as :func:`check_points`
    indexes them (floor of the point over the spacing; columns wrap at the antimeridian).
    """
    columns = check_spacing(spacing)
    rows = columns + 8  # > any row index, poles included
    px = np.round((check_lonlat[failing, 0] + 180.0) / (spacing / 2.0)).astype(np.int64) % (2 * columns)
    py = np.round((check_lonlat[failing, 1] + 90.0) / (spacing / 2.0)).astype(np.int64)
    # a half-step index 2i+1 lies inside cell i; 2i on the border of cells i-1 and i
    xs = [((px - 1) // 2) % columns, (px // 2) % columns]
    ys = [(py - 1) // 2, py // 2]
    bad = np.unique(np.concatenate([x * rows + y + 2 for x in xs for y in ys]))
    x = np.floor((lonlat[:, 0] + 180.0) / spacing).astype(np.int64) % columns
    y = np.floor((lonlat[:, 1] + 90.0) / spacing).astype(np.int64)
    return np.isin(x * rows + y + 2, bad)


#: Check points of a call's lattice cells, (c, 2) degrees, and a head interpolated there, (c, C).
Checkpoints = tuple[npt.NDArray[np.float64], torch.Tensor]


class FastRetriever:
    """Embeds with a :class:`FastPlan` over an exact retrieval's database (same device, dtype and heads).

    Args:
        context: the exact retrieval (its database rows, query features and variant are reused).
        plan: the approximations to apply.
        stages: where to add the seconds of each stage (``<head>: lattice nodes`` / ``interpolation`` /
            ``checks`` / ``direct``); a new :class:`StageTimes` by default.
    """

    def __init__(self, context: RetrievalContext, plan: FastPlan, stages: StageTimes | None = None) -> None:
        self.context = context
        self.plan = plan
        self.stats = FastStats()
        self.stages = StageTimes() if stages is None else stages
        # (head, spacing) -> (sorted node keys, (U, C) values, call number that last used each node)
        self._nodes: dict[tuple[str, float], tuple[npt.NDArray[np.int64], torch.Tensor, npt.NDArray[np.int64]]] = {}
        self._calls = 0
        # head -> finer spacing a per-call check moved to: later calls (neighbouring tiles) start there
        self._refined: dict[str, float] = {}
        db = context.db
        basis = plan.basis
        # the coefficients and sketches are kept with the rows (DeviceDatabase.derived): the planner's
        # retrievers and the run's encoder in one process make each once
        self.db = db if basis is None else db.derived(("pca", basis.key), lambda: db.with_values(
            _projected(db.values_aug, basis.rank, basis.coefficients)))
        self.sketch = ErrorSketch.for_width(int(self.db.values_aug.shape[1]) - 1)

    @property
    def sketch_db(self) -> DeviceDatabase:
        """The rows with sketched values ``[V·R | 1]`` (M, r + 1) (the full values when there is no sketch)."""
        sketch, db = self.sketch, self.db
        if sketch is None:
            return db
        return db.derived(("sketch", sketch.key), lambda: db.with_values(
            _projected(db.values_aug, sketch.dim, sketch.project)))

    def sketched(self, x: torch.Tensor) -> torch.Tensor:
        """(…, r) sketch of (…, C) head averages (themselves without a sketch)."""
        return x if self.sketch is None else self.sketch.project(x)

    def _retrieve(self, heads: tuple[str, ...], q_hat: torch.Tensor, xyz: torch.Tensor,
                  settings: RetrievalSettings, stage: str | None = None, sketched: bool = False) -> list[torch.Tensor]:
        """(n, C) exact averages of ``heads``, or (n, r) of their sketches."""
        with self.stages.stage(stage or f"{'+'.join(heads)}: direct"):
            return retrieve_averages(self.sketch_db if sketched else self.db, heads, q_hat, xyz, settings)

    def sketched_exact(self, head: str, lonlat: npt.NDArray[np.float64], settings: RetrievalSettings) -> torch.Tensor:
        """(n, r) sketch of the exact ``head`` at the points (the planner's probes)."""
        q, xyz = self.context.features(lonlat)
        (exact,) = self._retrieve((head,), q, xyz, settings, f"{head}: probes", sketched=True)
        return exact

    def _node_values(self, head: str, stencils: Stencils, settings: RetrievalSettings,
                     sketched: bool = False) -> torch.Tensor:
        """(U, C) exact ``head`` at the stencils' nodes (or (U, r) sketches): reused from earlier calls where
        they overlap."""
        self._calls += 1
        keys = stencils.keys
        db = self.sketch_db if sketched else self.db
        cache_key = (f"{head} sketch" if sketched else head, stencils.spacing)
        cached = self._nodes.get(cache_key)
        width = int(db.values_aug.shape[1]) - 1
        values = torch.empty((len(keys), width), dtype=db.dtype, device=db.device)
        hit = np.zeros(len(keys), dtype=bool)
        if cached is not None:
            old_keys, old_values, _ = cached
            pos = np.minimum(np.searchsorted(old_keys, keys), len(old_keys) - 1)
            hit = old_keys[pos] == keys
            if hit.any():
                values[torch.from_numpy(np.flatnonzero(hit))] = old_values[torch.from_numpy(pos[hit])]
        new = np.flatnonzero(~hit)
        if len(new):
            node_q, node_xyz = self.context.features(stencils.nodes[new])
            (values[torch.from_numpy(new)],) = self._retrieve(
                (head,), node_q, node_xyz, settings, f"{head}: {'probes' if sketched else 'lattice nodes'}", sketched)
        if not sketched:
            self.stats.lattice_nodes += len(new)
            self.stats.shared_nodes += int(hit.sum())
        self._remember(cache_key, keys, values, cached)
        return values

    def _remember(self, cache_key: tuple[str, float], keys: npt.NDArray[np.int64], values: torch.Tensor,
                  cached: tuple[npt.NDArray[np.int64], torch.Tensor, npt.NDArray[np.int64]] | None) -> None:
        """Keep this call's nodes and, within :data:`NODE_CACHE_BYTES`, the most recently used older ones."""
        limit = NODE_CACHE_BYTES // max(1, values.element_size() * values.shape[1])
        if len(keys) >= limit:
            self._nodes.pop(cache_key, None)
            return
        used = np.full(len(keys), self._calls, dtype=np.int64)
        if cached is not None:
            old_keys, old_values, old_used = cached
            older = np.flatnonzero(~np.isin(old_keys, keys))
            older = older[np.argsort(old_used[older], kind="stable")[::-1][: limit - len(keys)]]
            keys = np.concatenate([keys, old_keys[older]])
            values = torch.cat([values, old_values[torch.from_numpy(older)]])
            used = np.concatenate([used, old_used[older]])
            order = np.argsort(keys)
            keys, used, values = keys[order], used[order], values[torch.from_numpy(order)]
        self._nodes[cache_key] = (keys, values, used)

    def _interpolate(self, head: str, stencils: Stencils, settings: RetrievalSettings) -> torch.Tensor:
        """(n, C) ``head`` at the stencils' queries, from exact values at their lattice nodes."""
        node_avg = self._node_values(head, stencils, settings)
        with self.stages.stage(f"{head}: interpolation"):
            return interpolate(node_avg, stencils)

    def interpolated(self, head: str, spacing: float, lonlat: npt.NDArray[np.float64],
                     settings: RetrievalSettings) -> torch.Tensor:
        """(n, C) ``head`` at the points, interpolated from exact values on the lattice of ``spacing``."""
        return self._interpolate(head, lattice_stencils(lonlat, spacing), settings)

    def sketched_interpolated(self, head: str, spacing: float, lonlat: npt.NDArray[np.float64],
                              settings: RetrievalSettings) -> torch.Tensor:
        """(n, r) sketch of :meth:`interpolated` (interpolation is linear: the sketches of the nodes, interpolated)."""
        stencils = lattice_stencils(lonlat, spacing)
        node_avg = self._node_values(head, stencils, settings, sketched=True)
        with self.stages.stage(f"{head}: interpolation"):
            return interpolate(node_avg, stencils)

    def _checked_lattice(self, head: str, spacing: float, lonlat: npt.NDArray[np.float64],
                         settings: RetrievalSettings) -> tuple[torch.Tensor, Checkpoints] | None:
        """``head`` interpolated at the points and at the check points of their cells (one node set);
        None when nodes and check points would cost about as much as the points computed directly."""
        with self.stages.stage(f"{head}: interpolation"):
            points = check_points(lonlat, spacing)
            stencils = lattice_stencils(np.concatenate([lonlat, points]), spacing)
        if not self._lattice_pays(head, len(lonlat), self._unshared(head, stencils), len(points)):
            return None
        values = self._interpolate(head, stencils, settings)
        return values[: len(lonlat)], (points, values[len(lonlat) :])

    def _unshared(self, head: str, stencils: Stencils) -> int:
        """Nodes of the stencils not kept from an earlier call (what the lattice would evaluate)."""
        cached = self._nodes.get((head, stencils.spacing))
        if cached is None:
            return len(stencils.keys)
        old_keys = cached[0]
        pos = np.minimum(np.searchsorted(old_keys, stencils.keys), len(old_keys) - 1)
        return int((old_keys[pos] != stencils.keys).sum())

    def _lattice_pays(self, head: str, points: int, nodes: int, checks: int) -> bool:
        """Whether the lattice's exact evaluations (nodes, and sketched checks) cost less than ``points`` direct ones.

        With the per-point costs the planner measured: a node pays for its features and the head, a
        check point for its features and the sketched head, a point computed directly only for the head
        (its features are needed anyway). Without them, the count rule :data:`LATTICE_COST_RATIO`, a
        check point counted at :meth:`check_share` of a node.
        """
        costs = self.plan.costs
        head_cost = costs.get(f"head:{head}")
        if head_cost is None or "features" not in costs:
            return nodes + self.check_share(head) * checks < LATTICE_COST_RATIO * points
        check_cost = costs.get(f"check:{head}", head_cost)
        lattice = (2 * costs.get("features_call", 0.0) + nodes * (costs["features"] + head_cost)
                   + checks * (costs["features"] + check_cost) + points * costs.get("interpolation", 0.0))
        return lattice < points * head_cost

    def check_share(self, head: str) -> float:
        """A check point's cost relative to a lattice node's, by FLOPs per (point, row) (1 without a sketch)."""
        return check_share(head, self.db.keys.shape[1], int(self.db.values_aug.shape[1]) - 1,
                           None if self.sketch is None else self.sketch.dim)

    def _check(self, head: str, checks: Checkpoints, settings: RetrievalSettings, weights: torch.Tensor,
               norms: torch.Tensor, budget: float) -> float:
        """Largest relative error of the interpolated ``head`` over the check points (see :meth:`_check_errors`)."""
        return float(self._check_errors(head, checks, settings, weights, norms, budget)[0].max())

    def _check_errors(self, head: str, checks: Checkpoints, settings: RetrievalSettings, weights: torch.Tensor,
                      norms: torch.Tensor, budget: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Relative error of the interpolated ``head`` at each check point of the call's cells, and which fail.

        Every check point is evaluated on the error sketch; the sketched error decides where it is
        clearly within (or clearly above) the budget, and the points in between are evaluated in full,
        also when some point is clearly above: a failing check point sends the points of its cells (16 per
        cell of a 1° lattice on a 0.25° grid) to be computed directly, and one full evaluation decides it.
        (Counting them as failing instead sent 6,935 points of the L = 40 benchmark's 0.25° Africa run,
        15 %, to be computed directly, most of them for check points within the budget in full: 881
        with them decided, the fast run 46.3 -> 33.4 s.)

        Args:
            checks: the check points and the interpolated values there.
            weights: (B,) the head's weight at each β.
            norms: (B,) the smallest embedding norm of the call's points at each β.
            budget: the error the head may have.

        Returns:
            (c,) float64 errors (in full where a point was evaluated in full, else as sketched) and (c,)
            bool failing; the call passes when none fails.
        """
        points, approx = checks
        q, xyz = self.context.features(points)
        scale = float((weights / norms).max())
        # an orthonormal PCA basis keeps norms: the coefficient error is the value error
        (exact,) = self._retrieve((head,), q, xyz, settings, f"{head}: checks", sketched=self.sketch is not None)
        errors = (self.sketched(approx) - exact).double().norm(dim=1) * scale
        self.stats.checked_points += len(points)
        if self.sketch is None:
            return errors, errors > budget
        clearly = errors > SKETCH_SCREEN * budget
        undecided = (errors * SKETCH_SCREEN > budget) & ~clearly
        where = torch.nonzero(undecided).flatten()
        if len(where):
            (full,) = self._retrieve((head,), q[where], xyz[where], settings, f"{head}: checks")
            self.stats.rechecked_points += len(where)
            errors[where] = (approx[where] - full).double().norm(dim=1) * scale
        return errors, errors > budget

    def _local_is_cheaper(self, head: str, local: int, lonlat: npt.NDArray[np.float64], finer: float | None) -> bool:
        """Whether computing ``local`` points directly costs less than the whole call on the ``finer`` lattice."""
        if finer is None:
            return True
        points = check_points(lonlat, finer)
        nodes = lattice_node_count(np.concatenate([lonlat, points]), finer)
        costs = self.plan.costs
        head_cost = costs.get(f"head:{head}")
        if head_cost is None or "features" not in costs:
            return local < nodes + self.check_share(head) * len(points)
        lattice = (nodes * (costs["features"] + head_cost)
                   + len(points) * (costs["features"] + costs.get(f"check:{head}", head_cost)))
        return local * head_cost < lattice

    def embed(
        self, lonlat: npt.NDArray[np.float64], q_hat: torch.Tensor, xyz: torch.Tensor, betas: Sequence[float],
        settings: RetrievalSettings, force: bool = False,
    ) -> torch.Tensor:
        """(B, n, D + K) fast embeddings of one batch of queries (see :meth:`head_averages`)."""
        averages = self.head_averages(lonlat, q_hat, xyz, betas, settings, force)
        return blend_heads(averages, q_hat, betas, self.context.variant, self.reconstruct)

    @property
    def reconstruct(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Maps (n, r) PCA coefficients to (n, D) values; None without a PCA basis."""
        return None if self.plan.basis is None else self.plan.basis.reconstruct

    def head_averages(
        self, lonlat: npt.NDArray[np.float64], q_hat: torch.Tensor, xyz: torch.Tensor, betas: Sequence[float],
        settings: RetrievalSettings, force: bool = False,
    ) -> dict[str, torch.Tensor]:
        """(n, C) averages per head (C = PCA rank or D) of one batch of queries, checked.

        Heads planned for interpolation are interpolated when the lattice costs less than the points;
        each is then checked (:meth:`_check`) against the smallest embedding norm of the call and, if
        the check fails, recomputed at the next finer spacing of the ladder, down to directly.

        Args:
            lonlat: (n, 2) query locations (degrees).
            q_hat, xyz: (n, K) and (n, 3) query features on the device.
            betas: β levels.
            settings: retrieval settings of the run (heads, τ, chunks).
            force: interpolate every planned head at its planned spacing, whatever the density and
                without checks (the planner's measurement of the plan itself).
        """
        variant = self.context.variant
        spacing = {h: min(s, self._refined.get(h, s)) for h, s in self.plan.spacing.items()
                   if h in settings.heads and head_weights(variant, betas, h).max() > 0}
        averages: dict[str, torch.Tensor] = {}
        checks: dict[str, Checkpoints] = {}
        for head, h in list(spacing.items()):
            if force:
                averages[head] = self.interpolated(head, h, lonlat, settings)
                continue
            lattice = self._checked_lattice(head, h, lonlat, settings)
            if lattice is None:
                del spacing[head]
            else:
                averages[head], checks[head] = lattice
        direct = tuple(h for h in settings.heads if h not in averages)
        if direct:
            averages.update(zip(direct, self._retrieve(direct, q_hat, xyz, settings)))
        if force or not spacing:
            self.stats.direct_heads += len(direct)
            return averages
        norms = embedding_norms(averages, q_hat, betas, variant, self.plan.basis).amin(dim=1)  # (B,)
        norms = norms * (1.0 - self.plan.tolerance)  # of the approximation: a little smaller to be safe
        for head, h in spacing.items():
            budget = self.plan.head_budget(head)
            weights = torch.as_tensor(head_weights(variant, betas, head), dtype=torch.float64, device=norms.device)
            while True:
                errors, failing_points = self._check_errors(head, checks[head], settings, weights, norms, budget)
                error = float(errors.max())
                if not bool(failing_points.any()):
                    self.stats.interpolated_heads += 1
                    self.stats.max_checked_error = max(self.stats.max_checked_error, error)
                    if h < self.plan.spacing[head]:
                        # neighbouring cells are alike: the next calls start at the spacing that passed here
                        self._refined[head] = min(h, self._refined.get(head, h))
                    break
                # straight to the spacing predicted to pass (not one ladder step at a time: each try costs
                # a whole lattice), with the slower convergence seen on real heads
                finer = next_spacing(SPACING_LADDER[head], h, error, budget, order=REFINE_ORDER)
                failing = failing_points.cpu().numpy()
                local = points_in_failing_cells(lonlat, checks[head][0], failing, h)
                if self._local_is_cheaper(head, int(local.sum()), lonlat, finer):
                    # a few hard cells (an island, a coast): their points computed directly, the lattice kept
                    # for the cells whose own check points passed; later calls keep this spacing
                    where = torch.from_numpy(np.flatnonzero(local)).to(q_hat.device)
                    (averages[head][where],) = self._retrieve((head,), q_hat[where], xyz[where], settings)
                    self.stats.local_points += int(local.sum())
                    self.stats.interpolated_heads += 1
                    passed = errors[torch.from_numpy(~failing).to(errors.device)]
                    if len(passed):
                        self.stats.max_checked_error = max(self.stats.max_checked_error, float(passed.max()))
                    break
                self.stats.refinements += 1
                lattice = None
                if finer is not None:
                    h = finer
                    lattice = self._checked_lattice(head, h, lonlat, settings)
                if lattice is None:
                    (averages[head],) = self._retrieve((head,), q_hat, xyz, settings)
                    direct += (head,)
                    break
                averages[head], checks[head] = lattice
        self.stats.direct_heads += len(direct)
        return averages


#: What one exponential costs in matrix-product FLOPs (a rough rate for the count rule of ``check_share``).
EXP_FLOPS = 32


def _projected(values_aug: torch.Tensor, width: int, project: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(M, width + 1) ``[project(V) | 1]`` of (M, D + 1) ``[V | 1]``, in row blocks (no (M, D) temporary)."""
    aug = torch.empty((values_aug.shape[0], width + 1), dtype=values_aug.dtype, device=values_aug.device)
    for start in range(0, values_aug.shape[0], 16384):
        aug[start : start + 16384, :-1] = project(values_aug[start : start + 16384, :-1])
    aug[:, -1] = 1.0
    return aug


def check_share(head: str, key_dim: int, width: int, sketch_dim: int | None) -> float:
    """FLOPs per (point, row) of a sketched check of ``head`` relative to an evaluation in full.

    Scores ``2·K`` (semantic) or ``2·3`` (spatial), plus the values product ``2·(C + 1)``, or
    ``2·(r + 1)`` on the sketch; the exponential is counted as :data:`EXP_FLOPS`.
    """
    if sketch_dim is None:
        return 1.0
    scores = 2 * key_dim if head == "sem" else 6
    return (scores + EXP_FLOPS + 2 * (sketch_dim + 1)) / (scores + EXP_FLOPS + 2 * (width + 1))



#: Rows per block of :func:`embedding_norms`' float64 products.
NORM_BLOCK = 1024


def embedding_norms(averages: dict[str, torch.Tensor], q_hat: torch.Tensor, betas: Sequence[float], variant: str,
                    basis: ValueBasis | None) -> torch.Tensor:
    """(B, n) float64 norms of the embeddings ``[H_β | q̂]`` without forming them.

    ``H_β = Σ_h w_h(β)·(μ + c_h·U_rᵀ)`` (or ``Σ_h w_h(β)·a_h`` without a basis), so its squared norm
    comes from the heads' per-point Gram scalars: ``||μ||² + 2 c_β·(U_rᵀμ) + ||c_β||²`` (U_r is
    orthonormal), with ``c_β = Σ_h w_h c_h``. That is O(n·C) work and no (B, n, D) buffer.
    """
    heads = list(averages)
    q_sq = q_hat.double().square().sum(dim=1)
    n = q_sq.shape[0]
    # float64 products in row blocks: whole-call float64 copies of the heads (2 x 115 MB on a 14k-point
    # call at D = 1024) cost 0.2-1.3 s of fresh memory on the grid benchmark, the products themselves ~0.05 s
    products = torch.empty((n, len(heads), len(heads)), dtype=torch.float64, device=q_sq.device)
    if basis is not None:
        offset = torch.as_tensor(basis.components.T @ basis.mean, dtype=torch.float64, device=q_sq.device)
        mean_dots = torch.empty((n, len(heads)), dtype=torch.float64, device=q_sq.device)
        mean_sq = float(np.dot(basis.mean.astype(np.float64), basis.mean.astype(np.float64)))
    for start in range(0, n, NORM_BLOCK):
        block = torch.stack([averages[h][start : start + NORM_BLOCK] for h in heads], dim=1).double()  # (b, H, C)
        products[start : start + NORM_BLOCK] = torch.bmm(block, block.transpose(1, 2))
        if basis is not None:
            mean_dots[start : start + NORM_BLOCK] = block @ offset
    gram = {(h, k): products[:, i, j] for i, h in enumerate(heads) for j, k in enumerate(heads) if j >= i}
    if basis is not None:
        mean_dot = {h: mean_dots[:, i] for i, h in enumerate(heads)}
    out = torch.empty((len(betas), q_sq.shape[0]), dtype=torch.float64, device=q_sq.device)
    for b, beta in enumerate(betas):
        w = {h: float(head_weights(variant, [beta], h)[0]) for h in heads}
        sq = q_sq.clone()
        for (h, k), g in gram.items():
            sq += (1.0 if h == k else 2.0) * w[h] * w[k] * g
        if basis is not None:
            sq += mean_sq + 2.0 * sum(w[h] * mean_dot[h] for h in heads)
        out[b] = sq.clamp_min(0.0).sqrt()
    return out


def retrieve_averages(db: DeviceDatabase, heads: tuple[str, ...], q_hat: torch.Tensor, xyz: torch.Tensor,
                      settings: RetrievalSettings) -> list[torch.Tensor]:
    """(n, C) softmax averages of each of ``heads`` over ``db`` at the queries, in query blocks."""
    # the query block was sized for all the settings' heads: fewer heads fill the same score block with more
    # queries (at most MAX_QUERY_BLOCK, as sized)
    step = max(settings.query_chunk,
               min(MAX_QUERY_BLOCK, settings.query_chunk * len(settings.heads) // max(1, len(heads))))
    settings = replace(settings, heads=heads)
    blocks = [retrieve_partials(q_hat[s : s + step], xyz[s : s + step], db, settings).averages()
              for s in range(0, q_hat.shape[0], step)]
    return list(torch.cat(blocks, dim=1))
