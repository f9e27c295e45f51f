"""Chips: windowed reads of Sentinel-2 COGs around a point, radiometry, cloud and nodata checks."""

from range_dist.chips.radiometry import (
    RADIOMETRY_MODES,
    Radiometry,
    cloud_fraction,
    nodata_fraction,
    parse_baseline,
    scene_offset,
)

__all__ = ["RADIOMETRY_MODES", "Radiometry", "cloud_fraction", "nodata_fraction", "parse_baseline", "scene_offset"]
