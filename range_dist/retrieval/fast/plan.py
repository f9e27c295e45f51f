"""What a ``fast`` run approximates, and the error measured for it (plain data + pure helpers)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from range_dist.retrieval.fast.approximations import TAPS, ValueBasis

#: Share of the tolerance that the PCA truncation may err by (measured on the selection sample).
PCA_SHARE = 0.25
#: Share of the tolerance that the interpolated heads may err by together at their check points. Each
#: head's check weighs its error by the head's weight at every β, and the embedding at a β is the
#: weighted sum of the heads, so its error is at most the sum of the heads' checked errors: a split of
#: this share keeps that bound whatever the parts. A plan without a PCA basis has no truncation error,
#: and its heads get :data:`PCA_SHARE` too (``head_budgets``). The last quarter of the tolerance is
#: headroom for points between check points.
HEADS_SHARE = 0.5
#: The spatial head's part of :data:`HEADS_SHARE` when the semantic head is interpolated too. Its ~9°
#: kernel gives it lattices of 3-4° where the semantic head needs 0.6-0.8°, about 1/20 of the nodes
#: and checks, so the budget buys most where it goes to the semantic head. A lattice's cost goes as
#: error^(-2/p) for error ∝ h^p (p ≈ 5 here), and the split minimising the sum gives each head a part
#: ∝ cost^(p/(p+2)): about a tenth for a cost ratio of 20-30. On the L = 40 benchmark (0.25°, 30°×30°)
#: the spatial head errs 7.1e-5 at 4° and 1.5e-5 at 3° (0.9 s of nodes and checks there, against
#: 13-24 s for the semantic head); the semantic head's 0.45 (with the planner's priced probe margin)
#: moved it from 0.6° to 0.75°, and its 0.675 without a PCA basis (``head_budgets``) to 0.8°.
SPATIAL_PART = 0.1
#: Candidate PCA ranks, smallest first (a rank above D/2 saves too little to be worth its error).
RANK_LADDER = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
#: Candidate lattice spacings (degrees, each divides 360), coarsest first. Steps of at most ~1.33x in
#: the semantic head's usual range: a lattice's cost goes as 1/h², so 0.6° instead of 0.5° saves 30 %
#: of the nodes and checks (on the L = 40 benchmark the semantic head errs 1.2e-4 at 0.6°, 3.6e-4 at
#: 0.75°, 4.6e-4 at 0.8°: 0.75° fits a budget of 4.5e-4 at tolerance 1e-3, 0.8° one of 6.75e-4).
SPACING_LADDER = {
    "geo": (15.0, 12.0, 10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.2, 1.0, 0.75, 0.5, 0.25),
    "sem": (4.0, 3.0, 2.0, 1.5, 1.2, 1.0, 0.8, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05),
}


def candidate_ranks(width: int) -> tuple[int, ...]:
    """The ranks of :data:`RANK_LADDER` a basis of ``width``-wide values is tried at: at most half the width."""
    return tuple(rank for rank in RANK_LADDER if 2 * rank <= width)


@dataclass(frozen=True)
class FastPlan:
    """The approximations of a ``fast`` run, chosen and validated for one tolerance.

    Attributes:
        tolerance: the user's bound on ``||emb_fast - emb_exact|| / ||emb_exact||`` per point and β.
        basis: truncated PCA basis of the values, or None (full values).
        spacing: lattice spacing (degrees) per interpolated head, e.g. ``{"geo": 2.0}``.
        measured_error: largest relative error on the check sample (all β levels); NaN without one (a
            plan of lattices only for a grid run: every call checks its lattice cells instead).
        component_errors: largest relative error of each approximation alone on the selection sample.
        validation_points: points of the check sample (drawn from the run's own points); 0 without one.
        pca_worst_case: ``max_i ||v_i - P_r v_i||``, a bound on the PCA part of the error at any point
            (the embedding norm is at least 1, since q̂ is a unit vector); None without PCA.
        fallback: why the run computes exactly instead (its cost estimate says the fast mode would
            not be faster), or None: the plan is used.
        planning_seconds: wall seconds the planning took.
        estimate: the cost model's predicted seconds (``exact``, ``fast``, ``planning``) for the run.
        costs: per-point seconds measured while planning (``features``, ``exact``, ``head:<name>``,
            ``interpolation``, blends): the retriever's per-call choice between lattice and direct.
    """

    tolerance: float
    basis: ValueBasis | None
    spacing: dict[str, float] = field(default_factory=dict)
    measured_error: float = float("nan")
    component_errors: dict[str, float] = field(default_factory=dict)
    validation_points: int = 0
    pca_worst_case: float | None = None
    fallback: str | None = None
    planning_seconds: float = 0.0
    estimate: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)

    @property
    def value_rank(self) -> int | None:
        return None if self.basis is None else self.basis.rank

    def head_budget(self, head: str) -> float:
        """The largest weighted relative error that a per-call check lets ``head`` err by (its part of
        :data:`HEADS_SHARE`, with :data:`PCA_SHARE` when the plan has no basis, among the plan's interpolated
        heads, times the tolerance)."""
        return head_budgets(sorted(self.spacing), with_basis=self.basis is not None)[head] * self.tolerance

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (cube provenance, run reports)."""
        timing = {"planning_seconds": round(self.planning_seconds, 3),
                  "estimated_seconds": {k: round(v, 3) for k, v in sorted(self.estimate.items())}}
        if self.fallback is not None:
            return {"mode": "exact", "requested_mode": "fast", "tolerance": self.tolerance,
                    "reason": self.fallback, **timing}
        return {
            **timing,
            "mode": "fast",
            "tolerance": self.tolerance,
            "error_metric": "max over points and beta of ||fast - exact||_2 / ||exact||_2",
            # no sample check (a plan of lattices only, in a run whose every call is checked): None, not NaN
            "measured_error": self.measured_error if self.validation_points else None,
            "validation_points": self.validation_points,
            "checked": "every call's lattice cells" if self.spacing else "no per-call check (PCA only)",
            "value_rank": self.value_rank,
            "interpolated_heads": {head: {"spacing_deg": h, "kernel": f"Lagrange {TAPS}x{TAPS} (degree {TAPS - 1})",
                                          "error_budget": self.head_budget(head)}
                                   for head, h in sorted(self.spacing.items())},
            "component_errors": dict(sorted(self.component_errors.items())),
            "pca_worst_case_bound": self.pca_worst_case,
        }


def head_budgets(heads: Sequence[str], with_basis: bool = True) -> dict[str, float]:
    """Share of the tolerance that each of the interpolated ``heads`` may err by in a per-call check.

    The heads share :data:`HEADS_SHARE`, and :data:`PCA_SHARE` too when the plan has no PCA basis
    (``with_basis`` False: no truncation error to leave room for). One head takes all of it; with
    both, the spatial head takes :data:`SPATIAL_PART` of it.
    """
    heads = tuple(heads)
    share = HEADS_SHARE + (0.0 if with_basis else PCA_SHARE)
    if len(heads) <= 1:
        return {h: share for h in heads}
    return {h: share * (SPATIAL_PART if h == "geo" else 1.0 - SPATIAL_PART) for h in heads}


def head_weights(variant: str, betas: Sequence[float], head: str) -> npt.NDArray[np.float64]:
    """(B,) weight of ``head`` in the embedding at each β (RANGE+: 1-β spatial, β semantic)."""
    b = np.asarray(betas, dtype=np.float64)
    if variant == "range":
        return np.ones_like(b) if head == "sem" else np.zeros_like(b)
    return b if head == "sem" else 1.0 - b


def relative_errors(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """(B, n) ``||approx - exact|| / ||exact||`` along the last axis, computed in float64."""
    diff = (approx.double() - exact.double()).norm(dim=-1)
    return diff / exact.double().norm(dim=-1).clamp_min(1e-30)


def rank_errors(
    coefficient_averages: torch.Tensor, weights: npt.NDArray[np.float64], norms: torch.Tensor
) -> torch.Tensor:
    """Relative truncation error of every rank at once (exact, from full-basis coefficients).

    Args:
        coefficient_averages: (H, n, D) softmax averages of ``(V - μ)·U`` per head, full basis U.
        weights: (H, B) weight of each head at each β.
        norms: (B, n) norms of the exact embeddings.

    Returns:
        (D + 1,) float64: entry r is the largest relative error over points and β when only the
        leading r coefficients are kept (the basis is orthonormal, so the error is the tail's norm).
    """
    w = torch.as_tensor(weights, dtype=torch.float64)
    blended = torch.einsum("hb,hnd->bnd", w, coefficient_averages.double())  # (B, n, D)
    tail = blended.square().flip(-1).cumsum(-1).flip(-1)  # tail[..., r] = Σ_{k>=r} c_k²
    tail = torch.cat([tail, torch.zeros_like(tail[..., :1])], dim=-1).sqrt()
    return (tail / norms.double().unsqueeze(-1)).amax(dim=(0, 1))


def next_spacing(ladder: Sequence[float], spacing: float, error: float, target: float,
                 order: float = TAPS, safety: float = 0.9) -> float | None:
    """The coarsest ladder spacing finer than ``spacing`` predicted to meet ``target`` (error ∝ h^order),
    with the prediction times ``safety``."""
    predicted = spacing * (target / error) ** (1.0 / order) * safety if error > 0 else spacing
    finer = [h for h in ladder if h < spacing]
    if not finer:
        return None
    fitting = [h for h in finer if h <= predicted]
    return fitting[0] if fitting else finer[-1]


@dataclass(frozen=True)
class Workload:
    """What a run will ask of the fast mode, for its cost model.

    Attributes:
        points: points the run embeds (all of its calls together).
        call: (n, 2) (lon, lat) degrees of one typical call (e.g. one tile's cells): the lattice
            nodes and check points per call are counted on it.
    """

    points: int
    call: npt.NDArray[np.float64]
    #: (lattice nodes, check points) of ``call`` per spacing, counted once (the planner prices spacings often)
    counts: dict[float, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def calls(self) -> float:
        return self.points / max(1, len(self.call))


def save_plan(plan: FastPlan, path: str | Path, key: str) -> None:
    """Write ``plan`` to an ``.npz`` file, tagged with ``key`` (e.g. a hash of the run's signature)."""
    meta = {k: v for k, v in asdict(plan).items() if k != "basis"}
    arrays: dict[str, Any] = {"meta": np.array(json.dumps({"key": key, **meta}))}
    if plan.basis is not None:
        arrays.update(mean=plan.basis.mean, components=plan.basis.components, explained=plan.basis.explained)
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)  # whole or absent: a crash never leaves half a plan


def load_plan(path: str | Path, key: str) -> FastPlan | None:
    """The plan saved at ``path`` for ``key``, or None (no file, another key, or an unreadable file)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.pop("key", None) != key:
                return None
            basis = None
            if "components" in npz.files:
                basis = ValueBasis(npz["mean"], npz["components"], npz["explained"])
    except (OSError, ValueError, KeyError):
        return None
    return FastPlan(basis=basis, **meta)
