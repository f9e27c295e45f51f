"""Approximations behind the ``fast`` retrieval mode (pure: arrays in, arrays out).

Two approximations, each with an error that the planner (:mod:`range_dist.retrieval.fast.planner`)
measures against the exact mode before a run:

* **A truncated PCA basis of the values.** With ``V ≈ μ + C_r U_rᵀ`` (U_r orthonormal, D×r), the
  softmax-weighted average of V is ``μ + (A·C_r)·U_rᵀ``, since the weights sum to one. The values
  product then costs 2(r+1) instead of 2(D+1) FLOPs per (query, row). Its error at one query is
  the norm of the weighted average of the discarded coefficients, which is at most the largest
  row residual ``max_i ||v_i - P_r v_i||`` (convexity of the norm) and usually far smaller.
* **Interpolation of a head on a lat/lon lattice.** Each head is a smooth function of location
  alone (the spatial head is a ~9° kernel at τ_geo = 40). It is evaluated exactly on the lattice
  nodes around the queries and interpolated with tensor-product Lagrange polynomials of
  :data:`TAPS` nodes per axis (error O(h^TAPS) in the spacing h: 6 taps, quintic, let the lattice be
  about three times as coarse as cubic Catmull-Rom at 1e-3 for the semantic head of random-weight
  SatCLIP L = 40: 0.75° against 0.25°).
  Lattice rows beyond a pole are the meridian continued through the pole (lat 90°+δ at lon λ is
  the point 90°-δ at λ+180°), and longitudes wrap, so poles and the antimeridian need no special
  case.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

#: Lattice nodes per axis of a query's stencil (even): Lagrange interpolation of degree TAPS - 1.
TAPS = 6
#: Lattice nodes per query stencil.
STENCIL = TAPS * TAPS
#: Stencil offsets from the node below/left of the query: -2 … 3 for 6 taps.
OFFSETS = np.arange(-(TAPS // 2 - 1), TAPS // 2 + 1)


@dataclass(frozen=True)
class ValueBasis:
    """An orthonormal basis of the values, by decreasing variance.

    Attributes:
        mean: (D,) float32 mean value row μ.
        components: (D, R) float32 orthonormal columns (principal directions).
        explained: (R,) float64 variance along each column.
    """

    mean: npt.NDArray[np.float32]
    components: npt.NDArray[np.float32]
    explained: npt.NDArray[np.float64]

    @property
    def rank(self) -> int:
        return int(self.components.shape[1])

    def truncated(self, rank: int) -> ValueBasis:
        """The leading ``rank`` directions."""
        return ValueBasis(self.mean, np.ascontiguousarray(self.components[:, :rank]), self.explained[:rank])

    def coefficients(self, values: torch.Tensor) -> torch.Tensor:
        """(M, r) coefficients ``(V - μ)·U_r`` of (M, D) values, on the values' device and dtype."""
        mean = torch.as_tensor(self.mean, device=values.device, dtype=values.dtype)
        comps = torch.as_tensor(self.components, device=values.device, dtype=values.dtype)
        return (values - mean) @ comps

    def reconstruct(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(..., D) values ``μ + c·U_rᵀ`` from (..., r) coefficients."""
        mean = torch.as_tensor(self.mean, device=coefficients.device, dtype=coefficients.dtype)
        comps = torch.as_tensor(self.components, device=coefficients.device, dtype=coefficients.dtype)
        return torch.addmm(mean, coefficients.reshape(-1, comps.shape[1]), comps.T).reshape(
            *coefficients.shape[:-1], comps.shape[0])


def fit_value_basis(values: npt.NDArray[np.floating], rows_per_block: int = 16384) -> ValueBasis:
    """Principal directions of the value rows (covariance accumulated in float64, blockwise).

    Args:
        values: (M, D) value rows.
        rows_per_block: rows per covariance block (bounds the float64 temporaries).

    Returns:
        The full basis (R = D), largest variance first. Eigenvectors' signs are arbitrary, which
        does not matter: only the projector ``U_r U_rᵀ`` enters the results.
    """
    v = np.asarray(values)
    mean = v.mean(axis=0, dtype=np.float64)
    cov = np.zeros((v.shape[1], v.shape[1]), dtype=np.float64)
    for start in range(0, len(v), rows_per_block):
        block = v[start : start + rows_per_block].astype(np.float64) - mean
        cov += block.T @ block
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    return ValueBasis(mean.astype(np.float32), np.ascontiguousarray(eigvec[:, order], dtype=np.float32),
                      np.maximum(eigval[order], 0.0) / max(1, len(v)))


def max_row_residual(values: npt.NDArray[np.floating], basis: ValueBasis, rows_per_block: int = 16384) -> float:
    """``max_i ||v_i - P_r v_i||``: a bound on the truncation error of any weighted average."""
    worst = 0.0
    comps = basis.components.astype(np.float64)
    for start in range(0, len(values), rows_per_block):
        x = np.asarray(values[start : start + rows_per_block], dtype=np.float64) - basis.mean
        residual = x - (x @ comps) @ comps.T
        worst = max(worst, float(np.sqrt((residual**2).sum(axis=1)).max()))
    return worst


def lagrange_weights(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(n, TAPS) Lagrange weights of the nodes at :data:`OFFSETS` for fractions t ∈ [0, 1) (rows sum to 1)."""
    weights = np.ones((len(t), TAPS))
    for k, xk in enumerate(OFFSETS):
        for xj in OFFSETS:
            if xj != xk:
                weights[:, k] *= (t - xj) / (xk - xj)
    return weights


@dataclass(frozen=True)
class Stencils:
    """Interpolation stencils of some queries on a lattice.

    Attributes:
        spacing: lattice spacing in degrees (360 / spacing is an integer).
        nodes: (U, 2) float64 (lon, lat) of the distinct lattice nodes used.
        index: (n, STENCIL) int64 rows of ``nodes`` for each query's TAPS × TAPS stencil.
        weights: (n, STENCIL) float32 Lagrange weights (each row sums to 1).
        keys: (U,) int64 sorted ids of the nodes, the same for a node in every call at this spacing
            (how neighbouring tiles share lattice nodes).
    """

    spacing: float
    nodes: npt.NDArray[np.float64]
    index: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]
    keys: npt.NDArray[np.int64]


