"""Exact soft retrieval over the whole database, all β levels in one pass, shardable.

For queries q̂ (unit SatCLIP embeddings) and their unit vectors xyz_q, over database rows with unit
keys K̂, unit vectors xyz_db and values V:

* semantic head: ``A = softmax(τ_sem q̂·K̂ᵀ)``, ``H_sem = A·V``
* spatial head (RANGE+): ``G = softmax(τ_geo xyz_q·xyz_dbᵀ)``, ``H_geo = G·V``
* RANGE+: ``H_β = (1-β)·H_geo + β·H_sem``; RANGE: ``H = H_sem``; output ``[H | q̂]``.

How it is computed (and why it is exact):

* Softmax is shift-invariant. The scores are bounded by τ (cosines of unit vectors), so a fixed
  shift of τ keeps every exponent in [-2τ, 0]: no overflow, and for τ <= 43 no float32 underflow
  of the largest term. Larger τ falls back to a running maximum. No per-chunk max pass is needed
  on the fast path.
* Each head keeps the partial statistics (shift, Σ exp, Σ exp·V). A ones column appended to V
  makes Σ exp come out of the same matrix product as Σ exp·V, and the two heads' weights are
  stacked so one product serves both.
* Partials from disjoint row ranges (chunks, shards on other actors) merge exactly:
  ``S = Σ_i S_i·exp(m_i - m)``, the same for the weighted sums.
* H_sem and H_geo are computed once; K β levels are K cheap blends.

Precision (``RetrievalSettings.precision``): ``fp32`` everywhere by default. On a CUDA device,
``tf32`` lets the values product (the dominant one) use TF32 tensor cores, and ``bf16`` feeds it
bf16 weights and values with a float32 result. The score products, exponentials and softmax
statistics stay full float32 in every mode: a bf16 score (8 bits of mantissa at |score| <= τ = 40)
would move the weights by up to 15 %, a TF32 one (10 bits) by up to ~2 %.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import torch

from range_dist.config.values import parse_betas, parse_variant

if TYPE_CHECKING:
    from range_dist.database.store import RetrievalDatabase

Variant = Literal["range", "range+"]
Precision = Literal["fp32", "tf32", "bf16"]

#: Published temperatures (docs/method.md §Variants and constants): RANGE τ_sem = 15; RANGE+ τ_sem = 12, τ_geo = 40.
VARIANTS: dict[str, tuple[float, float | None]] = {"range": (15.0, None), "range+": (12.0, 40.0)}

#: Locations encoded per SatCLIP call (:class:`~range_dist.retrieval.encoder.RangeEncoder`): the published
#: harmonics cost a fixed ~14k small torch ops per call, so they are evaluated on large batches and the
#: retrieval then runs in smaller blocks.
LOCATION_BATCH = 16384

# Largest τ for which the static shift is safe in float32: exp(-2τ) must stay a normal number.
_MAX_STATIC_TAU = 43.0


#: Most queries in one block of the exact retrieval (on any device; the block shape and the memory budget
#: can only make a block smaller).
MAX_QUERY_BLOCK = 1024


@dataclass(frozen=True)
class RetrievalSettings:
    """What to retrieve and how to chunk it.

    Attributes:
        variant: ``range`` (semantic head only) or ``range+`` (semantic + spatial heads).
        tau_sem: semantic softmax temperature (published: 15 for RANGE, 12 for RANGE+).
        tau_geo: spatial softmax temperature (published 40 for RANGE+; None for RANGE).
        heads: which heads to compute: ``("sem", "geo")`` for RANGE+, ``("sem",)`` for RANGE. A
            RANGE+ run whose β are all 1 (or all 0) needs only one head.
        query_chunk: queries per block (rows of the score matrices).
        db_chunk: database rows per block (columns of the score matrices).
        precision: ``fp32`` (default), ``tf32`` or ``bf16`` matrix products (see the module notes;
            on CPU, tf32 is the same as fp32 and bf16 is emulated, slowly, for testing).
    """

    variant: Variant = "range+"
    tau_sem: float = 12.0
    tau_geo: float | None = 40.0
    heads: tuple[str, ...] = ("sem", "geo")
    query_chunk: int = 512
    db_chunk: int = 4096
    precision: Precision = "fp32"

    @classmethod
    def for_variant(
        cls,
        variant: str,
        betas: Sequence[float] = (0.5,),
        tau_sem: float | None = None,
        tau_geo: float | None = None,
        **chunking: int,
    ) -> RetrievalSettings:
        """Published temperatures for ``variant``, and only the heads that ``betas`` need."""
        default_sem, default_geo = VARIANTS[parse_variant(variant)]
        betas = parse_betas(betas)
        if variant == "range":
            heads: tuple[str, ...] = ("sem",)
        elif all(float(b) == 1.0 for b in betas):
            heads = ("sem",)
        elif all(float(b) == 0.0 for b in betas):
            heads = ("geo",)
        else:
            heads = ("sem", "geo")
        settings = cls(
            variant=variant,  # type: ignore[arg-type]
            tau_sem=float(tau_sem if tau_sem is not None else default_sem),
            tau_geo=None if variant == "range" else float(tau_geo if tau_geo is not None else default_geo),  # type: ignore[arg-type]
            heads=heads,
        )
        return replace(settings, **chunking) if chunking else settings  # type: ignore[arg-type]

    def tau(self, head: str) -> float:
        tau = self.tau_sem if head == "sem" else self.tau_geo
        assert tau is not None
        return tau


#: Rows per block when the keys are normalised (float64 temporaries of this many rows only).
NORMALISE_ROWS = 8192


def _unit_rows(keys: npt.NDArray[np.floating] | torch.Tensor, device: str | torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    """(M, K) rows of ``keys`` scaled to unit norm in float64, then cast to ``dtype`` on ``device``.

    Row blocks: the same values as normalising a float64 copy of all the keys at once (each row is
    its own), without the (M, K) float64 copy (0.6 s of fresh memory per encoder at 100k x 256).
    """
    out = torch.empty(tuple(keys.shape), dtype=dtype, device=device)
    for start in range(0, keys.shape[0], NORMALISE_ROWS):
        rows = keys[start : start + NORMALISE_ROWS]
        # a writable float64 copy of each block: the keys may be a read-only view (Ray's object store),
        # which torch.from_numpy warns about
        block = rows.to(torch.float64) if isinstance(rows, torch.Tensor) else torch.from_numpy(
            np.array(rows, dtype=np.float64))
        out[start : start + NORMALISE_ROWS] = torch.nn.functional.normalize(block, dim=1).to(device=device, dtype=dtype)
    return out


#: Databases derived from one DeviceDatabase kept with it (:meth:`DeviceDatabase.derived`): a plan's PCA
#: coefficients and the error sketches of them and of the full values.
DERIVED_KEPT = 4


class DeviceDatabase:
    """The database rows as the engine uses them, resident on one device.

    Attributes:
        keys: (M, K) unit keys, float32.
        xyz: (M, 3) unit vectors of the row locations, float32.
        values_aug: (M, D + 1) values with a trailing ones column, float32.
    """

    def __init__(
        self,
        keys: npt.NDArray[np.floating] | torch.Tensor,
        locations: npt.NDArray[np.float64],
        values: npt.NDArray[np.floating] | torch.Tensor | None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        values_with_ones: npt.NDArray[np.float32] | None = None,
    ) -> None:
        from range_dist.geo.coords import lonlat_to_xyz

        self.keys = _unit_rows(keys, device, dtype)
        xyz = lonlat_to_xyz(np.asarray(locations, dtype=np.float64))
        self.xyz = torch.as_tensor(xyz).to(device=device, dtype=dtype)
        if values_with_ones is not None and torch.device(device).type == "cpu" and dtype == torch.float32:
            # the database's own (M, D + 1) buffer: the values are held once per process
            with warnings.catch_warnings():  # read-only (Ray object store) arrays: the engine never writes them
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
                self.values_aug = torch.from_numpy(values_with_ones)
        else:
            source = values_with_ones[:, :-1] if values_with_ones is not None else values
            assert source is not None, "values or values_with_ones is needed"
            values_t = torch.as_tensor(np.require(source, requirements="W"))  # copies read-only (shared) arrays
            aug = torch.empty((values_t.shape[0], values_t.shape[1] + 1), dtype=dtype, device=device)
            aug[:, :-1] = values_t.to(device=device, dtype=dtype)
            aug[:, -1] = 1.0
            self.values_aug = aug
        self.device = torch.device(device)
        self.dtype = dtype

    @classmethod
    def from_database(cls, database: RetrievalDatabase, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> DeviceDatabase:
        """The rows of ``database`` on ``device``; on a CPU in float32 the values buffer is shared, not copied.

        On a CPU the rows of a database read from a file (read-only) are made once and kept with it
        (:meth:`RetrievalDatabase.kept`): a grid run's planner and its tiles, in one process, then
        share them and what is derived from them (:meth:`derived`: the fast mode's error sketch and
        PCA coefficients), instead of normalising the keys and projecting the values again
        (0.3 s at 100k rows). A device copy is never kept beyond its encoders.
        """
        def make() -> DeviceDatabase:
            return cls(database.keys, database.locations, None, device, dtype,
                       values_with_ones=database.values_with_ones)

        if torch.device(device).type != "cpu":
            return make()
        return database.kept(("device rows", str(device), dtype), make)  # type: ignore[no-any-return]

    def with_values(self, values_aug: torch.Tensor) -> DeviceDatabase:
        """The same rows (keys and locations shared, not copied) with other (M, C + 1) values."""
        other = object.__new__(DeviceDatabase)
        # what is kept of these values (bf16 copy, derived databases) is not the new values'
        other.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("_values_bf16", "_derived")})
        other.values_aug = values_aug
        return other

    def derived(self, key: Hashable, make: Callable[[], DeviceDatabase]) -> DeviceDatabase:
        """``make()``: these rows with other values (e.g. an error sketch of them), made once per ``key`` and
        kept with these rows (the :data:`DERIVED_KEPT` most recent), so that every user of these rows shares it.

        ``key`` must name the values' content (e.g. a digest of the projection that makes them).
        """
        kept: dict[Hashable, DeviceDatabase] = self.__dict__.setdefault("_derived", {})
        made = kept.pop(key, None)
        if made is None:
            made = make()
        kept[key] = made  # most recent last
        while len(kept) > DERIVED_KEPT:
            kept.pop(next(iter(kept)))
        return made

    @property
    def rows(self) -> int:
        return int(self.keys.shape[0])

    @property
    def values_bf16(self) -> torch.Tensor:
        """(M, D + 1) bf16 copy of ``values_aug`` for the bf16 values product (made once, kept)."""
        cached = self.__dict__.get("_values_bf16")
        if cached is None or cached.shape != self.values_aug.shape:
            cached = self.values_aug.to(torch.bfloat16)
            self.__dict__["_values_bf16"] = cached
        return cached

    @property
    def value_dim(self) -> int:
        return int(self.values_aug.shape[1] - 1)

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.keys, self.xyz, self.values_aug))


@dataclass
class Partials:
    """Softmax partial statistics of some database rows, per head (exactly mergeable).

    Attributes:
        heads: head names, e.g. ("sem", "geo").
        shift: (H, n) the exponent shift m: weights are exp(score - m).
        sums: (H, n) Σ exp(score - m).
        weighted: (H, n, D) Σ exp(score - m)·V.
    """

    heads: tuple[str, ...]
    shift: torch.Tensor
    sums: torch.Tensor
    weighted: torch.Tensor

    def averages(self) -> torch.Tensor:
        """(H, n, D) softmax-weighted averages of the values."""
        return self.weighted / self.sums.unsqueeze(-1)

    def to(self, device: str | torch.device) -> Partials:
        return Partials(self.heads, self.shift.to(device), self.sums.to(device), self.weighted.to(device))

    def numpy(self) -> dict[str, object]:
        """Plain arrays (for transport between processes)."""
        return {
            "heads": self.heads,
            "shift": self.shift.cpu().numpy(),
            "sums": self.sums.cpu().numpy(),
            "weighted": self.weighted.cpu().numpy(),
        }

    @classmethod
    def from_numpy(cls, payload: dict[str, object]) -> Partials:
        return cls(
            tuple(payload["heads"]),  # type: ignore[arg-type]
            torch.from_numpy(payload["shift"]),  # type: ignore[arg-type]
            torch.from_numpy(payload["sums"]),  # type: ignore[arg-type]
            torch.from_numpy(payload["weighted"]),  # type: ignore[arg-type]
        )


def merge_partials(parts: Sequence[Partials]) -> Partials:
    """Merge partials of disjoint row sets of the same queries into those of their union (exact).

    Args:
        parts: at least one Partials with the same heads and queries.

    Returns:
        Partials equal (up to rounding) to computing over all rows at once.
    """
    if len(parts) == 1:
        return parts[0]
    heads = parts[0].heads
    if any(p.heads != heads for p in parts):
        raise ValueError(f"cannot merge partials of different heads: {[p.heads for p in parts]}")
    shift = torch.stack([p.shift for p in parts]).amax(dim=0)
    sums = torch.zeros_like(parts[0].sums)
    weighted = torch.zeros_like(parts[0].weighted)
    for p in parts:
        scale = torch.exp(p.shift - shift)
        sums += p.sums * scale
        weighted += p.weighted * scale.unsqueeze(-1)
    return Partials(heads, shift, sums, weighted)


def _head_scores(
    head: str, q_hat: torch.Tensor, q_xyz: torch.Tensor, db: DeviceDatabase, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if head == "sem":
        return q_hat, db.keys[start:stop]
    return q_xyz, db.xyz[start:stop]


def retrieve_partials(
    q_hat: torch.Tensor, q_xyz: torch.Tensor, db: DeviceDatabase, settings: RetrievalSettings
) -> Partials:
    """Partial softmax statistics of ``db``'s rows for a block of queries.

    Args:
        q_hat: (n, K) unit query embeddings, on ``db.device``, ``db.dtype``.
        q_xyz: (n, 3) unit vectors of the query locations, same device and dtype.
        db: the (shard of the) database.
        settings: heads, temperatures and chunk sizes.

    Returns:
        Partials for ``settings.heads`` over all rows of ``db``.
    """
    # Scores are full float32 in every mode, whatever the process-wide TF32 setting: a TF32 score
    # (10-bit mantissa) at |τ·s| up to 40 moves a softmax weight by up to ~2 % (measured on an H200:
    # 3e-3 relative error of the embedding with TF32 scores, against 8.6e-7 in fp32).
    with tf32_matmuls(False, db.device):
        return _retrieve_partials(q_hat, q_xyz, db, settings)


@contextmanager
def tf32_matmuls(enabled: bool, device: torch.device) -> Iterator[None]:
    """Allow (or forbid) TF32 tensor cores for float32 CUDA matrix products inside the block (restored after)."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _values_product(acc: torch.Tensor, weights: torch.Tensor, db: DeviceDatabase, start: int, stop: int,
                    precision: str) -> None:
    """acc += weights · values_aug[start:stop] (float32 accumulator; TF32 or bf16 inputs when asked)."""
    if precision != "bf16":
        with tf32_matmuls(precision == "tf32", acc.device):
            acc.addmm_(weights, db.values_aug[start:stop])
        return
    w16 = weights.to(torch.bfloat16)
    if acc.device.type == "cuda":  # bf16 tensor cores, float32 result (no bf16 rounding of the sums)
        acc.add_(torch.mm(w16, db.values_bf16[start:stop], out_dtype=torch.float32))
    else:  # CPU emulation for tests: the same rounded inputs, products summed in float32
        acc.addmm_(w16.float(), db.values_bf16[start:stop].float())


