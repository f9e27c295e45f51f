"""``RangeEncoder``: locations in, RANGE / RANGE+ embeddings out (the public entry point).

Glue between the SatCLIP location encoder, a database (or one shard of it) resident on a device,
and the pure retrieval engine. Queries are processed in blocks, so memory stays bounded whatever
N is; all β levels come out of one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from range_dist.config.values import check_tolerance, parse_mode, parse_precision, parse_variant, resolve_device
from range_dist.database.store import RetrievalDatabase
from range_dist.errors import ConfigError
from range_dist.geo.coords import lonlat_to_xyz, validate_lonlat
from range_dist.retrieval.engine import (
    LOCATION_BATCH,
    MAX_QUERY_BLOCK,
    DeviceDatabase,
    Partials,
    RetrievalSettings,
    blend,
    blend_heads,
    merge_partials,
    retrieve_partials,
)
from range_dist.retrieval.fast.plan import FastPlan
from range_dist.retrieval.fast.planner import plan_fast
from range_dist.retrieval.fast.retriever import VALIDATION_POINTS, FastRetriever, RetrievalContext
from range_dist.retrieval.timing import StageTimes

#: Points per fast-mode batch: one lattice (and one set of check points) serves them all, so a whole
#: 256² tile shares its nodes; bounds the (n, C) head averages held at once.
FAST_BATCH = 65536

#: Stage names of :attr:`RangeEncoder.stages` (the fast retriever adds ``<head>: ...`` stages).
STAGE_FEATURES = "harmonics + SIREN"
STAGE_BLEND = "blending"
STAGE_CAST = "casting + copy out"


#: Block shapes of the exact retrieval per device type: database rows per block, and the largest score
#: block (bytes, all heads). On CPU, 8192-row blocks whose score block stays 16 MiB (256 queries for two
#: heads, 512 for one) ran the 100k-row retrieval at 0.86-0.87 of the machine's matrix-product rate
#: against 0.70-0.71 for 1024 queries x 4096 rows (``benchmarks/retrieval.py --sweep`` and
#: ``--query-chunk/--db-chunk``, 2-core EPYC at 180-190 GFLOP/s); a GPU keeps the larger query blocks
#: that fill it. The memory budget can only make a block smaller.
_GPU_SCORE_BLOCK_BYTES = MAX_QUERY_BLOCK * 2 * 4096 * 4  # two heads of 1024 queries x 4096 rows, float32
BLOCK_SHAPES: dict[str, tuple[int, int]] = {"cpu": (8192, 16 * 2**20), "cuda": (4096, _GPU_SCORE_BLOCK_BYTES)}


def block_shape(device: torch.device) -> tuple[int, int]:
    """(database rows per block, largest score block in bytes) for ``device``; CUDA's for other accelerators."""
    return BLOCK_SHAPES.get(device.type, BLOCK_SHAPES["cuda"])


