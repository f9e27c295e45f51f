"""Database-build steps as plain functions over one work unit (no Ray, no store writes).

* :func:`fetch_chip`: search the scenes covering one location, read the chip from the best one,
  and reject it (trying the next candidate) when nodata > ``max_nodata`` or the SCL cloud
  fraction > ``max_cloud``; failures come back as :class:`ChipOutcome` with a reason, never raised.
* :func:`read_batch`: :func:`fetch_chip` over a batch of locations (concurrent reads).
* :class:`RowEncoder`: the key (SatCLIP image) and value (SatMAE) encoders, loaded once per worker,
  turning accepted chips into a :class:`~range_dist.database.append.RowBatch` aligned by location id.

The executors (:mod:`range_dist.executors`) run these; :mod:`range_dist.jobs.build.run` appends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.chips.radiometry import cloud_fraction, nodata_mask, scene_offset, to_reflectance
from range_dist.chips.read import Chip, read_chip
from range_dist.config.values import resolve_device
from range_dist.errors import ChipReadError, ConfigError, RangeDistError, StacError
from range_dist.jobs.build.config import BuildConfig
from range_dist.stac.scenes import SceneRef
from range_dist.stac.search import group_by_cell, searcher_for

FAILURE_REASONS = ("no_scene", "too_cloudy", "nodata", "http_error", "corrupt_file", "stac_error", "encoder_error")


# ---------------------------------------------------------------------------- one location
@dataclass(frozen=True)
class ChipOutcome:
    """What happened at one location: an accepted chip (with provenance) or a failure reason.

    Attributes:
        location_id, lonlat: the location.
        chip: the accepted chip's DN, or None on failure.
        scene: the scene the chip came from (None on failure).
        offset: DN offset the radiometry subtracts. cloud, nodata: the chip's fractions.
        reason: failure class (:data:`FAILURE_REASONS`) or None. detail: human-readable detail.
        bytes_read: not measured here (0); kept for executors that count.
    """

    location_id: str
    lonlat: tuple[float, float]
    chip: Chip | None = None
    scene: SceneRef | None = None
    offset: int = 0
    cloud: float = float("nan")
    nodata: float = float("nan")
    reason: str | None = None
    detail: str = ""


def judge_chip(chip: Chip, max_nodata: float, max_cloud_pct: float) -> tuple[str | None, float, float]:
    """(rejection reason or None, cloud fraction, nodata fraction) of a chip (pure)."""
    mask = nodata_mask(chip.dn, chip.scl)
    nodata = float(mask.mean())
    cloud = cloud_fraction(chip.scl, ~mask)
    if nodata > max_nodata:
        return "nodata", cloud, nodata
    if cloud * 100.0 > max_cloud_pct:
        return "too_cloudy", cloud, nodata
    return None, cloud, nodata


def _read_with_retries(scene: SceneRef, lon: float, lat: float, config: BuildConfig) -> Chip:
    last: ChipReadError | None = None
    for attempt in range(max(1, config.read_retries)):
        try:
            return read_chip(scene, lon, lat, config.chip_size, dict(config.gdal))
        except ChipReadError as exc:
            last = exc
            if exc.reason != "http_error":
                raise
            time.sleep(0.2 * 2**attempt)
    assert last is not None
    raise last


def fetch_chip(location_id: str, lon: float, lat: float, config: BuildConfig,
               scenes: Sequence[SceneRef] | StacError | None = None) -> ChipOutcome:
    """Search, read and judge one location's chip; every failure becomes an outcome with a reason.

    Args:
        scenes: candidates already found by a grouped search (or its error); None searches here.
    """
    base = ChipOutcome(location_id, (lon, lat))
    if scenes is None:
        try:
            scenes = searcher_for(config.search_config()).search(lon, lat)
        except StacError as exc:
            scenes = exc
    if isinstance(scenes, StacError):
        return replace(base, reason="stac_error", detail=str(scenes))
    if not scenes:
        return replace(base, reason="no_scene",
                       detail=f"no scene with cloud cover <= {config.max_cloud}% in {config.datetime}")
    rejections: list[tuple[str, str]] = []
    for scene in scenes:
        try:
            chip = _read_with_retries(scene, lon, lat, config)
        except ChipReadError as exc:
            rejections.append((exc.reason, str(exc)))
            continue
        reason, cloud, nodata = judge_chip(chip, config.max_nodata, config.max_cloud)
        if reason is None:
            offset = scene_offset(config.radiometry, scene.processing_baseline, scene.boa_offset_applied)
            return replace(base, chip=chip, scene=scene, offset=offset, cloud=cloud, nodata=nodata)
        rejections.append((reason, f"{scene.item_id}: cloud {cloud:.1%}, nodata {nodata:.1%}"))
    reason, _ = rejections[-1]
    detail = "; ".join(f"{r}: {d}" for r, d in rejections)
    return replace(base, reason=reason, detail=detail)


def read_batch(batch: Sequence[tuple[str, float, float]], config: BuildConfig, threads: int = 1) -> list[ChipOutcome]:
    """:func:`fetch_chip` over a batch of (location id, lon, lat), ``threads`` at a time, in order."""
    found: list[Sequence[SceneRef] | StacError | None] = [None] * len(batch)
    if config.search_group_deg is not None:
        searcher = searcher_for(config.search_config())
        for group in group_by_cell([(lon, lat) for _, lon, lat in batch], config.search_group_deg):
            if len(group) < 2:
                continue
            try:
                per_point = searcher.search_many([(batch[i][1], batch[i][2]) for i in group])
            except StacError as exc:
                per_point = [exc] * len(group)  # type: ignore[list-item]
            for i, scenes in zip(group, per_point):
                found[i] = scenes
    jobs = [(i, lon, lat, scenes) for (i, lon, lat), scenes in zip(batch, found)]
    if threads <= 1:
        return [fetch_chip(i, lon, lat, config, scenes) for i, lon, lat, scenes in jobs]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda t: fetch_chip(t[0], t[1], t[2], config, t[3]), jobs))


# ---------------------------------------------------------------------------- encoding
@dataclass
class RowEncoder:
    """The key and value encoders of a build, loaded once per worker."""

    config: BuildConfig
    threads: int | None = None
    _models: tuple[Any, Any] | None = field(default=None, repr=False)

    def models(self) -> tuple[Any, Any]:
        if self._models is None:
            import torch

            from range_dist.encoders.image import load_image_encoder

            if self.threads:
                torch.set_num_threads(self.threads)
            cfg = self.config
            device = resolve_device(cfg.device)
            if cfg.key_checkpoint is None or cfg.value_checkpoint is None:  # build_plan checked it already
                raise ConfigError("build-db needs --key-checkpoint (SatCLIP .ckpt) and --value-checkpoint (SatMAE)")
            trust = cfg.trust_checkpoint
            self._models = (load_image_encoder(cfg.key_encoder, cfg.key_checkpoint, device, trust=trust),
                            load_image_encoder(cfg.value_encoder, cfg.value_checkpoint, device, trust=trust))
        return self._models

    def encode(self, outcomes: Sequence[ChipOutcome]) -> tuple[Any, list[ChipOutcome]]:
        """Accepted outcomes -> (RowBatch, failures); an encoder error fails the batch's chips, not the run."""
        from range_dist.database.append import RowBatch

        ok = [o for o in outcomes if o.chip is not None]
        failed = [o for o in outcomes if o.chip is None]
        if not ok:
            return None, failed
        try:
            key_model, value_model = self.models()
            refl = np.stack([to_reflectance(o.chip.dn, o.offset) for o in ok if o.chip is not None])
            keys = key_model.encode(refl)
            values = value_model.encode(refl)
        except RangeDistError:
            raise
        except Exception as exc:  # a model failure on this batch is recorded per chip
            return None, failed + [replace(o, chip=None, reason="encoder_error", detail=str(exc)) for o in ok]
        return RowBatch(
            locations=np.array([o.chip.center_lonlat for o in ok if o.chip is not None], dtype=np.float64),
            keys=keys.astype(np.float32), values=values.astype(np.float32),
            provenance=provenance_columns(ok)), failed


def provenance_columns(ok: Sequence[ChipOutcome]) -> dict[str, npt.NDArray[Any]]:
    """The provenance columns of accepted outcomes (pure)."""
    scenes = [o.scene for o in ok]
    assert all(s is not None for s in scenes)
    return {
        "location_id": np.array([o.location_id for o in ok], dtype=str),
        "query_lon": np.array([o.lonlat[0] for o in ok], np.float64),
        "query_lat": np.array([o.lonlat[1] for o in ok], np.float64),
        "item_id": np.array([s.item_id for s in scenes if s], dtype=str),
        "datetime": np.array([s.datetime for s in scenes if s], dtype=str),
        "processing_baseline": np.array([s.processing_baseline for s in scenes if s], dtype=str),
        "offset_applied": np.array([o.offset for o in ok], np.int32),
        "provider_offset_applied": np.array([s.boa_offset_applied for s in scenes if s], bool),
        "scene_cloud_cover": np.array([s.cloud_cover for s in scenes if s], np.float32),
        "cloud_fraction": np.array([o.cloud for o in ok], np.float32),
        "nodata_fraction": np.array([o.nodata for o in ok], np.float32),
        "chip_crs": np.array([o.chip.crs for o in ok if o.chip is not None], dtype=str),
    }
