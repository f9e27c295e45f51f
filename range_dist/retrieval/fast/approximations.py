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

Checking an approximation needs the norm of its error at many points, not the error itself, so the
checks run on an :class:`ErrorSketch`: a Gaussian random projection of the values to
:data:`SKETCH_DIM` columns (Johnson-Lindenstrauss). Softmax averages are linear in the values, so the
sketch of a head's average is the average of the sketched rows: one retrieval with 2(r+1) instead of
2(D+1) FLOPs per (point, row) for the values product (the scores are unchanged, and exact).
"""

from __future__ import annotations

import hashlib
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

    @property
    def key(self) -> str:
        """SHA-256 of the mean and components: names the coefficients this basis makes (a cache key)."""
        return _digest(self.mean, self.components)

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
    """Principal directions of the value rows (float32 covariance blocks summed in float64, eigh in float64).

    Float32 blocks because the basis is only ever a candidate: the planner measures each rank's truncation
    error on exact averages (``choose_rank``), so the ~1e-6 relative rounding of a float32 covariance shows
    in the measured error, not as a silent one; the float64 products took 0.28 s of a 0.44 s fit at
    8192 x 1024 on 2 cores, float32 0.13 s.

    Args:
        values: (M, D) value rows.
        rows_per_block: rows per covariance block (bounds the temporaries).

    Returns:
        The full basis (R = D), largest variance first. Eigenvectors' signs are arbitrary, which
        does not matter: only the projector ``U_r U_rᵀ`` enters the results.
    """
    v = np.asarray(values)
    mean = v.mean(axis=0, dtype=np.float64)
    cov = torch.zeros((v.shape[1], v.shape[1]), dtype=torch.float64)
    centre = torch.from_numpy(mean.astype(np.float32))
    for start in range(0, len(v), rows_per_block):
        block = torch.from_numpy(np.ascontiguousarray(v[start : start + rows_per_block], dtype=np.float32)) - centre
        cov += (block.T @ block).double()
    eigval, eigvec = np.linalg.eigh(cov.numpy())
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


#: Columns of the :class:`ErrorSketch` projection. The squared norm it estimates is off by a factor
#: χ²_r / r: at r = 128 that factor is below 1/4 with probability < 1e-17 (Chernoff: (z·e^(1-z))^(r/2)).
SKETCH_DIM = 128


@dataclass(frozen=True)
class ErrorSketch:
    """A Gaussian random projection that estimates error norms from a fraction of the columns.

    For any fixed vector e, ``||e·R||² / ||e||²`` with ``R`` of i.i.d. N(0, 1/r) entries is distributed
    as χ²_r / r: unbiased, and within a factor 2 of the truth except with probability below 1e-17 at
    r = 128 (:data:`SKETCH_DIM`). Written here rather than taken from scikit-learn's
    ``GaussianRandomProjection``: it is one matrix, and the products run in torch on the retrieval's device.

    Attributes:
        matrix: (C, r) float32 projection.
    """

    matrix: npt.NDArray[np.float32]

    @classmethod
    def for_width(cls, width: int, dim: int = SKETCH_DIM, seed: int = 0) -> ErrorSketch | None:
        """A sketch of (…, width) vectors, or None when ``width`` is so small that sketching saves little."""
        if width <= 2 * dim:
            return None
        rng = np.random.default_rng(seed)
        return cls((rng.standard_normal((width, dim)) / np.sqrt(dim)).astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def key(self) -> str:
        """SHA-256 of the projection: names the sketched values it makes (a cache key)."""
        return _digest(self.matrix)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(…, r) sketch of (…, C) vectors, on their device and dtype."""
        return x @ torch.as_tensor(self.matrix, device=x.device, dtype=x.dtype)


def _digest(*arrays: npt.NDArray[np.floating]) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(np.ascontiguousarray(array).view(np.uint8).data)
    return digest.hexdigest()


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
        index: (n, STENCIL) int64 rows of ``nodes`` for each query's TAPS × TAPS stencil (a query on a
            lattice line: that line's TAPS nodes, repeated where its weights are zero).
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


#: A query within this many lattice cells of a lattice line lies on it (a check or probe point on a cell's
#: edge, whose coordinates are rounded: h/2 steps from -180°): far below any error that matters.
ON_LINE = 1e-9


