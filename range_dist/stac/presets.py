"""Known Sentinel-2 L2A STAC APIs and how their asset keys name the bands (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from range_dist.errors import StacError

#: The 12 L2A bands in SatCLIP order (B10 is absent from L2A; the image encoder inserts zeros).
L2A_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

_COMMON_NAMES: dict[str, str] = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
    "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22",
    "SCL": "scl",
}


@dataclass(frozen=True)
class StacPreset:
    """A STAC API serving Sentinel-2 L2A.

    Attributes:
        name: preset name used on the command line.
        url: STAC API root.
        collection: collection id.
        asset_keys: (band, asset key) pairs for the 12 L2A bands and ``SCL``.
        sign: whether asset URLs must be signed (Planetary Computer) before reading.
    """

    name: str
    url: str
    collection: str
    asset_keys: tuple[tuple[str, str], ...]
    sign: bool = False

    def keys(self) -> dict[str, str]:
        return dict(self.asset_keys)


EARTH_SEARCH = StacPreset(
    "earth-search", "https://earth-search.aws.element84.com/v1", "sentinel-2-l2a",
    tuple(_COMMON_NAMES.items()),
)
PLANETARY_COMPUTER = StacPreset(
    "planetary-computer", "https://planetarycomputer.microsoft.com/api/stac/v1", "sentinel-2-l2a",
    tuple((b, b) for b in (*L2A_BANDS, "SCL")), sign=True,
)
PRESETS: dict[str, StacPreset] = {p.name: p for p in (EARTH_SEARCH, PLANETARY_COMPUTER)}


def resolve_asset_keys(asset_names: Mapping[str, object] | set[str] | list[str], item_id: str = "") -> dict[str, str]:
    """Map each L2A band and ``SCL`` to the asset key an item uses (band names or common names).

    Raises:
        StacError: the item lacks one of the bands under either naming.
    """
    names = set(asset_names)
    out: dict[str, str] = {}
    for band in (*L2A_BANDS, "SCL"):
        for candidate in (band, _COMMON_NAMES[band], band.lower(), f"{_COMMON_NAMES[band]}-jp2"):
            if candidate in names:
                out[band] = candidate
                break
        else:
            raise StacError(
                f"STAC item {item_id!r}: no asset for band {band} (looked for {band!r} or "
                f"{_COMMON_NAMES[band]!r}; the item has {sorted(names)}). Is this a Sentinel-2 L2A collection?"
            )
    return out
