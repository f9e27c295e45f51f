"""Published assets (download with huggingface_hub) and small labelled sample assets.

Nothing here runs at import time or downloads implicitly: ``fetch_published_assets`` is the only
network path, used by ``range-dist fetch-assets``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from range_dist.database.store import NPZ_KEYS, NPZ_LOCATIONS, NPZ_SAMPLE_NOTE, NPZ_VALUES, RetrievalDatabase
from range_dist.encoders.checkpoints import save_satclip_checkpoint
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.errors import AssetError
from range_dist.geo.coords import lonlat_to_xyz
from range_dist.geo.sphere import sample_land
from range_dist.util.cache import cache_dir
from range_dist.util.stores import is_url

SATCLIP_REPO = "microsoft/SatCLIP-ViT16-L40"
SATCLIP_FILE = "satclip-vit16-l40.ckpt"
DATABASE_REPO = "MVRL/RANGE-database"
DATABASE_FILES = {"med": "range_db_med.npz", "large": "range_db_large.npz"}

SAMPLE_CHECKPOINT = "sample-satclip-l10.ckpt"
SAMPLE_DATABASE = "sample-range-db.npz"
SAMPLE_LABEL = "UNTRAINED SAMPLE: random weights / synthetic rows for demos and tests, not the published model"


def default_cache_dir() -> Path:
    """Where fetched assets go: $RANGE_DIST_CACHE, else ~/.cache/range_dist."""
    return cache_dir()


@dataclass(frozen=True)
class AssetPaths:
    """Local paths of a SatCLIP checkpoint and a retrieval database."""

    checkpoint: Path
    database: Path


def fetch_published_assets(database: str = "med", cache_dir: Path | None = None) -> AssetPaths:
    """Download the published SatCLIP ViT16-L40 checkpoint and a RANGE database.

    Args:
        database: ``med`` (range_db_med.npz) or ``large`` (range_db_large.npz).
        cache_dir: download directory (default :func:`default_cache_dir`).

    Raises:
        AssetError: offline, or the hub refused; the message says how to place the files by hand.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if database not in DATABASE_FILES:
        raise AssetError(f"unknown database {database!r}; choose one of {sorted(DATABASE_FILES)}")
    cache = Path(cache_dir or default_cache_dir())
    try:
        ckpt = hf_hub_download(SATCLIP_REPO, SATCLIP_FILE, cache_dir=cache)
        db = hf_hub_download(DATABASE_REPO, DATABASE_FILES[database], repo_type="dataset", cache_dir=cache)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise AssetError(
            f"could not download the published assets ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Without network access here, download {SATCLIP_FILE} (hf.co/{SATCLIP_REPO}) and "
            f"{DATABASE_FILES[database]} (hf.co/datasets/{DATABASE_REPO}) on another machine and pass "
            "their paths with --satclip / --db, or use `range-dist sample-assets DIR` for untrained "
            "sample assets."
        ) from exc
    return AssetPaths(Path(ckpt), Path(db))


