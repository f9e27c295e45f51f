"""Real spherical-harmonic features of SatCLIP's location encoder (pure torch, float64).

Three ways to compute the same L² features, index ``l*l + l + m`` for l < L, -l <= m <= l:

* ``published`` (default): reproduces upstream SatCLIP bit for bit by evaluating the
  sympy-expanded expression text it was trained on (``data/sh_published.json.gz``). That text loses
  precision for high degrees (up to ~0.6 near the poles at l = 39), but the released weights
  expect exactly those values.
* ``exact``: the same conventions (no Condon-Shortley phase, m = 0 terms scaled by pi) from a
  stable normalised recurrence: accurate and finite everywhere, for any L.
* ``closed-form``: upstream's alternative ``harmonics_calculation="closed-form"`` convention
  (Condon-Shortley phase, orthonormal m = 0 terms), for checkpoints trained with it.
"""

from __future__ import annotations

import ast
import functools
import gzip
import json
import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal, Union

import torch
from torch import nn

from range_dist.errors import ConfigError

HarmonicsMode = Literal["published", "exact", "closed-form"]
HARMONICS_MODES: tuple[str, ...] = ("published", "exact", "closed-form")


def angles_from_lonlat(lonlat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's angles: phi = radians(lon + 180), theta = radians(lat + 90) (from the south pole)."""
    return torch.deg2rad(lonlat[:, 0] + 180), torch.deg2rad(lonlat[:, 1] + 90)


# --------------------------------------------------------------------------------------------
# published mode: a hash-consed program over upstream's expression text
# --------------------------------------------------------------------------------------------

_Operand = Union[float, int, tuple[str, int]]  # noqa: UP007 (runtime alias on 3.10)  # a Python constant, or ("slot", index)

_BINOPS: dict[type, Callable[[object, object], object]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"cos": torch.cos, "sin": torch.sin}


class _ExpressionProgram:
    """Evaluates many expression texts with torch, computing each distinct subexpression once.

    Why not ``eval``: the 1600 L=40 expressions share most of their subterms (``cos(theta)**k``,
    ``(1 - cos(theta)**2)**(k/2)``, ``cos(m*phi)``). Each operation here is the very torch call that
    ``eval`` would make on the same operands, in the same order (the AST fixes associativity), so
    the results are bit-identical to upstream while each shared term is computed once.
    """

    def __init__(self, expressions: Sequence[str]) -> None:
        self._ops: list[tuple[object, ...]] = []
        self._slots: dict[tuple[object, ...], int] = {}
        self.outputs: list[_Operand] = [
            self._compile(ast.parse(text, mode="eval").body, text) for text in expressions
        ]

    def _emit(self, op: tuple[object, ...]) -> tuple[str, int]:
        if op not in self._slots:
            self._slots[op] = len(self._ops)
            self._ops.append(op)
        return ("slot", self._slots[op])

    def _compile(self, node: ast.expr, text: str) -> _Operand:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in ("theta", "phi"):
            return self._emit(("name", node.id))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self._compile(node.operand, text)
            if isinstance(operand, tuple):
                return self._emit(("neg", operand))
            return -operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left = self._compile(node.left, text)
            right = self._compile(node.right, text)
            if not isinstance(left, tuple) and not isinstance(right, tuple):
                return _BINOPS[type(node.op)](left, right)  # type: ignore[return-value]
            return self._emit(("bin", type(node.op), left, right))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and len(node.args) == 1
        ):
            arg = self._compile(node.args[0], text)
            if not isinstance(arg, tuple):
                raise ConfigError(f"unexpected constant call in harmonic expression {text!r}")
            return self._emit(("call", node.func.id, arg))
        raise ConfigError(f"unsupported construct {ast.dump(node)[:80]} in harmonic expression {text!r}")

    def _plan(self) -> tuple[list[list[int]], dict[int, list[int]]]:
        """For each op, the slots whose last use it is; and, per slot, the output columns it fills."""
        last_use: dict[int, int] = {}
        for j, op in enumerate(self._ops):
            for operand in op[1:]:
                if isinstance(operand, tuple):
                    last_use[operand[1]] = j
        frees: list[list[int]] = [[] for _ in self._ops]
        for slot, j in last_use.items():
            frees[j].append(slot)
        columns: dict[int, list[int]] = {}
        for k, out in enumerate(self.outputs):
            if isinstance(out, tuple):
                columns.setdefault(out[1], []).append(k)
        return frees, columns

    def evaluate(self, theta: torch.Tensor, phi: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Return (N, len(expressions)) values for angle tensors of shape (N,).

        Points are processed ``chunk`` at a time and every intermediate is dropped after its last
        use, so the working set stays cache-sized whatever N is. (Evaluating the theta-only terms on
        distinct latitudes does not pay here: the printed expressions distribute cos(m·phi) over
        every polynomial term, so almost every operation mixes both angles.)
        """
        if not hasattr(self, "_frees"):
            self._frees, self._columns = self._plan()
        result = torch.empty((theta.shape[0], len(self.outputs)), dtype=theta.dtype, device=theta.device)
        for k, out in enumerate(self.outputs):
            if not isinstance(out, tuple):
                result[:, k] = float(out)
        for start in range(0, theta.shape[0], chunk):
            stop = start + chunk
            self._evaluate_chunk(theta[start:stop], phi[start:stop], result[start:stop])
        return result

    def _evaluate_chunk(self, theta: torch.Tensor, phi: torch.Tensor, result: torch.Tensor) -> None:
        names = {"theta": theta, "phi": phi}
        values: dict[int, torch.Tensor] = {}

        def get(operand: object) -> object:
            return values[operand[1]] if isinstance(operand, tuple) else operand  # type: ignore[index]

        for j, op in enumerate(self._ops):
            kind = op[0]
            if kind == "name":
                value = names[op[1]]  # type: ignore[index]
            elif kind == "neg":
                value = -values[op[1][1]]  # type: ignore[index]
            elif kind == "call":
                value = _FUNCS[op[1]](values[op[2][1]])  # type: ignore[index]
            else:
                value = _BINOPS[op[1]](get(op[2]), get(op[3]))  # type: ignore[index,assignment]
            values[j] = value
            for k in self._columns.get(j, ()):
                result[:, k] = value
            for slot in self._frees[j]:
                del values[slot]


@functools.lru_cache(maxsize=1)
def _shipped_table() -> list[str]:
    from range_dist.encoders.sh_expressions import TABLE_PATH

    with gzip.open(TABLE_PATH, "rt") as fh:
        return list(json.load(fh)["expressions"])


@functools.lru_cache(maxsize=8)
def _published_program(degrees: int) -> _ExpressionProgram:
    table = _shipped_table()
    count = degrees * degrees
    if count > len(table):
        # Degrees beyond the shipped table are generated once per process (sympy, slow).
        from range_dist.encoders.sh_expressions import generate_table

        table = generate_table(degrees)
    return _ExpressionProgram(table[:count])


# --------------------------------------------------------------------------------------------
# exact mode: stable normalised recurrence
# --------------------------------------------------------------------------------------------


def _normalised_legendre(x: torch.Tensor, s: torch.Tensor, degrees: int) -> dict[tuple[int, int], torch.Tensor]:
    """K(l,m)·P(l,m)(x) without Condon-Shortley phase for 0 <= m <= l < degrees.

    ``s`` is sqrt(1 - x²) supplied by the caller (cos(lat), exact at the poles). The three-term
    recurrence on the normalised functions is stable to very high degree, unlike expanded
    polynomials.
    """
    out: dict[tuple[int, int], torch.Tensor] = {}
    pmm = torch.full_like(x, math.sqrt(1.0 / (4.0 * math.pi)))
    for m in range(degrees):
        if m > 0:
            pmm = math.sqrt((2 * m + 1) / (2 * m)) * s * pmm
        out[(m, m)] = pmm
        if m + 1 < degrees:
            out[(m + 1, m)] = math.sqrt(2 * m + 3) * x * pmm
        for l in range(m + 2, degrees):
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            out[(l, m)] = a * (x * out[(l - 1, m)] - b * out[(l - 2, m)])
    return out


def _recurrence_harmonics(lonlat: torch.Tensor, degrees: int, upstream_closed_form: bool) -> torch.Tensor:
    # The latitude part (Legendre functions) and the longitude part (cos/sin(m·phi)) are computed
    # on the distinct latitudes and longitudes, then multiplied per point: on grids this is far
    # cheaper, and for scattered points it costs the same as the direct product.
    unique_lat, inverse_lat = torch.unique(lonlat[:, 1], return_inverse=True)
    unique_lon, inverse_lon = torch.unique(lonlat[:, 0], return_inverse=True)
    lat = torch.deg2rad(unique_lat)
    phi = torch.deg2rad(unique_lon + 180)
    x = -torch.sin(lat)  # cos(theta), theta from the south pole
    s = torch.cos(lat).clamp_min(0.0)  # sin(theta) >= 0
    plm = _normalised_legendre(x, s, degrees)
    latitude_part: list[torch.Tensor] = []
    longitude_part: list[torch.Tensor] = []
    ones = torch.ones_like(phi)
    for l in range(degrees):
        for m in range(-l, l + 1):
            p = plm[(l, abs(m))]
            if m == 0:
                latitude_part.append(p if upstream_closed_form else math.pi * p)
                longitude_part.append(ones)
                continue
            sign = -1.0 if (upstream_closed_form and abs(m) % 2 == 1) else 1.0
            latitude_part.append((sign * math.sqrt(2.0)) * p)
            longitude_part.append(torch.cos(m * phi) if m > 0 else torch.sin(-m * phi))
    return torch.stack(latitude_part, dim=-1)[inverse_lat] * torch.stack(longitude_part, dim=-1)[inverse_lon]


# --------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------


def spherical_harmonics(lonlat: torch.Tensor, degrees: int, mode: HarmonicsMode = "published") -> torch.Tensor:
    """SatCLIP spherical-harmonic features.

    Args:
        lonlat: (N, 2) float64 tensor of (lon, lat) degrees.
        degrees: L, the number of Legendre degrees (features = L²).
        mode: ``published``, ``exact`` or ``closed-form`` (see the module docstring).

    Returns:
        (N, L²) float64 tensor.
    """
    if mode not in HARMONICS_MODES:
        raise ConfigError(f"harmonics mode {mode!r} is unknown; use one of {', '.join(HARMONICS_MODES)}")
    if degrees < 1:
        raise ConfigError(f"legendre_polys must be >= 1, got {degrees}")
    lonlat = lonlat.to(torch.float64)
    if mode == "published":
        phi, theta = angles_from_lonlat(lonlat)
        return _published_program(degrees).evaluate(theta, phi)
    return _recurrence_harmonics(lonlat, degrees, upstream_closed_form=(mode == "closed-form"))


class SphericalHarmonics(nn.Module):
    """Spherical-harmonic positional encoding, (N, 2) lon/lat degrees -> (N, L²) float64."""

    def __init__(self, legendre_polys: int, mode: HarmonicsMode = "published") -> None:
        super().__init__()
        if mode not in HARMONICS_MODES:
            raise ConfigError(f"harmonics mode {mode!r} is unknown; use one of {', '.join(HARMONICS_MODES)}")
        self.legendre_polys = int(legendre_polys)
        self.mode: HarmonicsMode = mode
        self.embedding_dim = self.legendre_polys**2

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(lonlat, self.legendre_polys, self.mode)

    def extra_repr(self) -> str:
        return f"legendre_polys={self.legendre_polys}, mode={self.mode!r}"
