"""The ``fast`` retrieval mode: plan (choose and validate approximations), then embed with them.

:func:`plan_fast` measures each approximation of :mod:`range_dist.retrieval.fast` against the exact
mode on the run's own points and keeps the cheapest that fit the tolerance:

1. The values' PCA rank: the truncation error of every rank comes out of one exact pass on the
   selection sample (the basis is orthonormal, so the error is the norm of the dropped
   coefficients of the weighted averages). The smallest rank within a quarter of the tolerance.
2. Per head, the coarsest lattice spacing whose interpolation error, measured on the selection
   sample, is within a quarter of the tolerance (spacings predicted from error ∝ h^TAPS, then checked).
3. A final check of everything together on a second, disjoint sample of the run's points; the plan
   is refused (``ToleranceError``) when that error exceeds the tolerance, or when no approximation
   fits at all (the fast mode would then only be the exact mode).

The check is a sample bound, not a guarantee for every point; the report says how many points it
saw. The PCA part also has a worst-case bound (``FastPlan.pca_worst_case``).

While embedding, a head is interpolated only for calls whose lattice nodes and check points cost
less than the points themselves (dense grids, tiles); sparse calls compute it directly. Every
interpolated head is then checked in the call: evaluated exactly at the centre and edge midpoints
of each lattice cell holding points, its error relative to the call's smallest embedding norm must
stay within the component share, or the call moves to a finer lattice, down to computing directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from range_dist.coords import validate_lonlat
from range_dist.errors import ConfigError, ToleranceError
from range_dist.retrieval.engine import DeviceDatabase, RetrievalSettings, blend_heads, retrieve_partials
from range_dist.retrieval.fast import (
    Stencils,
    ValueBasis,
    fit_value_basis,
    interpolate,
    lattice_stencils,
    max_row_residual,
)
from range_dist.retrieval.plan import (
    RANK_LADDER,
    SPACING_LADDER,
    FastPlan,
    head_weights,
    next_spacing,
    rank_errors,
    relative_errors,
)

if TYPE_CHECKING:
    from range_dist.encoder import RangeEncoder

#: Share of the tolerance given to each approximation when choosing it (the rest is headroom for
#: their sum and for points outside the sample).
COMPONENT_SHARE = 0.25
#: Interpolate a head in a call only when its lattice nodes and check points number fewer than this
#: many per point (each costs about what a point computed directly costs).
LATTICE_COST_RATIO = 0.8
#: Default size of each of the two validation samples.
VALIDATION_POINTS = 256


@dataclass
class FastStats:
    """What the per-call checks saw (summed over calls).

    Attributes:
        interpolated_heads: (call, head) pairs interpolated and passing their check.
        direct_heads: (call, head) pairs computed directly (sparse points, or a check never passed).
        refinements: checks failed and retried at a finer spacing.
        checked_points: check points evaluated exactly (:data:`CHECK_FRACTIONS` per touched lattice cell).
        max_checked_error: the largest passing check error (relative to the embedding's norm).
    """

    interpolated_heads: int = 0
    direct_heads: int = 0
    refinements: int = 0
    checked_points: int = 0
    max_checked_error: float = 0.0

    def summary(self) -> str:
        return (f"fast mode checks: {self.interpolated_heads} interpolated head(s) passed their per-cell check "
                f"(largest error {self.max_checked_error:.2e}, {self.checked_points:,} points evaluated, "
                f"{self.refinements} refinement(s)); {self.direct_heads} computed directly")

    def merge(self, other: FastStats) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(mine, theirs) if f.name == "max_checked_error" else mine + theirs)


#: Where each touched lattice cell is checked, as fractions of the cell (x, y): its centre, where
#: tensor-product interpolation errs most, and the midpoints of its four edges, where the error of
#: one axis alone peaks (shared with the neighbouring cells, so evaluated once).
CHECK_FRACTIONS = ((0.5, 0.5), (0.5, 0.0), (0.0, 0.5), (1.0, 0.5), (0.5, 1.0))


def check_points(lonlat: npt.NDArray[np.float64], spacing: float) -> npt.NDArray[np.float64]:
    """(c, 2) (lon, lat) check points (:data:`CHECK_FRACTIONS`) of the lattice cells holding the points."""
    cells = np.unique(np.floor(np.stack([(lonlat[:, 0] + 180.0) / spacing, (lonlat[:, 1] + 90.0) / spacing],
                                        axis=1)), axis=0)
    points = np.unique(np.concatenate([cells + np.array(frac) for frac in CHECK_FRACTIONS]), axis=0)
    lon = (-180.0 + points[:, 0] * spacing + 180.0) % 360.0 - 180.0
    lat = np.clip(-90.0 + points[:, 1] * spacing, -90.0, 90.0)
    return np.stack([lon, lat], axis=1)


#: Check points of a call's lattice cells, (c, 2) degrees, and a head interpolated there, (c, C).
Checkpoints = tuple[npt.NDArray[np.float64], torch.Tensor]


class FastRetriever:
    """Embeds with a :class:`FastPlan` over an encoder's database (same device, dtype and heads).

    Args:
        encoder: the exact encoder (its location encoder, database and settings are reused).
        plan: the approximations to apply.
    """

    def __init__(self, encoder: RangeEncoder, plan: FastPlan) -> None:
        self.encoder = encoder
        self.plan = plan
        self.stats = FastStats()
        db = encoder.db
        if plan.basis is None:
            self.db = db
        else:
            coefficients = plan.basis.coefficients(db.values_aug[:, :-1])
            aug = torch.empty((db.rows, plan.basis.rank + 1), dtype=db.dtype, device=db.device)
            aug[:, :-1] = coefficients
            aug[:, -1] = 1.0
            self.db = db.with_values(aug)

    def _retrieve(self, heads: tuple[str, ...], q_hat: torch.Tensor, xyz: torch.Tensor,
                  settings: RetrievalSettings) -> list[torch.Tensor]:
        return retrieve_averages(self.db, heads, q_hat, xyz, settings)

    def _interpolate(self, head: str, stencils: Stencils, settings: RetrievalSettings) -> torch.Tensor:
        """(n, C) ``head`` at the stencils' queries, from exact values at their lattice nodes."""
        node_q, node_xyz = self.encoder.query_features(stencils.nodes)
        (node_avg,) = self._retrieve((head,), node_q, node_xyz, settings)
        return interpolate(node_avg, stencils)

    def interpolated(self, head: str, spacing: float, lonlat: npt.NDArray[np.float64],
                     settings: RetrievalSettings) -> torch.Tensor:
        """(n, C) ``head`` at the points, interpolated from exact values on the lattice of ``spacing``."""
        return self._interpolate(head, lattice_stencils(lonlat, spacing), settings)

    def _checked_lattice(self, head: str, spacing: float, lonlat: npt.NDArray[np.float64],
                         settings: RetrievalSettings) -> tuple[torch.Tensor, Checkpoints] | None:
        """``head`` interpolated at the points and at the check points of their cells (one node set);
        None when nodes and check points would cost about as much as the points computed directly."""
        points = check_points(lonlat, spacing)
        stencils = lattice_stencils(np.concatenate([lonlat, points]), spacing)
        if len(stencils.nodes) + len(points) >= LATTICE_COST_RATIO * len(lonlat):
            return None
        values = self._interpolate(head, stencils, settings)
        return values[: len(lonlat)], (points, values[len(lonlat) :])

    def _check(self, head: str, checks: Checkpoints, settings: RetrievalSettings, weights: torch.Tensor,
               norms: torch.Tensor) -> float:
        """Largest relative error of the interpolated ``head`` over the check points of the call's cells.

        Args:
            checks: the check points and the interpolated values there.
            weights: (B,) the head's weight at each β.
            norms: (B,) the smallest embedding norm of the call's points at each β.
        """
        points, approx = checks
        q, xyz = self.encoder.query_features(points)
        (exact,) = self._retrieve((head,), q, xyz, settings)
        self.stats.checked_points += len(points)
        # an orthonormal PCA basis keeps norms: the coefficient error is the value error
        worst = float((approx - exact).double().norm(dim=1).max())
        return float((weights * worst / norms).max())

    def embed(
        self, lonlat: npt.NDArray[np.float64], q_hat: torch.Tensor, xyz: torch.Tensor, betas: Sequence[float],
        settings: RetrievalSettings, force: bool = False,
    ) -> torch.Tensor:
        """(B, n, D + K) fast embeddings of one batch of queries (see :meth:`head_averages`)."""
        averages = self.head_averages(lonlat, q_hat, xyz, betas, settings, force)
        return blend_heads(averages, q_hat, betas, self.encoder.variant, self.reconstruct)

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
        variant = self.encoder.variant
        spacing = {h: s for h, s in self.plan.spacing.items()
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
        budget = COMPONENT_SHARE * self.plan.tolerance
        for head, h in spacing.items():
            weights = torch.as_tensor(head_weights(variant, betas, head), dtype=torch.float64, device=norms.device)
            finer = [x for x in SPACING_LADDER[head] if x < h]
            while True:
                error = self._check(head, checks[head], settings, weights, norms)
                if error <= budget:
                    self.stats.interpolated_heads += 1
                    self.stats.max_checked_error = max(self.stats.max_checked_error, error)
                    break
                self.stats.refinements += 1
                lattice = self._checked_lattice(head, finer.pop(0), lonlat, settings) if finer else None
                if lattice is None:
                    (averages[head],) = self._retrieve((head,), q_hat, xyz, settings)
                    direct += (head,)
                    break
                averages[head], checks[head] = lattice
        self.stats.direct_heads += len(direct)
        return averages


def embedding_norms(averages: dict[str, torch.Tensor], q_hat: torch.Tensor, betas: Sequence[float], variant: str,
                    basis: ValueBasis | None) -> torch.Tensor:
    """(B, n) float64 norms of the embeddings ``[H_β | q̂]`` without forming them.

    ``H_β = Σ_h w_h(β)·(μ + c_h·U_rᵀ)`` (or ``Σ_h w_h(β)·a_h`` without a basis), so its squared norm
    comes from the heads' per-point Gram scalars: ``||μ||² + 2 c_β·(U_rᵀμ) + ||c_β||²`` (U_r is
    orthonormal), with ``c_β = Σ_h w_h c_h``. That is O(n·C) work and no (B, n, D) buffer.
    """
    heads = list(averages)
    a = {h: averages[h].double() for h in heads}
    gram = {(h, k): (a[h] * a[k]).sum(dim=1) for i, h in enumerate(heads) for k in heads[i:]}
    q_sq = q_hat.double().square().sum(dim=1)
    if basis is not None:
        offset = torch.as_tensor(basis.components.T @ basis.mean, dtype=torch.float64, device=q_sq.device)
        mean_dot = {h: a[h] @ offset for h in heads}
        mean_sq = float(np.dot(basis.mean.astype(np.float64), basis.mean.astype(np.float64)))
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
    settings = replace(settings, heads=heads)
    step = settings.query_chunk
    blocks = [retrieve_partials(q_hat[s : s + step], xyz[s : s + step], db, settings).averages()
              for s in range(0, q_hat.shape[0], step)]
    return list(torch.cat(blocks, dim=1))


def _sample(points: npt.NDArray[np.float64], size: int, seed: int) -> tuple[npt.NDArray[np.float64], ...]:
    """Two disjoint samples (selection, check) of ``size`` points each, or all points twice if too few."""
    if len(points) < 2 * size:
        return points, points
    order = np.random.default_rng(seed).permutation(len(points))
    return points[order[:size]], points[order[size : 2 * size]]


def _exact(encoder: RangeEncoder, lonlat: npt.NDArray[np.float64], settings: RetrievalSettings,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query features and exact (H, n, D) head averages."""
    q_hat, xyz = encoder.query_features(lonlat)
    return q_hat, xyz, torch.stack(retrieve_averages(encoder.db, settings.heads, q_hat, xyz, settings))


def choose_rank(
    basis: ValueBasis, averages: torch.Tensor, weights: npt.NDArray[np.float64], norms: torch.Tensor, target: float,
) -> tuple[int | None, float]:
    """Smallest ladder rank whose measured truncation error is within ``target`` (None: none fits)."""
    mean = torch.as_tensor(basis.mean, dtype=torch.float64)
    coefficients = (averages.double() - mean) @ torch.as_tensor(basis.components, dtype=torch.float64)
    errors = rank_errors(coefficients, weights, norms)
    for rank in RANK_LADDER:
        if rank <= basis.components.shape[0] // 2 and float(errors[rank]) <= target:
            return rank, float(errors[rank])
    return None, 0.0


def plan_fast(
    encoder: RangeEncoder,
    lonlat: npt.ArrayLike,
    betas: Sequence[float],
    tolerance: float,
    validation_points: int = VALIDATION_POINTS,
    seed: int = 0,
) -> FastPlan:
    """Choose the approximations for ``tolerance`` and validate them on the run's own points.

    Args:
        encoder: the exact encoder of the run.
        lonlat: (N, 2) the run's points (or a sample of them), degrees.
        betas: the run's β levels.
        tolerance: largest accepted ``||fast - exact|| / ||exact||`` per point and β (e.g. 1e-3).
        validation_points: size of each of the two disjoint samples (selection, final check).
        seed: sampling seed.

    Returns:
        The plan, with its measured error.

    Raises:
        ConfigError: a tolerance outside (0, 1).
        ToleranceError: the tolerance is not met, or nothing can be approximated within it.
    """
    if not 0.0 < float(tolerance) < 1.0:
        raise ConfigError(f"tolerance={tolerance!r}: expected a relative error in (0, 1), e.g. 1e-3")
    points = validate_lonlat(lonlat)
    betas = tuple(float(b) for b in betas)
    settings = encoder.settings(betas)
    selection, check = _sample(points, validation_points, seed)
    target = COMPONENT_SHARE * tolerance
    weights = np.stack([head_weights(encoder.variant, betas, h) for h in settings.heads])  # (H, B)

    with torch.no_grad():
        q_hat, xyz, exact_avg = _exact(encoder, selection, settings)
        exact_emb = blend_heads(dict(zip(settings.heads, exact_avg)), q_hat, betas, encoder.variant)
        norms = exact_emb.double().norm(dim=-1)  # (B, n)

        full_basis = fit_value_basis(encoder.database.values)
        rank, rank_error = choose_rank(full_basis, exact_avg.cpu(), weights, norms.cpu(), target)
        basis = None if rank is None else full_basis.truncated(rank)
        component_errors = {} if rank is None else {"pca": rank_error}
        plan = FastPlan(tolerance, basis)
        retriever = FastRetriever(encoder, plan)
        # reference for the interpolation error: the exact heads in the same (truncated) basis
        reference = retriever._retrieve(settings.heads, q_hat, xyz, settings)

        spacing: dict[str, float] = {}
        for h_index, head in enumerate(settings.heads):
            weight = torch.as_tensor(weights[h_index], dtype=torch.float64, device=norms.device)
            if float(weight.max()) == 0.0:
                continue
            ladder = SPACING_LADDER[head]
            step: float | None = ladder[0]
            while step is not None:
                # an orthonormal PCA basis keeps norms: the coefficient error is the value error
                diff = retriever.interpolated(head, step, selection, settings) - reference[h_index]
                error = float((weight[:, None] * diff.double().norm(dim=-1)[None, :] / norms).max())
                if error <= target:
                    spacing[head] = step
                    component_errors[f"interpolation_{head}"] = error
                    break
                step = next_spacing(ladder, step, error, target)

        if basis is None and not spacing:
            raise ToleranceError(
                f"fast mode cannot meet tolerance {tolerance:g} on this run's points: neither a PCA basis of at "
                f"most {encoder.db.value_dim // 2} of {encoder.db.value_dim} dimensions nor any lattice interpolation "
                "fits it; use --mode exact, or a larger --tolerance")

        plan = replace(plan, spacing=spacing, component_errors=component_errors,
                       pca_worst_case=None if basis is None else max_row_residual(encoder.database.values, basis))
        q_check, xyz_check, check_avg = _exact(encoder, check, settings)
        exact_check = blend_heads(dict(zip(settings.heads, check_avg)), q_check, betas, encoder.variant)
        fast_check = FastRetriever(encoder, plan).embed(check, q_check, xyz_check, betas, settings, force=True)
        measured = float(relative_errors(fast_check, exact_check).max())
    plan = replace(plan, measured_error=measured, validation_points=len(check))
    if measured > tolerance:
        raise ToleranceError(
            f"fast mode measured a relative error of {measured:.3g} on {len(check)} of this run's points, above "
            f"tolerance {tolerance:g} (plan: {plan.describe()}); use --mode exact, or a larger --tolerance")
    return plan

