"""The ``fast`` retrieval mode at embedding time: :class:`FastRetriever` applies a validated :class:`FastPlan`.

It needs no encoder, only a :class:`RetrievalContext`: the exact retrieval's rows on their device,
its query featurisation, variant and settings (a :class:`~range_dist.retrieval.encoder.RangeEncoder`
gives one with ``retrieval_context()``).

While embedding, a head is interpolated only for calls whose lattice nodes and check points cost
less than the points themselves (dense grids, tiles); sparse calls compute it directly. Every
interpolated head is then checked in the call: evaluated exactly at the centre and edge midpoints
of each lattice cell holding points, its error relative to the call's smallest embedding norm must
stay within the component share, or the call moves to a finer lattice, down to computing directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt
import torch

from range_dist.retrieval.engine import DeviceDatabase, RetrievalSettings, blend_heads, retrieve_partials
from range_dist.retrieval.fast.approximations import (
    Stencils,
    ValueBasis,
    interpolate,
    lattice_stencils,
)
from range_dist.retrieval.fast.plan import SPACING_LADDER, FastPlan, head_weights

#: Share of the tolerance given to each approximation when choosing it (the rest is headroom for
#: their sum and for points outside the sample).
COMPONENT_SHARE = 0.25
#: Interpolate a head in a call only when its lattice nodes and check points number fewer than this
#: many per point (each costs about what a point computed directly costs).
LATTICE_COST_RATIO = 0.8
#: Default size of each of the two validation samples.
VALIDATION_POINTS = 256


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
    """Embeds with a :class:`FastPlan` over an exact retrieval's database (same device, dtype and heads).

    Args:
        context: the exact retrieval (its database rows, query features and variant are reused).
        plan: the approximations to apply.
    """

    def __init__(self, context: RetrievalContext, plan: FastPlan) -> None:
        self.context = context
        self.plan = plan
        self.stats = FastStats()
        db = context.db
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
        node_q, node_xyz = self.context.features(stencils.nodes)
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
        q, xyz = self.context.features(points)
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