def _retrieve_partials(
    q_hat: torch.Tensor, q_xyz: torch.Tensor, db: DeviceDatabase, settings: RetrievalSettings
) -> Partials:
    heads = settings.heads
    n_heads, n = len(heads), q_hat.shape[0]
    taus = [settings.tau(h) for h in heads]
    static = all(t <= _MAX_STATIC_TAU for t in taus)
    dev, dt = db.device, db.dtype
    width = db.values_aug.shape[1]
    acc = torch.zeros((n_heads * n, width), dtype=dt, device=dev)
    shift = torch.tensor(taus, dtype=dt, device=dev).repeat_interleave(n)  # (H*n,)
    if not static:
        shift = torch.full((n_heads * n,), -float("inf"), dtype=dt, device=dev)
    weights = torch.empty((n_heads * n, min(settings.db_chunk, db.rows)), dtype=dt, device=dev)
    for start in range(0, db.rows, settings.db_chunk):
        stop = min(start + settings.db_chunk, db.rows)
        block = weights[:, : stop - start]
        for i, head in enumerate(heads):
            queries, rows = _head_scores(head, q_hat, q_xyz, db, start, stop)
            out = block[i * n : (i + 1) * n]
            if static:
                # out = τ·(q·rowsᵀ) - τ, written in place: no temporary of the score block.
                torch.addmm(shift[i * n : i * n + 1].view(1, 1).expand(n, stop - start), queries, rows.T,
                             beta=-1.0, alpha=taus[i], out=out)
            else:
                torch.mm(queries, rows.T, out=out)
                out.mul_(taus[i])
        if not static:
            new_shift = torch.maximum(shift, block.amax(dim=1))
            acc.mul_(torch.exp(shift - new_shift).nan_to_num_(0.0).unsqueeze(1))
            block.sub_(new_shift.unsqueeze(1))
            shift = new_shift
        block.exp_()
        _values_product(acc, block, db, start, stop, settings.precision)
    acc = acc.view(n_heads, n, width)
    return Partials(heads, shift.view(n_heads, n), acc[:, :, -1].contiguous(), acc[:, :, :-1])


