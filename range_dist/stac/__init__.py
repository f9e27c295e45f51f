"""STAC discovery of Sentinel-2 L2A scenes: presets, stripped scene records, search and selection."""

from range_dist.stac.presets import EARTH_SEARCH, L2A_BANDS, PLANETARY_COMPUTER, PRESETS, StacPreset, resolve_asset_keys
from range_dist.stac.scenes import SceneRef, scene_from_item, select_candidates

__all__ = [
    "EARTH_SEARCH",
    "L2A_BANDS",
    "PLANETARY_COMPUTER",
    "PRESETS",
    "SceneRef",
    "StacPreset",
    "resolve_asset_keys",
    "scene_from_item",
    "select_candidates",
]
