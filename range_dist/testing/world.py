"""Generators of Sentinel-2-like L2A scenes (12 band COGs + SCL in a UTM CRS) and their STAC items, and the
sample world of ``range-dist demo`` (one scene per land region, locations inside their footprints)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.stac.presets import L2A_BANDS

#: native resolution (m) of each L2A band
RESOLUTION = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
              "B09": 60, "B11": 20, "B12": 20, "SCL": 20}
COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
          "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22",
          "SCL": "scl"}


def band_pixels(band: str, shape: tuple[int, int], seed: int) -> npt.NDArray[np.uint16]:
    """Deterministic, spatially varying DN (never 0) of a band on its native grid."""
    rows, cols = np.indices(shape)
    b = (*L2A_BANDS, "SCL").index(band)
    return (1000 + 150 * b + ((rows * 7 + cols * 3 + seed * 11) % 251) * 3).astype(np.uint16)


@dataclass
class SceneSpec:
    """A synthetic scene: where, how big, and what is wrong with it."""

    item_id: str
    origin: tuple[float, float] = (500000.0, 5000040.0)  # UL corner, metres, UTM
    epsg: int = 32633
    size10: int = 576  # 10 m pixels per side (multiple of 6)
    cloud_cover: float = 5.0
    baseline: str = "05.09"
    datetime: str = "2022-06-01T10:00:00Z"
    scl_class: int = 4  # vegetation everywhere ...
    cloudy_scl: bool = False  # ... or cloud (9) everywhere
    nodata_cols: int = 0  # leftmost 10 m columns set to 0 (swath edge), SCL 0
    seed: int = 0
    blocksize: int = 256
    keys: str = "common"  # "common" (Earth Search) or "band" (Planetary Computer)


def write_scene(spec: SceneSpec, root: Path, base_url: str) -> dict[str, Any]:
    """Write the COGs of ``spec`` under ``root/spec.item_id`` and return its STAC item (hrefs on ``base_url``)."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp_transform

    folder = root / spec.item_id
    folder.mkdir(parents=True, exist_ok=True)
    assets: dict[str, Any] = {}
    for band in (*L2A_BANDS, "SCL"):
        res = RESOLUTION[band]
        n = spec.size10 * 10 // res
        data: npt.NDArray[Any]
        if band == "SCL":
            data = np.full((n, n), 9 if spec.cloudy_scl else spec.scl_class, np.uint8)
        else:
            data = band_pixels(band, (n, n), spec.seed)
        edge = -(-spec.nodata_cols * 10 // res)
        if edge:
            data[:, :edge] = 0
        profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": data.dtype.name,
                   "crs": f"EPSG:{spec.epsg}", "transform": from_origin(*spec.origin, res, res), "nodata": 0}
        path = folder / f"{band}.tif"
        with MemoryFile() as mem:
            with mem.open(**profile) as ds:
                ds.write(data, 1)
            with mem.open() as src:
                rio_copy(src, path, driver="COG", BLOCKSIZE=str(spec.blocksize), COMPRESS="DEFLATE",
                                     OVERVIEWS="AUTO")
        key = COMMON[band] if spec.keys == "common" else band
        assets[key] = {"href": f"{base_url}/{spec.item_id}/{band}.tif",
                       "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
    x0, y0 = spec.origin
    span = spec.size10 * 10
    xs, ys = [x0, x0 + span, x0 + span, x0, x0], [y0, y0, y0 - span, y0 - span, y0]
    lons, lats = warp_transform(f"EPSG:{spec.epsg}", "EPSG:4326", xs, ys)
    ring = [[float(a), float(b)] for a, b in zip(lons, lats)]
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": spec.item_id, "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": {"datetime": spec.datetime, "eo:cloud_cover": spec.cloud_cover,
                       "s2:processing_baseline": spec.baseline, "proj:epsg": spec.epsg,
                       "earthsearch:boa_offset_applied": False},
        "assets": assets, "links": [],
    }


def scene_center(spec: SceneSpec, dx: float = 0.0, dy: float = 0.0) -> tuple[float, float]:
    """(lon, lat) of the scene's centre, shifted by (dx, dy) metres."""
    from rasterio.warp import transform as warp_transform

    half = spec.size10 * 10 / 2
    lon, lat = warp_transform(f"EPSG:{spec.epsg}", "EPSG:4326", [spec.origin[0] + half + dx],
                              [spec.origin[1] - half + dy])
    return float(lon[0]), float(lat[0])