def query_block_size(db_chunk: int, width: int, n_heads: int, memory_budget_bytes: int, dtype_bytes: int = 4,
                     score_block_bytes: int = _GPU_SCORE_BLOCK_BYTES) -> int:
    """Queries per block (16 to :data:`MAX_QUERY_BLOCK`): the score block within ``score_block_bytes``, and
    the score block plus the accumulator within the memory budget."""
    most = min(MAX_QUERY_BLOCK, score_block_bytes // (n_heads * db_chunk * dtype_bytes))
    per_query = n_heads * (db_chunk + width) * dtype_bytes
    return max(16, min(most, memory_budget_bytes // per_query))


class RangeEncoder:
    """RANGE / RANGE+ geo-embeddings for arbitrary locations.

    Args:
        location_encoder: SatCLIP location encoder ((N, 2) float64 lon/lat -> (N, K)).
        database: the retrieval database (or one shard of it).
        variant: ``range+`` (default) or ``range``.
        device: ``cpu``, ``cuda`` or ``cuda:N``; the database is moved there once.
        tau_sem: semantic temperature; default the published one for the variant.
        tau_geo: spatial temperature (RANGE+); default the published 40.
        db_chunk: database rows per block; default the device's (:data:`BLOCK_SHAPES`).
        memory_budget_mb: bound on the per-block working memory (score block + accumulators).
        stages: seconds per stage of every call so far (:class:`StageTimes`; reset it between runs).
        mode: ``exact`` (default) or ``fast`` (approximations validated to ``tolerance``; see
            :mod:`range_dist.retrieval.fast`). A fast encoder plans on the points of its first
            :meth:`encode` call unless :meth:`plan_fast` or :meth:`use_plan` is called first.
        tolerance: the fast mode's bound on the relative error per point (e.g. 1e-3).
        precision: matrix products on a CUDA device: ``fp32`` (default), ``tf32`` or ``bf16`` (bf16
            values product, float32 softmax statistics; see :mod:`range_dist.retrieval.engine`).
            A CPU always computes in float32 (these CPUs have no fast bf16): ``precision_used`` says.

    Example:
        >>> enc = RangeEncoder(load_satclip_location_encoder("satclip.ckpt"), RetrievalDatabase.open("db.zarr"))
        >>> emb = enc.encode(np.array([[8.5, 47.4]]), betas=(0.0, 0.5, 1.0))  # (3, 1, 1280) float32
    """

    def __init__(
        self,
        location_encoder: torch.nn.Module,
        database: RetrievalDatabase,
        variant: str = "range+",
        device: str | torch.device = "cpu",
        *,
        tau_sem: float | None = None,
        tau_geo: float | None = None,
        db_chunk: int | None = None,
        memory_budget_mb: float = 256.0,
        mode: str = "exact",
        tolerance: float | None = None,
        precision: str = "fp32",
    ) -> None:
        check_tolerance(parse_mode(mode), tolerance)  # fast: one in (0, 1); exact: kept for a later plan_fast
        self.mode, self.tolerance = mode, tolerance
        self.fast: FastRetriever | None = None
        self.stages = StageTimes()
        self.fast_betas: tuple[float, ...] | None = None
        self.device = resolve_device(device)
        precision = parse_precision(precision)
        self.precision_used = precision if self.device.type == "cuda" else "fp32"
        embed_dim = int(getattr(location_encoder, "embed_dim", database.key_dim))
        database.check_compatible(embed_dim)
        self.variant = parse_variant(variant)
        RetrievalSettings.for_variant(variant, tau_sem=tau_sem, tau_geo=tau_geo)  # validates the τ early
        self.tau_sem, self.tau_geo = tau_sem, tau_geo
        self.location_encoder = location_encoder.to(self.device).eval()
        self.database = database
        self.db = DeviceDatabase.from_database(database, device=self.device)
        default_chunk, self.score_block_bytes = block_shape(self.device)
        self.db_chunk = default_chunk if db_chunk is None else int(db_chunk)
        self.memory_budget_bytes = int(memory_budget_mb * 2**20)

    def plan_fast(self, lonlat: npt.ArrayLike, betas: Sequence[float], tolerance: float | None = None,
                  validation_points: int = VALIDATION_POINTS) -> FastPlan:
        """Choose and validate fast-mode approximations on these points, and use them from now on.

        Raises:
            ConfigError: no tolerance here or at construction, or one outside (0, 1).
            ToleranceError: the tolerance cannot be met (the encoder stays as it was).
        """
        tol = check_tolerance("fast", self.tolerance if tolerance is None else tolerance)
        assert tol is not None  # refused above for mode fast
        plan = plan_fast(self.retrieval_context(), lonlat, betas, tol, validation_points)
        self.use_plan(plan, betas)
        return plan

    def use_plan(self, plan: FastPlan, betas: Sequence[float]) -> None:
        """Embed with an already validated plan (e.g. planned on the driver of a grid run)."""
        self.mode, self.tolerance = "fast", plan.tolerance
        self.fast = FastRetriever(self.retrieval_context(), plan, stages=self.stages)
        self.fast_betas = tuple(float(b) for b in betas)

    def retrieval_context(self) -> RetrievalContext:
        """What the fast mode needs of this encoder: its device rows, query features, variant and settings."""
        return RetrievalContext(db=self.db, features=self.query_features, variant=self.variant,
                                settings=self.settings, values=self.database.values)

    @property
    def output_dim(self) -> int:
        """Width of an embedding: value dim + key dim (1024 + 256 = 1280 for the published assets)."""
        return self.db.value_dim + self.database.key_dim

    def settings(self, betas: Sequence[float]) -> RetrievalSettings:
        """Retrieval settings for these β levels (published temperatures unless overridden)."""
        settings = RetrievalSettings.for_variant(
            self.variant, betas, self.tau_sem, self.tau_geo, db_chunk=self.db_chunk
        )
        block = query_block_size(self.db_chunk, self.db.value_dim + 1, len(settings.heads), self.memory_budget_bytes,
                                 score_block_bytes=self.score_block_bytes)
        return RetrievalSettings(**{**settings.__dict__, "query_chunk": block, "precision": self.precision_used})

    @torch.no_grad()
    def query_features(self, lonlat: npt.NDArray[np.float64]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit SatCLIP embeddings q̂ (N, K) and unit vectors (N, 3) on the device, float32."""
        with self.stages.stage(STAGE_FEATURES):
            q = self.location_encoder(torch.from_numpy(lonlat).to(self.device))
            q_hat = torch.nn.functional.normalize(q, dim=1).to(self.db.dtype)
            xyz = torch.from_numpy(lonlat_to_xyz(lonlat)).to(self.device, self.db.dtype)
        return q_hat, xyz

    @torch.no_grad()
    def partials(self, lonlat: npt.ArrayLike, betas: Sequence[float] = (0.5,)) -> tuple[Partials, torch.Tensor]:
        """Softmax partial statistics over this encoder's rows (for merging shards), and q̂.

        Returns:
            (Partials on CPU for all N locations, q̂ (N, K) float32 CPU tensor).
        """
        if self.mode != "exact":
            raise ConfigError("database shards merge exact partial statistics: use mode 'exact' with db_shards > 1")
        points = validate_lonlat(lonlat)
        settings = self.settings(betas)
        parts, q_hats = [], []
        for start in range(0, len(points), LOCATION_BATCH):
            q_hat, xyz = self.query_features(points[start : start + LOCATION_BATCH])
            for qs in range(0, q_hat.shape[0], settings.query_chunk):
                block = slice(qs, qs + settings.query_chunk)
                parts.append(retrieve_partials(q_hat[block], xyz[block], self.db, settings).to("cpu"))
            q_hats.append(q_hat.cpu())
        return concat_partials(parts), torch.cat(q_hats)

    @torch.no_grad()
    def encode(
        self,
        lonlat: npt.ArrayLike,
        betas: Sequence[float] = (0.5,),
        on_progress: Callable[[int], None] | None = None,
        dtype: npt.DTypeLike = np.float32,
        out: npt.NDArray[np.floating] | None = None,
        rows: npt.NDArray[np.integer] | None = None,
    ) -> npt.NDArray[np.floating]:
        """RANGE / RANGE+ embeddings of locations at each β level.

        Args:
            lonlat: (N, 2) (lon, lat) degrees.
            betas: β levels in [0, 1] (RANGE+: 0 = spatial head only, 1 = semantic only).
            on_progress: called with the number of points finished after each block.
            dtype: output dtype (float32, or float16 for cubes: cast per block on the device).
            out: (B, R, D + K) array to write into instead of a new one (its dtype is the output's),
                e.g. a tile's block with its ocean cells already NaN.
            rows: (N,) where each point goes along ``out``'s second axis (default: 0 .. N - 1).

        Returns:
            (B, N, D + K) ``[H_β | q̂]`` for each β (D = 1024, K = 256 for published assets), or ``out``.

        Raises:
            CoordinateError: a NaN / infinite / out-of-range location (the first bad row is named).
            ConfigError: a β outside [0, 1].
            ValueError: ``out`` or ``rows`` of the wrong shape.
        """
        points = validate_lonlat(lonlat)
        betas = tuple(float(b) for b in betas)
        if out is None:
            out = np.empty((len(betas), len(points), self.output_dim), dtype=dtype)
        width = len(points) if rows is None else int(out.shape[1])
        if out.shape != (len(betas), width, self.output_dim) or (rows is not None and rows.shape != (len(points),)):
            raise ValueError(f"out {out.shape} / rows {None if rows is None else rows.shape} do not fit "
                             f"{len(betas)} β × {len(points)} points × {self.output_dim} features")
        settings = self.settings(betas)
        if self.mode == "fast" and (self.fast is None or self.fast_betas != betas):
            self.plan_fast(points, betas)  # validated on this call's own points
        torch_dtype = torch.from_numpy(out[:0, :0]).dtype
        exact_stage = f"retrieval exact ({'+'.join(settings.heads)})"
        step = LOCATION_BATCH if self.fast is None else FAST_BATCH
        for start in range(0, len(points), step):
            batch = points[start : start + step]
            features = [self.query_features(batch[s : s + LOCATION_BATCH])
                        for s in range(0, len(batch), LOCATION_BATCH)]
            q_hat = torch.cat([f[0] for f in features]) if len(features) > 1 else features[0][0]
            xyz = torch.cat([f[1] for f in features]) if len(features) > 1 else features[0][1]
            del features
            # fast mode: the heads of the whole batch at once (its lattice nodes are shared), then blocks
            averages = None if self.fast is None else self.fast.head_averages(batch, q_hat, xyz, betas, settings)
            for qs in range(0, q_hat.shape[0], settings.query_chunk):
                block = slice(qs, qs + settings.query_chunk)
                if averages is not None and self.fast is not None:
                    with self.stages.stage(STAGE_BLEND):
                        emb = blend_heads({h: a[block] for h, a in averages.items()}, q_hat[block], betas,
                                          self.variant, self.fast.reconstruct)
                else:
                    with self.stages.stage(exact_stage):
                        stats = retrieve_partials(q_hat[block], xyz[block], self.db, settings)
                    with self.stages.stage(STAGE_BLEND):
                        emb = blend(stats, q_hat[block], betas, self.variant)
                with self.stages.stage(STAGE_CAST):
                    first = start + qs
                    where = slice(first, first + emb.shape[1]) if rows is None else rows[first : first + emb.shape[1]]
                    out[:, where] = emb.to(torch_dtype).cpu().numpy()
                if on_progress is not None:
                    on_progress(int(emb.shape[1]))
        return out


def concat_partials(parts: Sequence[Partials]) -> Partials:
    """Stack partials of consecutive query blocks (same rows) along the query axis."""
    return Partials(
        parts[0].heads,
        torch.cat([p.shift for p in parts], dim=1),
        torch.cat([p.sums for p in parts], dim=1),
        torch.cat([p.weighted for p in parts], dim=1),
    )


def encode_sharded(
    encoders: Sequence[RangeEncoder], lonlat: npt.ArrayLike, betas: Sequence[float] = (0.5,)
) -> npt.NDArray[np.float32]:
    """Embeddings from encoders that each hold one shard of the database, merged exactly.

    Args:
        encoders: one RangeEncoder per shard (same location encoder, variant and τ).
        lonlat: (N, 2) (lon, lat) degrees.
        betas: β levels.

    Returns:
        (B, N, D + K) float32, equal to the unsharded result within float32 rounding.
    """
    betas = tuple(float(b) for b in betas)
    results = [enc.partials(lonlat, betas) for enc in encoders]
    merged = merge_partials([r[0] for r in results])
    return blend(merged, results[0][1], betas, encoders[0].variant).numpy()
