"""Published assets (download with huggingface_hub) and small labelled sample assets.

Nothing here runs at import time or downloads implicitly: ``fetch_published_assets`` is the only
network path, used by ``range-dist fetch-assets``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from range_dist.coords import lonlat_to_xyz
from range_dist.database.store import NPZ_KEYS, NPZ_LOCATIONS, NPZ_SAMPLE_NOTE, NPZ_VALUES, RetrievalDatabase
from range_dist.encoders.checkpoints import save_satclip_checkpoint
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.errors import AssetError

SATCLIP_REPO = "microsoft/SatCLIP-ViT16-L40"
SATCLIP_FILE = "satclip-vit16-l40.ckpt"
DATABASE_REPO = "MVRL/RANGE-database"
DATABASE_FILES = {"med": "range_db_med.npz", "large": "range_db_large.npz"}

SAMPLE_CHECKPOINT = "sample-satclip-l10.ckpt"
SAMPLE_DATABASE = "sample-range-db.npz"
SAMPLE_LABEL = "UNTRAINED SAMPLE: random weights / synthetic rows for demos and tests, not the published model"


def default_cache_dir() -> Path:
    """Where fetched assets go: $RANGE_DIST_CACHE, else ~/.cache/range_dist."""
    return Path(os.environ.get("RANGE_DIST_CACHE", Path.home() / ".cache" / "range_dist"))


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


def sample_land_locations(count: int, seed: int) -> npt.NDArray[np.float64]:
    """``count`` (lon, lat) points uniform on the sphere's land (global-land-mask), float64."""
    from global_land_mask import globe

    rng = np.random.default_rng(seed)
    found: list[npt.NDArray[np.float64]] = []
    total = 0
    while total < count:
        n = max(1024, 4 * (count - total))
        lon = rng.uniform(-180.0, 180.0, n)
        lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))  # equal-area in latitude
        land = globe.is_land(np.clip(lat, -89.999, 89.999), np.clip(lon, -179.999, 179.999))
        pts = np.stack([lon[land], lat[land]], axis=1)
        found.append(pts)
        total += len(pts)
    return np.concatenate(found)[:count]


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
    locs = sample_land_locations(rows, seed)
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
    torch.manual_seed(seed)
    encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=legendre_polys, capacity=capacity))
    ckpt = out / SAMPLE_CHECKPOINT
    save_satclip_checkpoint(encoder, ckpt, extra={"range_dist_sample": SAMPLE_LABEL})
    db = make_sample_database(rows, seed)
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