def write_catalog(items: list[dict[str, Any]], root: Path) -> tuple[Path, Path]:
    """collection.json and items.ndjson for ``rustac serve``."""
    lons = [v for it in items for v in (it["bbox"][0], it["bbox"][2])]
    lats = [v for it in items for v in (it["bbox"][1], it["bbox"][3])]
    collection = {
        "type": "Collection", "stac_version": "1.0.0", "id": "sentinel-2-l2a", "description": "synthetic S2 L2A",
        "license": "proprietary", "links": [],
        "extent": {"spatial": {"bbox": [[min(lons), min(lats), max(lons), max(lats)]]},
                   "temporal": {"interval": [["2015-06-27T00:00:00Z", None]]}},
    }
    cpath, ipath = root / "collection.json", root / "items.ndjson"
    cpath.write_text(json.dumps(collection))
    ipath.write_text("\n".join(json.dumps(it) for it in items) + "\n")
    return cpath, ipath


# ---------------------------------------------------------------------------- the demo's sample world
#: (name, lon, lat, SCL class) of the demo scenes: one per land region, SCL 4 vegetation / 5 bare soil
DEMO_REGIONS: tuple[tuple[str, float, float, int], ...] = (
    ("alps", 7.45, 46.95, 4),
    ("sahara", 12.0, 25.0, 5),
    ("kenya", 37.0, 0.5, 4),
    ("amazon", -55.0, -12.0, 4),
    ("great-plains", -98.0, 38.5, 4),
    ("deccan", 78.0, 22.0, 5),
    ("mongolia", 105.0, 47.0, 5),
    ("outback", 134.0, -25.0, 5),
)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone holding (lon, lat) (326xx north, 327xx south)."""
    zone = min(60, int((lon + 180.0) // 6) + 1)
    return (32600 if lat >= 0 else 32700) + zone


def scene_at(item_id: str, lon: float, lat: float, size10: int = 768, **kw: Any) -> SceneSpec:
    """A :class:`SceneSpec` in the local UTM zone whose centre is (about) (lon, lat).

    The upper-left corner is snapped to a multiple of 60 m so every band grid (10, 20, 60 m) aligns.
    """
    from rasterio.warp import transform as warp_transform

    epsg = utm_epsg(lon, lat)
    xs, ys = warp_transform("EPSG:4326", f"EPSG:{epsg}", [lon], [lat])
    half = size10 * 10 / 2
    origin = (round((xs[0] - half) / 60.0) * 60.0, round((ys[0] + half) / 60.0) * 60.0)
    return SceneSpec(item_id, origin=origin, epsg=epsg, size10=size10, **kw)


def demo_scenes(size10: int = 768) -> list[SceneSpec]:
    """The demo's scenes: one clear (5 % cloud) Sentinel-2-like scene per :data:`DEMO_REGIONS` entry."""
    return [scene_at(f"S2_DEMO_{name.upper().replace('-', '_')}", lon, lat, size10, scl_class=scl, seed=i,
                     cloud_cover=5.0, datetime=f"2022-0{1 + i % 9}-15T10:00:00Z")
            for i, (name, lon, lat, scl) in enumerate(DEMO_REGIONS)]


def locations_in_scenes(specs: list[SceneSpec], per_scene: int, seed: int = 0,
                        chip_size: int = 256) -> tuple[list[str], npt.NDArray[np.float64]]:
    """``per_scene`` locations uniform inside each scene's footprint, far enough from the edges that a
    ``chip_size`` chip centred there lies inside the scene.

    Returns:
        (ids ``<item_id>-<i>``, (N, 2) float64 lon/lat).
    """
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    lonlat: list[tuple[float, float]] = []
    for spec in specs:
        margin = (spec.size10 * 10 / 2) - (chip_size // 2 + 12) * 10  # metres from the centre
        if margin <= 0:
            raise ValueError(f"scene {spec.item_id}: {spec.size10} px is too small for {chip_size} px chips")
        for i in range(per_scene):
            dx, dy = rng.uniform(-margin, margin, 2)
            ids.append(f"{spec.item_id}-{i}")
            lonlat.append(scene_center(spec, float(dx), float(dy)))
    return ids, np.asarray(lonlat, dtype=np.float64)