def _smooth_field(xyz: npt.NDArray[np.float64], dim: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A random multi-scale smooth function of position on the sphere, (N, dim)."""
    parts = []
    for scale in (1.0, 3.0, 9.0, 27.0):
        freqs = rng.normal(scale=scale, size=(3, 32))
        phases = rng.uniform(0, 2 * np.pi, 32)
        parts.append(np.cos(xyz @ freqs + phases) / np.sqrt(scale))
    features = np.concatenate(parts, axis=1)
    return features @ rng.normal(size=(features.shape[1], dim)) / np.sqrt(features.shape[1])


def make_sample_database(
    rows: int = 2000, seed: int = 0, key_dim: int = 256, value_dim: int = 1024
) -> RetrievalDatabase:
    """A synthetic database on land with spatially structured keys and values (labelled as a sample).

    Values are a multi-scale smooth field of position plus noise; keys are a noisy projection of
    the same "image", so both retrieval heads find spatial structure.
    """
    rng = np.random.default_rng(seed)
    locs = sample_land(rows, np.random.default_rng(seed))
    xyz = lonlat_to_xyz(locs)
    image = _smooth_field(xyz, 128, rng) + 0.3 * rng.normal(size=(rows, 128))
    values = image @ rng.normal(size=(128, value_dim)) / np.sqrt(128) + 0.1 * rng.normal(size=(rows, value_dim))
    keys = image @ rng.normal(size=(128, key_dim)) / np.sqrt(128) + 0.1 * rng.normal(size=(rows, key_dim))
    attrs = {
        "origin": f"sample:seed={seed}",
        "key_model": SAMPLE_LABEL,
        "value_model": SAMPLE_LABEL,
        "sample": True,
        "rows_made_by": "synthetic smooth fields of location (range-dist sample-assets)",
    }
    return RetrievalDatabase(locs, keys.astype(np.float32), values.astype(np.float32),
                             {"source_row": np.arange(rows, dtype=np.int64)}, attrs, source="<sample>")


def write_sample_assets(
    out_dir: str | Path, rows: int = 2000, seed: int = 0, legendre_polys: int = 10, capacity: int = 256
) -> AssetPaths:
    """Write an untrained SatCLIP-format checkpoint and a sample database in the published npz layout."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder, db = sample_models(seed, rows, legendre_polys, capacity)
    ckpt = out / SAMPLE_CHECKPOINT
    save_satclip_checkpoint(encoder, ckpt, extra={"range_dist_sample": SAMPLE_LABEL})
    npz = out / SAMPLE_DATABASE
    # The published layout plus one note array, so an imported sample stays labelled as such.
    arrays: dict[str, Any] = {NPZ_LOCATIONS: db.locations, NPZ_KEYS: db.keys, NPZ_VALUES: db.values,
                              NPZ_SAMPLE_NOTE: np.array(SAMPLE_LABEL)}
    np.savez(npz, **arrays)
    (out / "README.txt").write_text(
        f"{SAMPLE_LABEL}\n\n{SAMPLE_CHECKPOINT}: SatCLIP Lightning-format checkpoint, L={legendre_polys}, "
        f"random weights.\n{SAMPLE_DATABASE}: {rows} synthetic rows in the published RANGE npz layout.\n"
    )
    return AssetPaths(ckpt, npz)


def cached_published_assets(cache_dir: Path | None = None, database: str = "med") -> AssetPaths | None:
    """The published assets if ``fetch-assets`` put them in the cache, else None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    cache = Path(cache_dir or default_cache_dir())
    ckpt = try_to_load_from_cache(SATCLIP_REPO, SATCLIP_FILE, cache_dir=cache)
    db = try_to_load_from_cache(DATABASE_REPO, DATABASE_FILES[database], cache_dir=cache, repo_type="dataset")
    if isinstance(ckpt, str) and isinstance(db, str):
        return AssetPaths(Path(ckpt), Path(db))
    return None


@dataclass(frozen=True)
class ResolvedAssets:
    """The checkpoint and database a command will use, and where they come from.

    Attributes:
        checkpoint, database: the paths, or URL text for an input given as a URL (``Path()`` would drop its
            ``//``; the job downloads it into the cache, :mod:`range_dist.util.downloads`).
        origin: ``given`` (flags), ``published`` (fetched into the cache) or ``sample`` (asked for with
            ``--sample-assets``: untrained, labelled as such in every output).
        to_write: sample assets that a real run writes first (a dry run only names them).
    """

    checkpoint: Path | str
    database: Path | str
    origin: str
    to_write: bool = False

    def describe(self) -> str:
        if self.origin == "sample":
            state = "to be written" if self.to_write else "present"
            return f"{SAMPLE_LABEL}: {self.checkpoint} and {self.database} ({state})"
        return f"{self.origin} assets: {self.checkpoint} and {self.database}"


def _given(value: Path | str) -> Path | str:
    """A given input: URL text stays text (``Path()`` would make ``s3://b/x`` the local ``s3:/b/x``)."""
    return value if isinstance(value, str) and is_url(value) else Path(value)


def resolve_assets(satclip: Path | str | None, db: Path | str | None, sample_assets: bool = False,
                   cache_dir: Path | None = None) -> ResolvedAssets:
    """The checkpoint and database to use: the given paths, else the published ones if fetched, else
    the untrained samples ONLY when ``sample_assets`` asks for them. Reads the cache; writes nothing.

    Raises:
        AssetError: a needed asset is neither given nor fetched, and samples were not asked for; the
            message names ``range-dist fetch-assets``, the cache looked in and ``--sample-assets``.
    """
    if satclip is not None and db is not None:
        return ResolvedAssets(_given(satclip), _given(db), "given")
    cache = Path(cache_dir or default_cache_dir())
    published = cached_published_assets(cache)
    if published is not None:
        return ResolvedAssets(_given(satclip or published.checkpoint), _given(db or published.database),
                              "given" if satclip or db else "published")
    if not sample_assets:
        missing = " and ".join(n for n, v in (("--satclip", satclip), ("--db", db)) if v is None)
        raise AssetError(
            f"no {missing} given and the published assets are not in the cache {cache} "
            f"($RANGE_DIST_CACHE, default ~/.cache/range_dist). Run `range-dist fetch-assets` first (or pass "
            f"--satclip CKPT --db DB). For a demo or test on UNTRAINED sample assets, add --sample-assets.")
    sample_dir = cache / "sample"
    ckpt, npz = sample_dir / SAMPLE_CHECKPOINT, sample_dir / SAMPLE_DATABASE
    if satclip is not None or db is not None:
        raise AssetError("--sample-assets replaces both --satclip and --db; give both paths, or neither")
    return ResolvedAssets(ckpt, npz, "sample", to_write=not (ckpt.exists() and npz.exists()))


def materialize(assets: ResolvedAssets) -> ResolvedAssets:
    """Write the sample assets a real run needs (no-op for given, published or present assets)."""
    if not assets.to_write:
        return assets
    paths = write_sample_assets(Path(assets.checkpoint).parent)
    return ResolvedAssets(paths.checkpoint, paths.database, assets.origin)


def sample_models(seed: int = 0, rows: int = 2000, legendre_polys: int = 10,
                  capacity: int = 256) -> tuple[SatCLIPLocationEncoder, RetrievalDatabase]:
    """The sample assets in memory, as :func:`write_sample_assets` would write them (for dry runs)."""
    torch.manual_seed(seed)
    encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=legendre_polys, capacity=capacity))
    return encoder, make_sample_database(rows, seed)
