"""Re-export of :mod:`range_dist.demo.world` (the scene generators moved into the package for ``range-dist demo``)."""

from __future__ import annotations

from range_dist.demo.world import (
    COMMON,
    RESOLUTION,
    SceneSpec,
    band_pixels,
    scene_center,
    write_catalog,
    write_scene,
)

__all__ = ["COMMON", "RESOLUTION", "SceneSpec", "band_pixels", "scene_center", "write_catalog", "write_scene"]