def _cells(lonlat: npt.NDArray[np.float64], spacing: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                                                                   npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The lattice cell of each query: (u, 4) distinct (column, row, on a column line, on a row line) of the
    cells below/left of the queries, (n,) the index of each query's entry among them, and the queries'
    (n,) fractions within the cell along x and y.

    A query on a lattice line (fraction 0: the edge midpoints of the per-cell checks and the planner's
    probes) is interpolated along that line alone: its Lagrange weights off the line are exactly zero.
    Its entry is flagged so that its stencil names that line's nodes only (:func:`_cell_node_keys`).
    """
    x = (lonlat[:, 0] + 180.0) / spacing
    y = (lonlat[:, 1] + 90.0) / spacing
    x = np.where(np.abs(x - np.round(x)) < ON_LINE, np.round(x), x)
    y = np.where(np.abs(y - np.round(y)) < ON_LINE, np.round(y), y)
    i0, j0 = np.floor(x), np.floor(y)
    tx, ty = x - i0, y - j0
    # one int64 key per (cell, on-line flags) (row-major, rows from -1 for lat = -90 exactly): unique on it,
    # not on tuples
    columns = check_spacing(spacing) + 2
    flags = (tx == 0.0).astype(np.int64) + 2 * (ty == 0.0).astype(np.int64)
    ids, inverse = np.unique(((j0.astype(np.int64) + 1) * columns + i0.astype(np.int64) + 1) * 4 + flags,
                             return_inverse=True)
    flags, ids = ids % 4, ids // 4
    cells = np.stack([ids % columns - 1, ids // columns - 1, flags % 2, flags // 2], axis=1)
    return cells, inverse.reshape(-1), tx, ty


def _cell_node_keys(cells: npt.NDArray[np.int64], spacing: float) -> npt.NDArray[np.int64]:
    """(u, STENCIL) keys of the lattice nodes of each cell's stencil (row shifted non-negative, times the columns).

    An entry flagged on a column (row) line has every column (row) offset at that line: its stencil repeats
    the line's TAPS nodes, where its weights are zero off the line, so the nodes beyond it (the column and
    row past a region's last cells, for their edge check points) are not evaluated.
    """
    columns = check_spacing(spacing)
    cols = (cells[:, 0:1] + np.where(cells[:, 2:3] == 1, 0, OFFSETS)) % columns  # (u, TAPS)
    rows = cells[:, 1:2] + np.where(cells[:, 3:4] == 1, 0, OFFSETS)  # (u, TAPS), may step past a pole
    return ((rows[:, :, None] + TAPS // 2) * columns + cols[:, None, :]).reshape(len(cells), STENCIL)


def lattice_stencils(lonlat: npt.NDArray[np.float64], spacing: float) -> Stencils:
    """TAPS × TAPS Lagrange stencils of (n, 2) (lon, lat) degree queries on the lattice of ``spacing``.

    A stencil depends only on the cell holding the query, so the nodes are found per distinct cell
    (a dense tile has a few thousand cells for its tens of thousands of queries).
    """
    columns = check_spacing(spacing)
    cells, cell_of, tx, ty = _cells(lonlat, spacing)
    wx, wy = lagrange_weights(tx), lagrange_weights(ty)
    unique, cell_index = np.unique(_cell_node_keys(cells, spacing), return_inverse=True)
    shift = TAPS // 2
    node_rows, node_cols = unique // columns - shift, unique % columns
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(len(lonlat), STENCIL)
    index = cell_index.reshape(len(cells), STENCIL)[cell_of]
    return Stencils(spacing, node_lonlat(node_rows, node_cols, spacing), index.astype(np.int64),
                    weights.astype(np.float32), unique.astype(np.int64))


def lattice_node_count(lonlat: npt.NDArray[np.float64], spacing: float) -> int:
    """How many lattice nodes the stencils of these queries use (``len(lattice_stencils(...).nodes)``, cheaper:
    no weights)."""
    cells, _, _, _ = _cells(lonlat, spacing)
    return len(np.unique(_cell_node_keys(cells, spacing)))


def lattice_count_bounds(lonlat: npt.NDArray[np.float64], spacing: float) -> tuple[int, int]:
    """Lower bounds on (lattice nodes, check points) of these queries at ``spacing``, from their cells alone.

    Each lattice cell holding a query has its own corner node (the stencil's node at offset 0, 0) and
    its own centre check point, so the distinct corners and cells bound what
    :func:`lattice_node_count` and ``check_points`` count, at one ``unique`` over the queries instead of
    one over every cell's stencil of :data:`STENCIL` nodes.
    """
    columns = check_spacing(spacing)
    x = np.floor((lonlat[:, 0] + 180.0) / spacing).astype(np.int64)  # lon 180° is column ``columns``: unwrapped,
    y = np.floor((lonlat[:, 1] + 90.0) / spacing).astype(np.int64)  # as the check points key their cells
    cells = np.unique(y * (columns + 1) + x)
    corners = np.unique(cells // (columns + 1) * columns + cells % (columns + 1) % columns)
    return len(corners), len(cells)


def interpolate(node_values: torch.Tensor, stencils: Stencils) -> torch.Tensor:
    """(n, C) values at the queries from (U, C) values at the stencils' nodes.

    The stencils form a sparse (n, U) matrix with up to STENCIL weights per row; a CSR sparse-dense
    product reads each node row from cache instead of gathering an (n, STENCIL, C) copy (8× faster
    here).

    Args:
        node_values: (U, C) values at ``stencils.nodes``.
        stencils: from :func:`lattice_stencils`.
    """
    n = len(stencils.index)
    nonzero = stencils.weights != 0.0
    # CSR wants distinct sorted column indices within a row: a query on a lattice line repeats that line's
    # nodes with zero weights (``_cell_node_keys``), which are sorted last and left out
    order = np.argsort(np.where(nonzero, stencils.index, np.iinfo(np.int64).max), axis=1)
    columns = np.take_along_axis(stencils.index, order, axis=1)
    weights = np.take_along_axis(stencils.weights, order, axis=1)
    kept = np.take_along_axis(nonzero, order, axis=1)
    device, dtype = node_values.device, node_values.dtype
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        matrix = torch.sparse_csr_tensor(
            torch.from_numpy(np.concatenate([[0], np.cumsum(kept.sum(axis=1))])).to(device),
            torch.from_numpy(columns[kept]).to(device),
            torch.from_numpy(weights[kept]).to(device, dtype),
            size=(n, node_values.shape[0]),
            check_invariants=False,  # built sorted, distinct and in range above
        )
        return matrix @ node_values
