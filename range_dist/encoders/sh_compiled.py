"""Fast, bit-identical evaluation of the published spherical-harmonic expression text (pure torch).

Upstream SatCLIP evaluates each of its L² sympy-printed expressions with ``eval`` on torch tensors
(``docs/method.md §Published harmonics``). Reproducing those features bit for bit means doing, per
point and per feature, the very same floating-point operations on the very same operands. Two
evaluators live here:

* :class:`ExpressionProgram` parses the texts once into a hash-consed program (each distinct
  subexpression is one op) and, in :meth:`ExpressionProgram.evaluate_per_op`, runs it one torch
  call per op. At L = 40 that is ~14k small calls per chunk of points: simple, slow.
* :class:`VectorisedProgram` runs the same program with a few hundred large calls. The expressions
  have one shape: a left-associated product ``c * f1 * f2 * ...`` whose factors are shared terms
  (``(1.0 - cos(theta)**2)**p``, ``cos(m*phi)``, ...) or a polynomial ``a1*x**k1 - a2*x**k2 + ...``
  (a left-associated sum). Every transcendental op (``cos``, ``sin``, ``**``) and whatever it
  depends on is a *leaf*, computed as before with one torch call per op on the same chunk of points.
  Then the polynomials of all features advance together, one term per step (features sorted by
  term count, so each step is a prefix of rows), and so do the products, one factor per step.

Latitude sharing: the polynomials and the product prefixes up to the first longitude-dependent
factor (``c * (1 - x**2)**p * poly(x)``, x = cos(theta)) depend on theta only. Where a chunk's
points share few latitudes (grid tiles), that work runs once per distinct theta (by bit pattern)
and only the last factors (``cos(m*phi)``, ...) run per point; the values are the same bits.
Those last factors depend on longitude only, so where a chunk also shares few longitudes they are
computed once per distinct longitude too, and a point costs a few row gathers and multiplies: at
L = 40 on a grid tile that is ~9x upstream's per-op speed on 2 cores (``benchmarks/harmonics.py
--layout grid``), most of it writing the 12.8 KB of features per point.

Why this is bit-identical: IEEE-754 ``+``, ``-`` and ``*`` are correctly rounded, so their result
depends only on the operands, never on batching, vector width or device; the order of operations
per feature is upstream's left-to-right order, unchanged. Two exact rewrites are used: ``a - b``
is computed as ``a + (-b)`` (IEEE defines subtraction so) with the sign folded into the term's
constant (``-(c*y) == (-c)*y`` as rounding is sign-symmetric), and a lone term ``y`` or constant
``c`` is ``1.0*y`` or ``c*1.0`` (multiplication by one is exact). Anything that does not fit this
shape simply becomes a leaf, so any expression text is evaluated correctly, at worst at the old
speed. No code is generated and nothing is ``exec``-ed: the texts (the shipped table, or sympy's
output for degrees beyond it) are only parsed with :func:`ast.parse` into index tables.

Layout caveat (upstream's, not ours): torch's CPU ``pow`` with a non-special exponent takes a
vector path (SLEEF) for whole vector blocks and libm ``pow`` for the last ``N mod 8`` (AVX2) or
``N mod 16`` (AVX-512) elements of each thread's range, and the two differ in the last bit for
some inputs. So upstream's own values depend on batch length and thread split. Leaves here are
computed on chunks whose boundaries are multiples of 64 points, which reproduces a single-threaded
``eval`` over the whole batch (and this module's previous per-op evaluation) exactly, for any N.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import numpy.typing as npt
import torch

from range_dist.errors import ConfigError

_Operand = Union[float, int, tuple[str, int]]  # noqa: UP007 (runtime alias on 3.10)  # a Python constant, or ("slot", index)

_BINOPS: dict[type, Callable[[object, object], object]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"cos": torch.cos, "sin": torch.sin}

#: Leaves are computed on chunks whose boundaries are multiples of this many points (module docstring).
CHUNK_ALIGNMENT = 64


@dataclass(frozen=True)
class Factorised:
    """Harmonic features of N points as a latitude part times a longitude part
    (:meth:`VectorisedProgram.factorised`): ``features[p, k] ≈ lat[lat_index[p], k] * lon[lon_index[p], group[k]]``.

    Attributes:
        lat: (A, F) float64, per distinct latitude.
        lon: (O, G) float64, per distinct longitude: the products of the longitude factors (``cos(m*phi)``,
            ``sin(m*phi)``; a column of ones for features without one).
        group: (F,) int64, the column of ``lon`` of each feature.
        lat_index: (N,) int64, each point's row of ``lat``.
        lon_index: (N,) int64, each point's row of ``lon``.
    """

    lat: torch.Tensor
    lon: torch.Tensor
    group: torch.Tensor
    lat_index: torch.Tensor
    lon_index: torch.Tensor


class ExpressionProgram:
    """Many expression texts as one hash-consed program: each distinct subexpression is one op.

    The 1600 L=40 expressions share most of their subterms (``cos(theta)**k``,
    ``(1 - cos(theta)**2)**(k/2)``, ``cos(m*phi)``). Each op is the very torch call that ``eval``
    would make on the same operands, in the same order (the AST fixes associativity); constant
    sub-expressions are folded with Python floats, as ``eval`` folds them.

    Attributes:
        ops: ops in topological order: ``("name", "theta"|"phi")``, ``("neg", operand)``,
            ``("call", "cos"|"sin", operand)`` or ``("bin", ast op type, left, right)``.
        outputs: per expression, a Python constant or ``("slot", op index)``.
    """

    def __init__(self, expressions: Sequence[str]) -> None:
        self.ops: list[tuple[object, ...]] = []
        self._slots: dict[tuple[object, ...], int] = {}
        self.outputs: list[_Operand] = [
            self._compile(ast.parse(text, mode="eval").body, text) for text in expressions
        ]

    def _emit(self, op: tuple[object, ...]) -> tuple[str, int]:
        if op not in self._slots:
            self._slots[op] = len(self.ops)
            self.ops.append(op)
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

    def run_ops(
        self, theta: torch.Tensor, phi: torch.Tensor, wanted: Sequence[int], keep: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        """Run the ops ``wanted`` (ascending, closed under dependencies) one torch call each.

        Returns the values of the slots ``keep``; every other intermediate is dropped after its last
        use, so the working set stays small.
        """
        last_use: dict[int, int] = {}
        for j in wanted:
            for operand in self.ops[j][1:]:
                if isinstance(operand, tuple):
                    last_use[operand[1]] = j
        keep_set = set(keep)
        frees: dict[int, list[int]] = {}
        for slot, j in last_use.items():
            if slot not in keep_set:
                frees.setdefault(j, []).append(slot)
        names = {"theta": theta, "phi": phi}
        values: dict[int, torch.Tensor] = {}

        def get(operand: object) -> object:
            return values[operand[1]] if isinstance(operand, tuple) else operand  # type: ignore[index]

        for j in wanted:
            op = self.ops[j]
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
            for slot in frees.get(j, ()):
                del values[slot]
        return {slot: values[slot] for slot in keep}

    def evaluate_per_op(self, theta: torch.Tensor, phi: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """The simple evaluation, one torch call per op: (N,) angles -> (N, len(expressions)).

        Kept as the reference the vectorised program is tested and benchmarked against.
        """
        slots = sorted({out[1] for out in self.outputs if isinstance(out, tuple)})
        result = torch.empty((theta.shape[0], len(self.outputs)), dtype=theta.dtype, device=theta.device)
        for k, out in enumerate(self.outputs):
            if not isinstance(out, tuple):
                result[:, k] = float(out)
        wanted = _closure(self.ops, slots)
        for start in range(0, theta.shape[0], chunk):
            stop = start + chunk
            values = self.run_ops(theta[start:stop], phi[start:stop], wanted, slots)
            for k, out in enumerate(self.outputs):
                if isinstance(out, tuple):
                    result[start:stop, k] = values[out[1]]
        return result


def _closure(ops: Sequence[tuple[object, ...]], roots: Sequence[int]) -> list[int]:
    """The ops needed to compute the slots ``roots``, ascending (= topological) order."""
    needed: set[int] = set()
    stack = list(roots)
    while stack:
        slot = stack.pop()
        if slot in needed:
            continue
        needed.add(slot)
        stack.extend(operand[1] for operand in ops[slot][1:] if isinstance(operand, tuple))
    return sorted(needed)


@dataclass(frozen=True)
class _SumGroup:
    """Polynomials whose term rows are suffixes of one master sequence, evaluated together.

    Right-aligned on the master, the j-th step multiplies the single column ``rows[j]`` by one
    constant per polynomial and adds it to the polynomials already started (the longest first, so
    a prefix ``:counts[j]`` of the group's columns). Every accumulator starts at -0.0, and
    ``-0.0 + t == t`` exactly for every t (signed zeros, infinities and NaNs included), so a
    polynomial's first step equals upstream's first term.
    """

    start: int  # first column of the group in the value table
    size: int  # number of polynomials
    rows: tuple[int, ...]  # master sequence: value-table column of each step's term
    counts: tuple[int, ...]  # polynomials active at each step
    coefs: tuple[npt.NDArray[np.float64], ...]  # (counts[j], 1) constants, signs folded in


class VectorisedProgram:
    """Bit-identical, batched evaluation of an :class:`ExpressionProgram` (module docstring).

    Points are processed in blocks; per block a point-major value table has column 0 = 1.0, then
    the leaves, then the polynomial (sum) results. The outputs are products
    ``c0 * col1 * col2 * ...`` of value-table columns, padded to one length with column 0
    (``p * 1.0 == p`` exactly), evaluated straight into the output rows.
    """

    def __init__(self, program: ExpressionProgram) -> None:
        self.program = program
        ops = program.ops
        # Transcendental ops and everything they depend on are computed per op anyway.
        transcendental = [j for j, op in enumerate(ops) if op[0] in ("call", "name") or op[1] is ast.Pow]
        self._per_op = set(_closure(ops, transcendental))
        self._leaf_col: dict[int, int] = {}  # slot -> value-table column (1..)
        sums: dict[int, list[tuple[float, int]]] = {}  # slot -> terms as (constant, leaf column)
        products: list[tuple[float, list[int | tuple[str, int]]]] = []
        for out in program.outputs:
            products.append(self._product(out[1], sums) if isinstance(out, tuple) else (float(out), [0]))
        self.leaves = sorted(self._leaf_col, key=self._leaf_col.__getitem__)
        self._leaf_ops = _closure(ops, self.leaves)
        self.groups, sum_col = _group_sums(sums, first_column=1 + len(self.leaves))
        self.n_columns = 1 + len(self.leaves) + len(sums)
        width = max(len(factors) for _, factors in products)
        self._product_cols = np.zeros((width, len(products)), dtype=np.int64)  # padding: column 0 = 1.0
        for k, (_, factors) in enumerate(products):
            for j, factor in enumerate(factors):
                self._product_cols[j, k] = sum_col[factor[1]] if isinstance(factor, tuple) else factor
        self._c0 = np.array([c0 for c0, _ in products], dtype=np.float64)[:, None]
        self._c0_is_one = bool((self._c0 == 1.0).all())
        self._on_device: dict[tuple[torch.device, str], _Tables] = {}
        self._plan_latitude_sharing()

    def _plan_latitude_sharing(self) -> None:
        """Split each product into a theta-only prefix and per-point factors (module docstring).

        Sets ``self._shared`` to False where the shape does not allow it (a polynomial with a
        longitude term, or a polynomial after a longitude factor).
        """
        ops = self.program.ops
        phi_slots = {j for j, op in enumerate(ops) if op == ("name", "phi")}
        theta_leaf = [not (set(_closure(ops, [slot])) & phi_slots) for slot in self.leaves]
        self._theta_leaves = [slot for slot, t in zip(self.leaves, theta_leaf) if t]
        self._point_leaves = [slot for slot, t in zip(self.leaves, theta_leaf) if not t]
        self._theta_leaf_ops = _closure(ops, self._theta_leaves)
        self._point_leaf_ops = _closure(ops, self._point_leaves)
        theta_cols = {0} | {1 + i for i, t in enumerate(theta_leaf) if t}
        self._shared = True
        for group in self.groups:
            if all(row in theta_cols for row in group.rows):
                theta_cols.update(range(group.start, group.start + group.size))
            else:
                self._shared = False
        width, count = self._product_cols.shape
        prefix = np.zeros(count, dtype=np.int64)
        for k in range(count):
            while prefix[k] < width and int(self._product_cols[prefix[k], k]) in theta_cols:
                prefix[k] += 1
        steps = np.arange(width)[:, None]
        self._prefix_cols = np.where(steps < prefix[None, :], self._product_cols, 0)
        self._point_steps: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        for j in range(width):
            sub = np.flatnonzero((j >= prefix) & (self._product_cols[j] != 0))  # x * 1.0 == x: skip
            cols = self._product_cols[j, sub]
            if len(sub) and cols.max() > len(self.leaves):
                self._shared = False  # a polynomial after a per-point factor
            if 4 * len(sub) > count:
                # most outputs take part: one full-width step, the others times column 0 (exact)
                full = np.zeros(count, dtype=np.int64)
                full[sub] = cols
                sub, cols = np.arange(count), full
            if len(sub):
                self._point_steps.append((sub, cols))
        # the theta-only leaves that per-point steps need, gathered per point from the latitudes
        needed = {int(c) for _, cols in self._point_steps for c in cols if int(c) in theta_cols} - {0}
        self._theta_cols_per_point = sorted(needed)
        self._plan_longitude_sharing(theta_cols)
        self._factor_cache: tuple[list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]], list[tuple[int, ...]],
                                  npt.NDArray[np.int64]] | None = None

    def _plan_longitude_sharing(self, theta_cols: set[int]) -> None:
        """Split each per-point step into a latitude-table and a longitude-table factor.

        Upstream's per-point factors (``cos(m*phi)``, ``sin(m*phi)``) depend on longitude only, so
        on a grid they too are computed once per distinct longitude; a point's value is then its
        latitude's product prefix times, step by step, factors gathered from a latitude table or a
        longitude table (same operands, same order: the same bits). Sets ``self._lon_steps`` to
        None where a per-point leaf depends on theta.
        """
        ops = self.program.ops
        theta_slots = {j for j, op in enumerate(ops) if op == ("name", "theta")}
        if any(set(_closure(ops, [slot])) & theta_slots for slot in self._point_leaves):
            self._lon_steps: list[tuple[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], bool], ...]] | None
            self._lon_steps = None
            return
        count = self._product_cols.shape[1]
        self._lon_steps = []
        for sub, cols in self._point_steps:
            parts = []
            for on_lat in (True, False):
                mine = np.array([c != 0 and (int(c) in theta_cols) == on_lat for c in cols], dtype=bool)
                if not mine.any():
                    continue
                if 4 * int(mine.sum()) > count:
                    # most outputs take part: one full-width step, the others times column 0 (exact)
                    full = np.zeros(count, dtype=np.int64)
                    full[sub[mine]] = cols[mine]
                    parts.append((np.arange(count), full, on_lat))
                else:
                    parts.append((sub[mine], cols[mine], on_lat))
            self._lon_steps.append(tuple(parts))

    # -- analysis -----------------------------------------------------------------------------

    def _leaf(self, slot: int) -> int:
        return self._leaf_col.setdefault(slot, 1 + len(self._leaf_col))

    def _is(self, operand: _Operand, *op_types: type) -> bool:
        if not isinstance(operand, tuple) or operand[1] in self._per_op:
            return False
        op = self.program.ops[operand[1]]
        return op[0] == "bin" and op[1] in op_types

    def _product(
        self, slot: int, sums: dict[int, list[tuple[float, int]]]
    ) -> tuple[float, list[int | tuple[str, int]]]:
        """``c0 * f1 * f2 ...`` (left-associated): c0 (1.0 if absent, exact) and the factors.

        A factor is a leaf column, or ("sum", slot) for a polynomial evaluated in the sum phase.
        """
        spine: list[_Operand] = []
        operand: _Operand = ("slot", slot)
        while self._is(operand, ast.Mult):
            op = self.program.ops[operand[1]]  # type: ignore[index]
            spine.append(op[3])  # type: ignore[arg-type]
            operand = op[2]  # type: ignore[assignment]
        spine.append(operand)
        spine.reverse()
        c0 = 1.0
        if not isinstance(spine[0], tuple):
            c0 = float(spine.pop(0))  # type: ignore[arg-type]
        if any(not isinstance(f, tuple) for f in spine):
            # A constant after the first factor is not upstream's shape: compute it whole, per op.
            return 1.0, [self._leaf(slot)]
        factors: list[int | tuple[str, int]] = []
        for factor in spine:
            factor_slot = factor[1]  # type: ignore[index]
            if self._is(factor, ast.Add, ast.Sub):
                if factor_slot not in sums:
                    sums[factor_slot] = self._sum(factor_slot)
                factors.append(("sum", factor_slot))
            else:
                factors.append(self._leaf(factor_slot))
        return c0, factors

    def _sum(self, slot: int) -> list[tuple[float, int]]:
        """``t1 ± t2 ± ...`` (left-associated) as terms (constant, leaf column), signs folded in."""
        signed: list[tuple[float, _Operand]] = []
        operand: _Operand = ("slot", slot)
        while self._is(operand, ast.Add, ast.Sub):
            op = self.program.ops[operand[1]]  # type: ignore[index]
            signed.append((-1.0 if op[1] is ast.Sub else 1.0, op[3]))  # type: ignore[arg-type]
            operand = op[2]  # type: ignore[assignment]
        signed.append((1.0, operand))
        signed.reverse()
        terms: list[tuple[float, int]] = []
        for sign, term in signed:
            if not isinstance(term, tuple):
                terms.append((sign * float(term), 0))  # c == c * 1.0
                continue
            op = self.program.ops[term[1]]
            if self._is(term, ast.Mult) and not isinstance(op[2], tuple) and isinstance(op[3], tuple):
                terms.append((sign * float(op[2]), self._leaf(op[3][1])))  # type: ignore[arg-type,index]
            elif self._is(term, ast.Mult) and isinstance(op[2], tuple) and not isinstance(op[3], tuple):
                terms.append((sign * float(op[3]), self._leaf(op[2][1])))  # type: ignore[arg-type,index]
            else:
                terms.append((sign, self._leaf(term[1])))  # y == 1.0 * y
        return terms

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(
        self, theta: torch.Tensor, phi: torch.Tensor, chunk: int = 4096, block: int | None = None
    ) -> torch.Tensor:
        """Return (N, len(expressions)) float64 values for angle tensors of shape (N,), on their device.

        Args:
            theta: (N,) float64 polar angle from the south pole, radians.
            phi: (N,) float64 longitude + pi, radians.
            chunk: points whose leaves are computed together, a multiple of 64 (module docstring).
            block: points per block of the sum and product phases; default 256 at L = 40 on CPU
                (the value table stays cache-sized), the whole chunk on other devices.
        """
        if chunk < 1 or chunk % CHUNK_ALIGNMENT:
            raise ValueError(f"chunk must be a positive multiple of {CHUNK_ALIGNMENT}, got {chunk}")
        device = theta.device
        n = theta.shape[0]
        result = _empty_result(n, len(self.program.outputs), device)
        if block is None:
            # ~400k table entries per block: cache-sized on CPU at L = 40, fewer calls for small L
            block = self._cpu_block() if device.type == "cpu" else chunk
        tables = self._tables(device, "full")
        buffers: dict[str, torch.Tensor] = {}
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            if self._shared and (stop - start) % CHUNK_ALIGNMENT == 0:
                keys, inverse = torch.unique(theta[start:stop].view(torch.int64), return_inverse=True)
                if keys.shape[0] * 4 <= stop - start:
                    self._shared_chunk(theta[start:stop], phi[start:stop], keys, inverse, result[start:stop], block)
                    continue
            values = self.program.run_ops(theta[start:stop], phi[start:stop], self._leaf_ops, self.leaves)
            leaves = _stack([values[slot] for slot in self.leaves], theta[start:stop])  # (leaves, points)
            for first in range(0, stop - start, block):
                last = min(first + block, stop - start)
                self._block(leaves[:, first:last], result[start + first : start + last], tables, buffers)
        return result

    def _shared_chunk(
        self,
        theta: torch.Tensor,
        phi: torch.Tensor,
        keys: torch.Tensor,
        inverse: torch.Tensor,
        out: torch.Tensor,
        block: int,
    ) -> None:
        """One chunk whose points share few latitudes: theta-only work once per latitude.

        The theta-only leaves are computed on the distinct latitudes padded to a multiple of 64
        (so every one takes torch's vector path, as every point of an aligned chunk does), then
        the polynomials and product prefixes once per latitude, then per point only the factors
        from the first longitude-dependent one on.
        """
        device = theta.device
        leaves, prefix = self._latitude_prefix(keys.view(torch.float64), block)
        if self._lon_steps is not None:
            lon_keys, lon_inverse = torch.unique(phi.view(torch.int64), return_inverse=True)
            if lon_keys.shape[0] * 4 <= theta.shape[0]:
                self._shared_lon(lon_keys.view(torch.float64), inverse, lon_inverse, leaves, prefix, out, block)
                return
        # per point: column 0 = 1.0, then the leaves the per-point steps read
        values = self.program.run_ops(theta, phi, self._point_leaf_ops, self._point_leaves)
        points = torch.empty((1 + len(self.leaves), theta.shape[0]), dtype=torch.float64, device=device)
        points[0] = 1.0
        for slot in self._point_leaves:
            points[self._leaf_col[slot]] = values[slot]
        for col in self._theta_cols_per_point:
            points[col] = leaves[col - 1][inverse]
        steps = self._point_steps_on(device)
        full = len(self.program.outputs)
        for first in range(0, theta.shape[0], block):
            last = min(first + block, theta.shape[0])
            rows = out[first:last]
            torch.index_select(prefix, 0, inverse[first:last], out=rows)
            for sub, cols in steps:
                factors = points[:, first:last].index_select(0, cols).t()
                if sub.shape[0] == full:
                    rows.mul_(factors)
                else:
                    rows[:, sub] = rows[:, sub] * factors

    def _shared_lon(
        self,
        distinct_phi: torch.Tensor,
        lat_inverse: torch.Tensor,
        lon_inverse: torch.Tensor,
        lat_leaves: torch.Tensor,
        prefix: torch.Tensor,
        out: torch.Tensor,
        block: int,
    ) -> None:
        """Per-point phase of a chunk that also shares longitudes (:meth:`_plan_longitude_sharing`).

        The longitude leaves are computed on the distinct longitudes padded to a multiple of 64 (the
        vector path, as for the latitudes); each step's factors become a contiguous (distinct,
        outputs) table, so a point costs two row gathers and one multiply per step.
        """
        device = distinct_phi.device
        lon_table = self._longitude_table(distinct_phi)
        lat_table = _value_rows(lat_leaves)
        full = len(self.program.outputs)
        steps: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
        for parts in self._lon_steps or ():
            for sub_np, cols_np, on_lat in parts:
                table = lat_table if on_lat else lon_table
                factors = table.index_select(0, torch.from_numpy(cols_np).to(device)).t().contiguous()
                steps.append((torch.from_numpy(sub_np).to(device), factors, on_lat))
        for first in range(0, out.shape[0], block):
            last = min(first + block, out.shape[0])
            rows = out[first:last]
            torch.index_select(prefix, 0, lat_inverse[first:last], out=rows)
            for sub, factors, on_lat in steps:
                gathered = factors.index_select(0, (lat_inverse if on_lat else lon_inverse)[first:last])
                if sub.shape[0] == full:
                    rows.mul_(gathered)
                else:
                    rows[:, sub] = rows[:, sub] * gathered

    def factorised(self, theta: torch.Tensor, phi: torch.Tensor) -> Factorised | None:
        """The features of points that share few latitudes, as a latitude part and a longitude part.

        Every feature is ``c * (theta-only factors) * (phi-only factors)`` (module docstring), so
        ``features[p, k] = lat[lat_index[p], k] * lon[lon_index[p], group[k]]`` with at most a few
        float64 ulp of difference from :meth:`evaluate` (the same factors, multiplied in another
        order): not the published bits, but what a consumer that contracts the features (the SIREN's
        first layer, :func:`range_dist.encoders.satclip.factorised_linear`) needs to skip the (N, F)
        table.

        Args:
            theta: (N,) float64 polar angle from the south pole, radians.
            phi: (N,) float64 longitude + pi, radians.

        Returns:
            The factors, or None when the program does not split so (a polynomial with a longitude
            term) or the points share too few latitudes (more than one distinct latitude per 4 points).
        """
        if not self._shared or self._lon_steps is None or theta.shape[0] == 0:
            return None
        keys, lat_index = torch.unique(theta.view(torch.int64), return_inverse=True)
        if keys.shape[0] * 4 > theta.shape[0]:
            return None
        lon_keys, lon_index = torch.unique(phi.view(torch.int64), return_inverse=True)
        device = theta.device
        leaves, lat_part = self._latitude_prefix(keys.view(torch.float64), self._cpu_block())
        lat_table = _value_rows(leaves)
        lon_table = self._longitude_table(lon_keys.view(torch.float64))
        lat_steps, signatures, group = self._factor_plan()
        for sub, cols in lat_steps:  # each per-point step's latitude factors, into the latitude part
            index = torch.from_numpy(sub).to(device)
            lat_part[:, index] = lat_part[:, index] * lat_table.index_select(0, torch.from_numpy(cols).to(device)).t()
        lon_part = torch.ones((lon_table.shape[1], len(signatures)), dtype=torch.float64, device=device)
        for g, signature in enumerate(signatures):
            for c in signature:
                lon_part[:, g] *= lon_table[c]
        return Factorised(lat_part[: keys.shape[0]], lon_part[: lon_keys.shape[0]], torch.from_numpy(group).to(device),
                          lat_index, lon_index)

    def _factor_plan(self) -> tuple[list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]], list[tuple[int, ...]],
                                    npt.NDArray[np.int64]]:
        """The per-point steps' latitude factors (outputs, latitude-table columns), the distinct longitude
        factor sequences (longitude-table columns, in step order) and each output's sequence (computed once)."""
        if self._factor_cache is None:
            assert self._lon_steps is not None
            lat_steps = []
            lon_factors: list[list[int]] = [[] for _ in self.program.outputs]
            for parts in self._lon_steps:
                for sub, cols, on_lat in parts:
                    if on_lat:
                        lat_steps.append((sub, cols))
                        continue
                    for k, c in zip(sub.tolist(), cols.tolist()):
                        if c != 0:  # column 0 is 1.0
                            lon_factors[k].append(c)
            signatures = sorted({tuple(f) for f in lon_factors})
            column = {signature: g for g, signature in enumerate(signatures)}
            group = np.array([column[tuple(f)] for f in lon_factors], dtype=np.int64)
            self._factor_cache = (lat_steps, signatures, group)
        return self._factor_cache

    def _cpu_block(self) -> int:
        """Points per block of the sum and product phases on CPU: ~400k table entries, cache-sized at L = 40."""
        return max(256, 409600 // len(self.program.outputs) // 64 * 64)

    def _latitude_prefix(self, distinct: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Theta-only leaves (leaves, A') and product prefixes (A', outputs) of distinct latitudes, padded to A'
        (a multiple of :data:`CHUNK_ALIGNMENT`: every one takes torch's vector path, as the points of an aligned
        chunk do)."""
        lat = _padded(distinct)
        values = self.program.run_ops(lat, lat, self._theta_leaf_ops, self._theta_leaves)  # phi unused
        leaves = torch.zeros((len(self.leaves), lat.shape[0]), dtype=torch.float64, device=lat.device)
        for slot in self._theta_leaves:
            leaves[self._leaf_col[slot] - 1] = values[slot]
        prefix = torch.empty((lat.shape[0], len(self.program.outputs)), dtype=torch.float64, device=lat.device)
        tables = self._tables(lat.device, "prefix")
        buffers: dict[str, torch.Tensor] = {}
        for first in range(0, lat.shape[0], block):
            self._block(leaves[:, first : first + block], prefix[first : first + block], tables, buffers)
        return leaves, prefix

    def _longitude_table(self, distinct_phi: torch.Tensor) -> torch.Tensor:
        """(1 + leaves, O') value table of distinct longitudes padded to O' as :meth:`_latitude_prefix` pads:
        row 0 = 1.0, then the phi-only leaves at their columns."""
        lon = _padded(distinct_phi)
        values = self.program.run_ops(lon, lon, self._point_leaf_ops, self._point_leaves)  # theta unused
        lon_table = torch.zeros((1 + len(self.leaves), lon.shape[0]), dtype=torch.float64, device=lon.device)
        lon_table[0] = 1.0
        for slot in self._point_leaves:
            lon_table[self._leaf_col[slot]] = values[slot]
        return lon_table

    def _point_steps_on(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        key = (device, "point-steps")
        if key not in self._on_device:
            self._on_device[key] = [  # type: ignore[assignment]
                (torch.from_numpy(sub).to(device), torch.from_numpy(cols).to(device))
                for sub, cols in self._point_steps
            ]
        return self._on_device[key]  # type: ignore[return-value]

    def _tables(self, device: torch.device, kind: str) -> _Tables:
        """Index and constant tables on ``device``: whole products ("full") or their theta-only prefixes."""
        if (device, kind) not in self._on_device:
            product_cols = self._product_cols if kind == "full" else self._prefix_cols
            self._on_device[(device, kind)] = _Tables(
                group_coefs=[[torch.from_numpy(c).to(device) for c in g.coefs] for g in self.groups],
                product_cols=[torch.from_numpy(cols).to(device) for cols in product_cols],
                c0=torch.from_numpy(self._c0).to(device),
            )
        return self._on_device[(device, kind)]

    def _block(
        self, leaves: torch.Tensor, out: torch.Tensor, tables: _Tables, buffers: dict[str, torch.Tensor]
    ) -> None:
        """Sum and product phases for one block: leaves (leaves, B) -> out (B, outputs).

        The value table is feature-major (one contiguous row per column of the module docstring's
        table), so every step works on whole rows; ``buffers`` are reused across blocks (fresh
        large CPU arrays would cost a page fault per 4 KiB).
        """
        size = leaves.shape[1]
        if "table" not in buffers or buffers["table"].shape[1] != size:
            device = leaves.device
            buffers["table"] = torch.empty((self.n_columns, size), dtype=torch.float64, device=device)
            buffers["table"][0] = 1.0
            rows = max([g.size for g in self.groups] + [0])
            buffers["scratch"] = torch.empty((rows, size), dtype=torch.float64, device=device)
            outputs = len(self.program.outputs)
            buffers["product"] = torch.empty((outputs, size), dtype=torch.float64, device=device)
            buffers["factors"] = torch.empty((outputs, size), dtype=torch.float64, device=device)
        table, scratch = buffers["table"], buffers["scratch"]
        product, factors = buffers["product"], buffers["factors"]
        table[1 : 1 + leaves.shape[0]] = leaves
        for group, coefs in zip(self.groups, tables.group_coefs):
            acc = table[group.start : group.start + group.size]
            acc.fill_(-0.0)
            for row, count, coef in zip(group.rows, group.counts, coefs):
                terms = scratch[:count]
                torch.mul(coef, table[row], out=terms)
                acc[:count].add_(terms)
        torch.index_select(table, 0, tables.product_cols[0], out=product)
        if not self._c0_is_one:
            product.mul_(tables.c0)
        for cols in tables.product_cols[1:]:
            torch.index_select(table, 0, cols, out=factors)
            product.mul_(factors)
        out.copy_(product.t())


@dataclass(frozen=True)
class _Tables:
    """The index and constant tables of a :class:`VectorisedProgram` on one device."""

    group_coefs: list[list[torch.Tensor]]  # per group, per step: float64 (count, 1)
    product_cols: list[torch.Tensor]  # per product step: int64 (outputs,)
    c0: torch.Tensor  # float64 (outputs, 1)


def _value_rows(leaves: torch.Tensor) -> torch.Tensor:
    """(1 + leaves, n) value-table rows of (leaves, n) leaf values: row 0 = 1.0, value-table column c at row c."""
    return torch.cat([torch.ones_like(leaves[:1]), leaves])


def _padded(distinct: torch.Tensor) -> torch.Tensor:
    """``distinct`` padded with its last value to a multiple of :data:`CHUNK_ALIGNMENT` (torch's vector path
    for every element, as for the points of an aligned chunk)."""
    padded = (distinct.shape[0] + CHUNK_ALIGNMENT - 1) // CHUNK_ALIGNMENT * CHUNK_ALIGNMENT
    return torch.cat([distinct, distinct[-1:].expand(padded - distinct.shape[0])])


def _stack(rows: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """(len(rows), N) float64; (0, N) when there are no leaves (L = 1: a constant)."""
    return torch.stack(rows) if rows else like.new_empty((0, like.shape[0]))


def _empty_result(rows: int, columns: int, device: torch.device) -> torch.Tensor:
    """An uninitialised (rows, columns) float64 tensor; on CPU backed by numpy's allocator.

    Why numpy: it asks Linux for transparent huge pages for large arrays (``madvise``), so the
    first write to the ~13 KB of features per point page-faults 512x less often than with torch's
    allocator; at L = 40 that fault cost alone was ~1/4 of the old evaluation's time.
    """
    if device.type == "cpu":
        return torch.from_numpy(np.empty((rows, columns), dtype=np.float64))
    return torch.empty((rows, columns), dtype=torch.float64, device=device)


def _group_sums(
    sums: dict[int, list[tuple[float, int]]], first_column: int
) -> tuple[list[_SumGroup], dict[int, int]]:
    """Group polynomials whose term columns are suffixes of a common master sequence.

    Returns the groups (columns from ``first_column`` on) and each polynomial's column. At L = 40
    there are three groups: the even and the odd polynomials, and one printed constant-first.
    """
    members: list[list[int]] = []  # per group, sum slots, longest first
    masters: list[tuple[int, ...]] = []
    by_suffix: dict[tuple[int, ...], int] = {}
    for slot in sorted(sums, key=lambda s: (-len(sums[s]), s)):
        sequence = tuple(col for _, col in sums[slot])
        if sequence not in by_suffix:
            for i in range(len(sequence)):
                by_suffix.setdefault(sequence[i:], len(masters))
            masters.append(sequence)
            members.append([])
        members[by_suffix[sequence]].append(slot)
    groups: list[_SumGroup] = []
    sum_col: dict[int, int] = {}
    column = first_column
    for master, slots in zip(masters, members):
        counts, coefs = [], []
        for j in range(len(master)):
            live = [s for s in slots if len(sums[s]) >= len(master) - j]  # a prefix: longest first
            counts.append(len(live))
            row = [sums[s][j - (len(master) - len(sums[s]))][0] for s in live]
            coefs.append(np.array(row, dtype=np.float64)[:, None])
        groups.append(_SumGroup(column, len(slots), master, tuple(counts), tuple(coefs)))
        for i, slot in enumerate(slots):
            sum_col[slot] = column + i
        column += len(slots)
    return groups, sum_col