def blend(partials: Partials, q_hat: torch.Tensor, betas: Sequence[float], variant: str) -> torch.Tensor:
    """Final RANGE / RANGE+ embeddings ``[H_β | q̂]`` for each β.

    Args:
        partials: merged statistics over the whole database.
        q_hat: (n, K) unit query embeddings.
        betas: β levels (RANGE+: weight of the semantic head; ignored by RANGE).
        variant: ``range`` or ``range+``.

    Returns:
        (B, n, D + K) tensor, dtype of ``partials``.
    """
    return blend_heads(dict(zip(partials.heads, partials.averages())), q_hat, betas, variant)


def blend_heads(
    by_head: dict[str, torch.Tensor],
    q_hat: torch.Tensor,
    betas: Sequence[float],
    variant: str,
    reconstruct: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``[H_β | q̂]`` for each β from the heads' (n, C) averages.

    Args:
        by_head: (n, C) softmax-weighted averages per head name.
        q_hat: (n, K) unit query embeddings.
        betas: β levels.
        variant: ``range`` or ``range+``.
        reconstruct: maps (n, C) averages to (n, D) values (the fast mode's PCA basis: blending
            is linear, so it is done on the C coefficients first); None when C = D.

    Returns:
        (B, n, D + K) tensor.
    """
    first = next(iter(by_head.values()))
    n = first.shape[0]
    d = first.shape[1] if reconstruct is None else reconstruct(first[:1]).shape[1]
    out = torch.empty((len(betas), n, d + q_hat.shape[1]), dtype=first.dtype, device=first.device)
    for b, beta in enumerate(betas):
        beta = float(beta)
        target = out[b, :, :d] if reconstruct is None else torch.empty_like(first)
        if variant == "range" or beta == 1.0:
            target.copy_(by_head["sem"])
        elif beta == 0.0:
            target.copy_(by_head["geo"])
        else:  # (1-β)·H_geo + β·H_sem in one fused pass
            torch.lerp(by_head["geo"], by_head["sem"], beta, out=target)
        if reconstruct is not None:
            out[b, :, :d] = reconstruct(target)
        out[b, :, d:] = q_hat
    return out
