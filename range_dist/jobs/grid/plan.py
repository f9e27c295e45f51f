"""The plan of an embed-grid run: a pure value (inputs in, plan out) that a dry run prints.

:func:`load_inputs` reads the checkpoint and database (reading only); :func:`build_plan` fixes the
cube layout, the signature a resume must match, the provenance attributes and what is at the
output path now. Nothing here writes, deletes or plans the fast mode: that happens in
:func:`range_dist.jobs.grid.run.run_grid`, in a real run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from range_dist.cube.store import CubeLayout, ExistingCube, geozarr_attrs, inspect_cube
from range_dist.database.store import RetrievalDatabase
from range_dist.encoders.checkpoints import DEMO_TRAINED_LABEL
from range_dist.encoders.satclip import SatCLIPLocationEncoder
from range_dist.errors import ConfigError
from range_dist.grid.spec import TileKey, iter_tiles
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.jobs.grid.steps import EncoderPayload
from range_dist.retrieval.engine import VARIANTS
from range_dist.util.downloads import fetch_input, is_remote, parse_remote
from range_dist.util.hashing import sha256_file
from range_dist.util.outputs import check_output_location

FEATURE_LAYOUT = (
    "[0, D): retrieved image embedding H_beta (D = value dim, 1024); "
    "[D, D+K): unit SatCLIP location embedding q_hat (K = 256)"
)


@dataclass(frozen=True)
class GridInputs:
    """The models a run embeds with, and where they came from.

    Attributes:
        location: the SatCLIP location encoder.
        database: the retrieval database.
        satclip, db: the local files read (for a URL: the verified copy in the cache), or for a Zarr
            database read in place on object storage, its URL.
        satclip_sha256: the checkpoint file's SHA-256 (None: not written yet, in a dry run).
        sample: untrained sample assets (asked for with ``sample_assets``), labelled as such everywhere.
        satclip_url, db_url: the URLs they were given as (public: no query, no user part), None for local
            inputs; recorded in the cube's provenance beside the paths, so that the cube names where its
            inputs really came from and not only a cache folder of one machine.
    """

    location: SatCLIPLocationEncoder
    database: RetrievalDatabase
    satclip: Path
    db: Path | str
    satclip_sha256: str | None
    sample: bool = False
    satclip_url: str | None = None
    db_url: str | None = None


def load_inputs(config: GridJobConfig, sample: bool = False) -> GridInputs:
    """Read the checkpoint and database named in ``config`` (its ``satclip`` and ``db`` must be set)."""
    from range_dist.encoders.checkpoints import load_satclip_location_encoder

    if config.satclip is None or config.db is None:
        raise ConfigError("embed-grid needs --satclip and --db (or the published assets: range-dist fetch-assets)")
    # a URL is downloaded once into the cache and its SHA-256 checked (util.downloads); the digest computed
    # there is the one recorded, so the file is hashed once per run
    checkpoint = fetch_input(config.satclip, "--satclip")
    location = load_satclip_location_encoder(checkpoint.path, harmonics=config.harmonics,  # type: ignore[arg-type]
                                             trust=config.trust_checkpoint)
    database = RetrievalDatabase.open(config.db)  # an .npz URL is downloaded; a Zarr URL is read in place
    remote_db = parse_remote(config.db, "--db") if isinstance(config.db, str) else None
    db_url = database.source if remote_db is not None else None
    if remote_db is None:
        db: Path | str = Path(config.db)
    elif remote_db.file_name.endswith(".npz"):
        db = remote_db.cached
    else:  # a Zarr store read in place: its URL is what was read
        db = remote_db.public
    return GridInputs(location, database, checkpoint.path, db, checkpoint.sha256 or sha256_file(checkpoint.path),
                      sample, satclip_url=checkpoint.source if is_remote(config.satclip) else None, db_url=db_url)


@dataclass(frozen=True)
class GridPlan:
    """A fully resolved run: what will be read, computed and written.

    Attributes:
        config: the settings.
        layout: the cube's shape and encoding.
        tiles: every tile of the grid, row-major.
        payload: what each worker builds its encoder from (exact mode; a real run adds the fast plan).
        signature: the settings a resume must match.
        attrs: the cube's attributes (provenance, conventions).
        existing: what is at ``config.out`` now (create, resume or replace).
        sample: made from sample or demo assets, not the published ones.
        assets_label: what those assets are, shown on every output (None: the published assets).
    """

    config: GridJobConfig
    layout: CubeLayout
    tiles: tuple[TileKey, ...]
    payload: EncoderPayload
    signature: dict[str, Any]
    attrs: dict[str, Any]
    existing: ExistingCube
    sample: bool = False
    assets_label: str | None = None

    @property
    def points(self) -> int:
        return self.layout.grid.points

    @property
    def nbytes(self) -> int:
        """Stored bytes before compression (values and int8 scales)."""
        return self.layout.nbytes

    @property
    def compute_betas(self) -> tuple[float, ...]:
        """The β levels each tile is computed at (the stored ones; (0, 1) = the two heads in heads layout)."""
        return self.layout.encoding.compute_betas

    @property
    def compute_dtype(self) -> str:
        """The dtype each tile is computed in (float32 before int8 quantisation)."""
        return self.layout.encoding.compute_dtype

    def describe(self) -> str:
        """The full plan, for ``--dry-run`` and the start of a run."""
        n_lat, n_lon = self.layout.grid.shape
        cfg = self.config
        db = self.payload.database
        mib = (db.keys.nbytes + db.values.nbytes + db.locations.nbytes) / 2**20
        action = {"create": "create it",
                  "resume": f"resume it ({self.existing.tiles_done} of {len(self.tiles)} tiles done)",
                  "replace": "DELETE and replace the existing cube (--overwrite)"}[self.existing.action]
        fast = f"fast, tolerance {cfg.tolerance:g} (planned on the grid's cells at the start of the run)" \
            if cfg.mode == "fast" else "exact"
        return "\n".join([
            "embed-grid plan:" + (f"  [{self.assets_label}]" if self.assets_label else ""),
            f"  read:     {self._source('satclip')} (SatCLIP L={self.payload.location_config.legendre_polys}, "
            f"{self.attrs['range_dist:harmonics']} harmonics); {self._source('database')} "
            f"({db.rows:,} rows × keys {db.key_dim} / values {db.value_dim}, {mib:,.1f} MiB)",
            f"  compute:  {cfg.resolution}° grid {n_lat}×{n_lon} = {self.points:,} cells"
            f"{' (land only)' if cfg.land_only else ''}, {len(self.tiles)} tiles of {cfg.tile_size}², "
            f"{cfg.variant} at β={list(cfg.betas)}, {fast}, {cfg.db_shards} shard(s), executor {cfg.executor}",
            f"  write:    {cfg.out}: {self._stored()} = up to {self.nbytes / 2**30:.2f} GiB; {action}"
            + ("" if cfg.overviews is None else f"; then its overview pyramid down to {cfg.overviews:g}°"),
        ])

    def _source(self, name: str) -> str:
        """Where an input was read from: its URL (and the cached copy read), else its path."""
        path, url = self.attrs[f"range_dist:{name}"], self.attrs.get(f"range_dist:{name}_url")
        return str(path) if url is None or url == path else f"{url} (cached copy {path})"

    def _stored(self) -> str:
        enc = self.layout.encoding
        b, n_lat, n_lon, f = self.layout.shape
        values = enc.value_dtype + (" + float32 scales" if enc.quantize == "int8" else "")
        if enc.layout == "beta":
            return f"cube ({b}, {n_lat}, {n_lon}, {f}) {values}"
        heads = " + ".join(f"H_{h}" for h in enc.heads)
        return (f"heads layout {heads} ({n_lat}, {n_lon}, {enc.value_dim}) + q_hat ({n_lat}, {n_lon}, "
                f"{enc.key_dim}) {values}, computed at β={list(enc.compute_betas)}, any β in [0, 1] on read")

    def __repr__(self) -> str:
        return self.describe()


def build_plan(config: GridJobConfig, inputs: GridInputs) -> GridPlan:
    """Fix the cube layout, signature and provenance, and inspect the output path (reading only).

    Raises:
        ConfigError: the inputs do not fit the settings (dimensions, shards).
        StoreMismatchError: ``out`` holds something this run may not resume or replace.
    """
    from range_dist import __version__

    location, database = inputs.location, inputs.database
    database.check_compatible(location.embed_dim)
    if config.db_shards > database.rows:
        raise ConfigError(f"db_shards={config.db_shards} exceeds the database's {database.rows} rows")
    grid = config.grid
    feature_dim = database.value_dim + database.key_dim
    # with int8 the values are quantised from float32: the dtype the encoding record names
    dtype = "float32" if config.quantize == "int8" else config.dtype
    heads = ("geo", "sem") if config.variant == "range+" else ("sem",)
    layout = CubeLayout(grid, config.betas, feature_dim, dtype, config.tile_size, config.chunk_size,
                        config.layout, config.quantize, heads)
    tau_sem, tau_geo = VARIANTS[config.variant]
    db_sha = database.fingerprint()
    db_info = database.describe()
    # a sample checkpoint with a real database (or the reverse) is flagged as well
    sample = inputs.sample or bool(db_info.get("sample", False)) or getattr(location, "sample_label", None) is not None
    assets_label = _assets_label(str(getattr(location, "sample_label", None) or ""),
                                 str(db_info.get("assets_label") or ""), sample)
    signature = {
        "grid": grid.describe(),
        "land_only": config.land_only,
        "variant": config.variant,
        "betas": list(config.betas),
        "tau_sem": tau_sem,
        "tau_geo": tau_geo,
        "harmonics": location.config.harmonics,
        "satclip_sha256": inputs.satclip_sha256,
        "database_sha256": db_sha,
        "database_rows": database.rows,
        "dtype": config.dtype,
        "layout": config.layout,
        "quantize": config.quantize,
        "tile_size": config.tile_size,
        "chunk_size": config.chunk_size,
        "feature_dim": feature_dim,
        "retrieval_mode": config.mode,
        "precision": config.precision,
        "tolerance": config.tolerance,
    }
    attrs = {
        "title": f"RANGE geo-embeddings ({config.variant}) on a {grid.resolution}° grid"
                 + (f" — {assets_label}" if assets_label else ""),
        "Conventions": "CF-1.10",
        "range_dist:version": __version__,
        "range_dist:created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "range_dist:satclip": str(inputs.satclip),
        **({"range_dist:satclip_url": inputs.satclip_url} if inputs.satclip_url else {}),
        "range_dist:satclip_sha256": inputs.satclip_sha256,
        "range_dist:database": str(inputs.db),
        **({"range_dist:database_url": inputs.db_url} if inputs.db_url else {}),
        "range_dist:database_sha256": db_sha,
        "range_dist:database_rows": database.rows,
        "range_dist:database_origin": db_info.get("origin", "unknown"),
        "range_dist:sample_assets": sample,
        **({"range_dist:assets_label": assets_label} if assets_label else {}),
        "range_dist:variant": config.variant,
        "range_dist:tau_sem": tau_sem,
        "range_dist:tau_geo": tau_geo,
        "range_dist:betas": list(config.betas),
        "range_dist:harmonics": location.config.harmonics,
        "range_dist:grid": grid.describe(),
        "range_dist:land_mask": "global-land-mask (30 arc-second), cell centres" if config.land_only else "none",
        "range_dist:retrieval_mode": config.mode,
        "range_dist:precision": f"{config.precision} matrix products on GPU actors, fp32 on CPU actors; "
                                "float32 softmax statistics",
        **geozarr_attrs(grid),  # zarr_conventions + spatial: + proj: (zarr-cm)
        "geoemb:type": "location_embedding",
        "geoemb:dimensions": feature_dim,
        "geoemb:model": f"RANGE {config.variant} (SatCLIP location encoder + soft retrieval)",
        "geoemb:source_data": str(db_info.get("origin", "unknown")),
        "geoemb:data_type": layout.encoding.value_dtype,
        "geoemb:quantization": {"int8": "int8 codes + float32 scale per cell and part (see emb:quantization)",
                                "none": "none" if dtype == "float32" else "float16 cast"}[config.quantize],
        "geoemb:layout": config.layout,
        "geoemb:feature_layout": FEATURE_LAYOUT,
    }
    payload = EncoderPayload.from_models(location, database, config.variant, config.memory_budget_mb,
                                         precision=config.precision)
    check_output_location(config.out)
    existing = inspect_cube(Path(config.out), signature, overwrite=config.overwrite)
    return GridPlan(config, layout, tuple(iter_tiles(grid, config.tile_size)), payload, signature, attrs, existing,
                    sample, assets_label)


def _assets_label(checkpoint_label: str, database_label: str, sample: bool) -> str | None:
    """What a cube made from non-published assets is called everywhere (None: the published ones)."""
    if checkpoint_label.startswith(DEMO_TRAINED_LABEL) and database_label.startswith(DEMO_TRAINED_LABEL):
        return f"{DEMO_TRAINED_LABEL.upper()} (not the published model)"
    return "UNTRAINED SAMPLE ASSETS (not the published model)" if sample else None
