"""Planning the ``fast`` retrieval mode: choose the approximations and validate them.

:func:`plan_fast` measures each approximation of :mod:`range_dist.retrieval.fast.approximations` against the exact
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

Embedding with the plan is :class:`~range_dist.retrieval.fast.retriever.FastRetriever`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import torch

from range_dist.config.values import check_tolerance
from range_dist.errors import ToleranceError
from range_dist.geo.coords import validate_lonlat
from range_dist.retrieval.engine import RetrievalSettings, blend_heads
from range_dist.retrieval.fast.approximations import ValueBasis, fit_value_basis, max_row_residual
from range_dist.retrieval.fast.plan import (
    RANK_LADDER,
    SPACING_LADDER,
    FastPlan,
    head_weights,
    next_spacing,
    rank_errors,
    relative_errors,
)
from range_dist.retrieval.fast.retriever import (
    COMPONENT_SHARE,
    VALIDATION_POINTS,
    FastRetriever,
    RetrievalContext,
    retrieve_averages,
)


def _sample(points: npt.NDArray[np.float64], size: int, seed: int) -> tuple[npt.NDArray[np.float64], ...]:
    """Two disjoint samples (selection, check) of ``size`` points each, or all points twice if too few."""
    if len(points) < 2 * size:
        return points, points
    order = np.random.default_rng(seed).permutation(len(points))
    return points[order[:size]], points[order[size : 2 * size]]


def _exact(context: RetrievalContext, lonlat: npt.NDArray[np.float64], settings: RetrievalSettings,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query features and exact (H, n, D) head averages."""
    q_hat, xyz = context.features(lonlat)
    return q_hat, xyz, torch.stack(retrieve_averages(context.db, settings.heads, q_hat, xyz, settings))


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
    context: RetrievalContext,
    lonlat: npt.ArrayLike,
    betas: Sequence[float],
    tolerance: float,
    validation_points: int = VALIDATION_POINTS,
    seed: int = 0,
) -> FastPlan:
    """Choose the approximations for ``tolerance`` and validate them on the run's own points.

    Args:
        context: the exact retrieval of the run (e.g. ``RangeEncoder.retrieval_context()``).
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
    check_tolerance("fast", tolerance)
    points = validate_lonlat(lonlat)
    betas = tuple(float(b) for b in betas)
    settings = context.settings(betas)
    selection, check = _sample(points, validation_points, seed)
    target = COMPONENT_SHARE * tolerance
    weights = np.stack([head_weights(context.variant, betas, h) for h in settings.heads])  # (H, B)

    with torch.no_grad():
        q_hat, xyz, exact_avg = _exact(context, selection, settings)
        exact_emb = blend_heads(dict(zip(settings.heads, exact_avg)), q_hat, betas, context.variant)
        norms = exact_emb.double().norm(dim=-1)  # (B, n)

        full_basis = fit_value_basis(context.values)
        rank, rank_error = choose_rank(full_basis, exact_avg.cpu(), weights, norms.cpu(), target)
        basis = None if rank is None else full_basis.truncated(rank)
        component_errors = {} if rank is None else {"pca": rank_error}
        plan = FastPlan(tolerance, basis)
        retriever = FastRetriever(context, plan)
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
                f"most {context.db.value_dim // 2} of {context.db.value_dim} dimensions nor any lattice interpolation "
                "fits it; use --mode exact, or a larger --tolerance")

        plan = replace(plan, spacing=spacing, component_errors=component_errors,
                       pca_worst_case=None if basis is None else max_row_residual(context.values, basis))
        q_check, xyz_check, check_avg = _exact(context, check, settings)
        exact_check = blend_heads(dict(zip(settings.heads, check_avg)), q_check, betas, context.variant)
        fast_check = FastRetriever(context, plan).embed(check, q_check, xyz_check, betas, settings, force=True)
        measured = float(relative_errors(fast_check, exact_check).max())
    plan = replace(plan, measured_error=measured, validation_points=len(check))
    if measured > tolerance:
        raise ToleranceError(
            f"fast mode measured a relative error of {measured:.3g} on {len(check)} of this run's points, above "
            f"tolerance {tolerance:g} (plan: {plan.describe()}); use --mode exact, or a larger --tolerance")
    return plan