def check_spacing(spacing: float) -> int:
    """Number of lattice columns around the globe; ``ValueError`` unless 360/spacing is an integer."""
    columns = round(360.0 / spacing)
    if spacing <= 0 or abs(columns * spacing - 360.0) > 1e-9:
        raise ValueError(f"lattice spacing {spacing}° must divide 360°")
    return int(columns)


def node_lonlat(rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64], spacing: float) -> npt.NDArray[np.float64]:
    """(n, 2) (lon, lat) of lattice nodes (row j at lat -90 + j·h, column i at lon -180 + i·h).

    Rows past a pole continue the meridian through it onto the opposite meridian.
    """
    columns = check_spacing(spacing)
    lat = -90.0 + rows * spacing
    lon = -180.0 + (cols % columns) * spacing
    north, south = lat > 90.0, lat < -90.0
    lat = np.where(north, 180.0 - lat, np.where(south, -180.0 - lat, lat))
    lon = np.where(north | south, lon + 180.0, lon)
    lon = (lon + 180.0) % 360.0 - 180.0
    return np.stack([lon, lat], axis=1)


def lattice_stencils(lonlat: npt.NDArray[np.float64], spacing: float) -> Stencils:
    """TAPS × TAPS Lagrange stencils of (n, 2) (lon, lat) degree queries on the lattice of ``spacing``."""
    columns = check_spacing(spacing)
    x = (lonlat[:, 0] + 180.0) / spacing
    y = (lonlat[:, 1] + 90.0) / spacing
    i0, j0 = np.floor(x), np.floor(y)
    wx, wy = lagrange_weights(x - i0), lagrange_weights(y - j0)
    cols = (i0.astype(np.int64)[:, None] + OFFSETS) % columns  # (n, TAPS)
    rows = j0.astype(np.int64)[:, None] + OFFSETS  # (n, TAPS), may step past a pole
    # node key: rows shifted to be non-negative, times the column count
    shift = TAPS // 2
    keys = ((rows[:, :, None] + shift) * columns + cols[:, None, :]).reshape(len(lonlat), STENCIL)
    unique, inverse = np.unique(keys, return_inverse=True)
    node_rows, node_cols = unique // columns - shift, unique % columns
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(len(lonlat), STENCIL)
    return Stencils(spacing, node_lonlat(node_rows, node_cols, spacing),
                    inverse.reshape(len(lonlat), STENCIL).astype(np.int64), weights.astype(np.float32),
                    unique.astype(np.int64))


def interpolate(node_values: torch.Tensor, stencils: Stencils) -> torch.Tensor:
    """(n, C) values at the queries from (U, C) values at the stencils' nodes.

    The stencils form a sparse (n, U) matrix with STENCIL weights per row; a CSR sparse-dense
    product reads each node row from cache instead of gathering an (n, STENCIL, C) copy (8× faster
    here).

    Args:
        node_values: (U, C) values at ``stencils.nodes``.
        stencils: from :func:`lattice_stencils`.
    """
    order = np.argsort(stencils.index, axis=1)  # CSR wants sorted column indices within a row
    columns = np.take_along_axis(stencils.index, order, axis=1)
    weights = np.take_along_axis(stencils.weights, order, axis=1)
    n = len(columns)
    device, dtype = node_values.device, node_values.dtype
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        matrix = torch.sparse_csr_tensor(
            torch.arange(0, n * STENCIL + 1, STENCIL, device=device),
            torch.from_numpy(columns.reshape(-1)).to(device),
            torch.from_numpy(weights.reshape(-1)).to(device, dtype),
            size=(n, node_values.shape[0]),
            check_invariants=False,  # built sorted and in range above
        )
        return matrix @ node_values
