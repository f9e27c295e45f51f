"""Generators of Sentinel-2-like L2A scenes (12 band COGs + SCL in a UTM CRS) and their STAC items, and the
generated world of ``range-dist demo``.

The demo world (:func:`demo_world`) has land-cover regions that its chips show and its probes use:
a seeded :class:`LandCoverMap` (Voronoi cells of random seed points on the sphere, each cell one of
:data:`LAND_COVER_CLASSES`, snow poleward of 60°, desert likelier in the subtropics) gives every
location a label; a scene at a location shows its class with the class's spectrum
(:data:`LAND_COVER_SPECTRA`) and texture (canopy, fields, dunes, ...), so what an encoder sees
depends on where it looks.
"""

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
    land_cover: int | None = None  # a class of LAND_COVER_CLASSES: its spectra and texture instead of band_pixels
    overviews: str = "AUTO"  # the COG driver's OVERVIEWS option ("NONE" for the demo's small scenes)


def scene_rasters(spec: SceneSpec) -> dict[str, npt.NDArray[Any]]:
    """Every band of ``spec`` on its native grid, as :func:`write_scene` writes them (pure).

    Returns:
        band name -> (n, n) array, n = ``size10 * 10 / resolution``: uint16 DN for the 12 L2A bands
        (0 = nodata), uint8 for ``SCL``.
    """
    out: dict[str, npt.NDArray[Any]] = {}
    cover = None if spec.land_cover is None else land_cover_dn(spec.land_cover, spec.size10, spec.seed)
    for band in (*L2A_BANDS, "SCL"):
        res = RESOLUTION[band]
        n = spec.size10 * 10 // res
        data: npt.NDArray[Any]
        if band == "SCL":
            data = np.full((n, n), 9 if spec.cloudy_scl else spec.scl_class, np.uint8)
        elif cover is not None:
            data = _block_mean(cover[L2A_BANDS.index(band)], res // 10)
        else:
            data = band_pixels(band, (n, n), spec.seed)
        edge = -(-spec.nodata_cols * 10 // res)
        if edge:
            data[:, :edge] = 0
        out[band] = data
    return out


def write_scene(spec: SceneSpec, root: Path, base_url: str) -> dict[str, Any]:
    """Write the COGs of ``spec`` under ``root/spec.item_id`` and return its STAC item (hrefs on ``base_url``)."""
    write_scene_cogs(spec, root)
    return scene_item(spec, base_url)


def write_scene_cogs(spec: SceneSpec, root: Path) -> Path:
    """Write the 13 COGs of ``spec`` (``<band>.tif``) into ``root/spec.item_id``; returns that folder."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin

    folder = root / spec.item_id
    folder.mkdir(parents=True, exist_ok=True)
    rasters = scene_rasters(spec)
    for band in (*L2A_BANDS, "SCL"):
        res = RESOLUTION[band]
        n = spec.size10 * 10 // res
        data = rasters[band]
        profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": data.dtype.name,
                   "crs": f"EPSG:{spec.epsg}", "transform": from_origin(*spec.origin, res, res), "nodata": 0}
        with MemoryFile() as mem:
            with mem.open(**profile) as ds:
                ds.write(data, 1)
            with mem.open() as src:
                rio_copy(src, folder / f"{band}.tif", driver="COG", BLOCKSIZE=str(spec.blocksize),
                         COMPRESS="DEFLATE", OVERVIEWS=spec.overviews)
    return folder


def scene_item(spec: SceneSpec, base_url: str) -> dict[str, Any]:
    """The STAC item of ``spec``'s COGs served under ``base_url`` (footprint from the UTM corners)."""
    from rasterio.warp import transform as warp_transform

    assets: dict[str, Any] = {}
    for band in (*L2A_BANDS, "SCL"):
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


# ---------------------------------------------------------------------------- land cover
#: the demo world's land-cover classes (label = index)
LAND_COVER_CLASSES: tuple[str, ...] = ("forest", "grassland", "cropland", "shrubland", "desert", "snow")
#: surface reflectance of each class in the 12 L2A bands (B01..B12 without B10): typical library spectra,
#: rounded (vegetation: low red, red edge, high NIR; desert: bright, rising to SWIR; snow: bright VIS, dark SWIR)
LAND_COVER_SPECTRA: dict[str, tuple[float, ...]] = {
    "forest": (0.020, 0.025, 0.050, 0.025, 0.080, 0.250, 0.310, 0.330, 0.350, 0.300, 0.150, 0.070),
    "grassland": (0.035, 0.045, 0.085, 0.065, 0.130, 0.240, 0.280, 0.300, 0.310, 0.270, 0.250, 0.150),
    "cropland": (0.030, 0.040, 0.090, 0.050, 0.140, 0.300, 0.380, 0.420, 0.430, 0.380, 0.220, 0.110),
    "shrubland": (0.060, 0.080, 0.110, 0.130, 0.170, 0.210, 0.230, 0.250, 0.260, 0.230, 0.330, 0.250),
    "desert": (0.150, 0.200, 0.280, 0.360, 0.390, 0.410, 0.420, 0.430, 0.440, 0.400, 0.520, 0.450),
    "snow": (0.850, 0.900, 0.880, 0.850, 0.830, 0.800, 0.780, 0.750, 0.730, 0.600, 0.100, 0.050),
}
#: bare soil between the fields of cropland
_BARE_SOIL = (0.100, 0.120, 0.150, 0.180, 0.200, 0.220, 0.230, 0.240, 0.250, 0.220, 0.300, 0.250)
#: the SCL class a scene of each land cover carries (4 vegetation, 5 not vegetated, 11 snow)
LAND_COVER_SCL: dict[str, int] = {"forest": 4, "grassland": 4, "cropland": 4, "shrubland": 5, "desert": 5,
                                  "snow": 11}
#: L2A DN carry a +1000 offset from processing baseline 04.00 on (the demo scenes are 05.09)
DN_OFFSET = 1000


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> npt.NDArray[np.float64]:
    """Gaussian-smoothed white noise scaled to unit standard deviation, (size, size)."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=(size, size)), sigma, mode="wrap")
    return np.asarray(field / max(float(field.std()), 1e-12))


def land_cover_reflectance(cls: int, size10: int, seed: int) -> npt.NDArray[np.float32]:
    """A scene's surface reflectance at 10 m: the class spectrum times the class texture (pure, seeded).

    Textures: forest canopy (fine blobs), grassland (broad, gentle), cropland (rectangular fields of
    crop or bare soil), shrubland (dark shrub dots on bright soil), desert (dunes), snow (nearly flat).
    A per-scene brightness factor in [0.85, 1.15] varies scenes of one class.

    Args:
        cls: index into :data:`LAND_COVER_CLASSES`.
        size10: pixels per side at 10 m.
        seed: the scene's seed.

    Returns:
        (12, size10, size10) float32 reflectance in the L2A band order.
    """
    name = LAND_COVER_CLASSES[cls]
    rng = np.random.default_rng([seed, cls])
    spectrum = np.asarray(LAND_COVER_SPECTRA[name], dtype=np.float64)[:, None, None]
    n = size10
    if name == "forest":
        out = spectrum * (1.0 + 0.25 * _smooth_noise(rng, n, 2.0))[None]
    elif name == "grassland":
        out = spectrum * (1.0 + 0.12 * _smooth_noise(rng, n, 12.0))[None]
    elif name == "cropland":
        field = int(rng.integers(24, 48))
        blocks = -(-n // field)
        crop = np.repeat(np.repeat(rng.uniform(0.0, 1.0, (blocks, blocks)), field, 0), field, 1)[:n, :n]
        soil = np.asarray(_BARE_SOIL, dtype=np.float64)[:, None, None]
        out = (crop[None] * spectrum + (1.0 - crop[None]) * soil) * (1.0 + 0.04 * _smooth_noise(rng, n, 1.0))[None]
    elif name == "shrubland":
        shrubs = (_smooth_noise(rng, n, 1.5) > 1.0).astype(np.float64)
        shade = np.asarray(LAND_COVER_SPECTRA["grassland"], dtype=np.float64)[:, None, None] * 0.6
        out = spectrum * (1.0 - shrubs[None]) + shade * shrubs[None]
    elif name == "desert":
        rows, cols = np.indices((n, n))
        angle, wavelength = rng.uniform(0.0, np.pi), rng.uniform(18.0, 40.0)
        dunes = np.sin(2.0 * np.pi * (rows * np.cos(angle) + cols * np.sin(angle)) / wavelength)
        out = spectrum * (1.0 + 0.10 * dunes + 0.03 * _smooth_noise(rng, n, 3.0))[None]
    else:  # snow
        out = spectrum * (1.0 + 0.03 * _smooth_noise(rng, n, 20.0))[None]
    return (out * rng.uniform(0.85, 1.15)).astype(np.float32)


def land_cover_dn(cls: int, size10: int, seed: int) -> npt.NDArray[np.uint16]:
    """:func:`land_cover_reflectance` as L2A DN (``reflectance * 10000 + DN_OFFSET``, never 0), (12, n, n)."""
    refl = land_cover_reflectance(cls, size10, seed)
    return np.clip(np.round(refl * 10000.0) + DN_OFFSET, 1, 65535).astype(np.uint16)


def _block_mean(data: npt.NDArray[np.uint16], factor: int) -> npt.NDArray[np.uint16]:
    """Aggregate a 10 m band to a coarser native grid (``factor`` 2 or 6) by block means."""
    if factor == 1:
        return data.copy()
    n = data.shape[0] // factor
    blocks = data[: n * factor, : n * factor].reshape(n, factor, n, factor).astype(np.float64)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint16)


@dataclass(frozen=True)
class LandCoverMap:
    """The demo world's land cover: each location takes the class of its nearest seed point.

    Attributes:
        seeds: (K, 2) float64 (lon, lat) degrees of the Voronoi seeds.
        classes: (K,) int64 class of each seed (index into :data:`LAND_COVER_CLASSES`).
        seed: the generator seed it was made with.
    """

    seeds: npt.NDArray[np.float64]
    classes: npt.NDArray[np.int64]
    seed: int

    def __call__(self, lonlat: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """(N, 2) (lon, lat) degrees -> (N,) int64 class labels (great-circle nearest seed)."""
        from range_dist.geo.coords import lonlat_to_xyz

        points = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
        seeds = lonlat_to_xyz(self.seeds)
        out = np.empty(len(points), dtype=np.int64)
        for start in range(0, len(points), 8192):
            xyz = lonlat_to_xyz(points[start : start + 8192])
            out[start : start + 8192] = self.classes[np.argmax(xyz @ seeds.T, axis=1)]
        return out

    def describe(self) -> str:
        return (f"demo land cover: {len(self.seeds)} Voronoi regions (seed {self.seed}) of "
                f"{', '.join(LAND_COVER_CLASSES)}")


def land_cover_map(regions: int = 120, seed: int = 0) -> LandCoverMap:
    """A seeded :class:`LandCoverMap` of ``regions`` cells (about 340 deg² each for 120).

    Seeds poleward of 60° are snow; elsewhere desert is likelier between 15° and 35° of latitude
    (probability 0.4) than outside (0.05), the other classes share the rest equally.
    """
    from range_dist.geo.sphere import sample_sphere

    rng = np.random.default_rng([seed, 7])
    seeds = sample_sphere(regions, rng)
    classes = np.empty(regions, dtype=np.int64)
    snow, desert = LAND_COVER_CLASSES.index("snow"), LAND_COVER_CLASSES.index("desert")
    others = [i for i in range(len(LAND_COVER_CLASSES)) if i not in (snow, desert)]
    for k, lat in enumerate(np.abs(seeds[:, 1])):
        if lat >= 60.0:
            classes[k] = snow
            continue
        p_desert = 0.4 if 15.0 <= lat <= 35.0 else 0.05
        probs = [p_desert] + [(1.0 - p_desert) / len(others)] * len(others)
        classes[k] = [desert, *others][int(rng.choice(len(probs), p=probs))]
    return LandCoverMap(seeds, classes, seed)


# ---------------------------------------------------------------------------- the demo's world
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


#: |latitude| and |longitude| limits of the demo's locations: UTM footprints stay small, and none crosses
#: the antimeridian (a STAC bbox cannot wrap)
DEMO_MAX_LAT, DEMO_MAX_LON = 80.0, 179.0


@dataclass(frozen=True)
class DemoWorld:
    """The generated world of ``range-dist demo``.

    Attributes:
        land_cover: the label of every location (:class:`LandCoverMap`).
        ids: location ids (``DEMO-0000``...), one per scene.
        lonlat: (N, 2) float64 (lon, lat) degrees of the locations (uniform on land).
        scenes: one small clear scene centred on each location, showing its land cover.
        seed: the world's seed.
    """

    land_cover: LandCoverMap
    ids: tuple[str, ...]
    lonlat: npt.NDArray[np.float64]
    scenes: tuple[SceneSpec, ...]
    seed: int

    def labels(self) -> npt.NDArray[np.int64]:
        """(N,) land-cover class of each location."""
        return self.land_cover(self.lonlat)

    def describe(self) -> dict[str, Any]:
        counts = np.bincount(self.labels(), minlength=len(LAND_COVER_CLASSES))
        return {"seed": self.seed, "locations": len(self.ids), "scene_size_px": self.scenes[0].size10,
                "land_cover": self.land_cover.describe(),
                "locations_per_class": dict(zip(LAND_COVER_CLASSES, (int(c) for c in counts)))}


def demo_world(locations: int = 256, seed: int = 0, regions: int = 120, size10: int = 288) -> DemoWorld:
    """The demo's world: ``locations`` points uniform on land (|lat| <= 80°, |lon| <= 179°), each with one
    clear (5 % cloud) Sentinel-2-like scene of ``size10`` px centred on it that shows its land cover.

    ``size10`` = 288 leaves a 256 px chip centred on the location inside the scene.
    """
    from range_dist.geo.sphere import sample_land

    if locations < 1:
        raise ValueError(f"locations={locations}: the demo world needs at least one location")
    cover = land_cover_map(regions, seed)
    rng = np.random.default_rng([seed, 11])
    points = np.empty((0, 2))
    while len(points) < locations:
        batch = sample_land(2 * locations, rng)
        keep = (np.abs(batch[:, 1]) <= DEMO_MAX_LAT) & (np.abs(batch[:, 0]) <= DEMO_MAX_LON)
        points = np.concatenate([points, batch[keep]])
    lonlat = points[:locations]
    labels = cover(lonlat)
    ids = tuple(f"DEMO-{i:04d}" for i in range(locations))
    scenes = tuple(
        scene_at(f"S2_DEMO_{i:04d}", float(lon), float(lat), size10, land_cover=int(cls),
                 scl_class=LAND_COVER_SCL[LAND_COVER_CLASSES[int(cls)]], seed=seed * 100003 + i, cloud_cover=5.0,
                 datetime=f"2022-{1 + i % 12:02d}-15T10:00:00Z", overviews="NONE")
        for i, ((lon, lat), cls) in enumerate(zip(lonlat, labels)))
    return DemoWorld(cover, ids, lonlat, scenes, seed)


def chip_dn(spec: SceneSpec, lon: float, lat: float, chip_size: int = 256) -> tuple[
        npt.NDArray[np.uint16], npt.NDArray[np.uint8]]:
    """The chip :func:`range_dist.chips.read.read_chip` reads at (lon, lat) from ``spec``'s COGs, made in memory.

    Same window (the ``chip_size`` px of the 10 m grid centred nearest the point), same pixel
    replication of the 20 / 60 m bands, zeros outside the scene: the demo trains its encoders on
    exactly the pixels the database build reads over HTTP.

    Returns:
        ((12, s, s) uint16 DN, (s, s) uint8 SCL).
    """
    from rasterio.warp import transform as warp_transform

    from range_dist.chips.read import chip_geometry

    xs, ys = warp_transform("EPSG:4326", f"EPSG:{spec.epsg}", [lon], [lat])
    transform = (10.0, 0.0, spec.origin[0], 0.0, -10.0, spec.origin[1])
    geom = chip_geometry(transform, xs[0], ys[0], chip_size)
    col0 = round((geom.left - spec.origin[0]) / 10.0)
    row0 = round((spec.origin[1] - geom.top) / 10.0)
    rasters = scene_rasters(spec)
    out = []
    for band in (*L2A_BANDS, "SCL"):
        factor = RESOLUTION[band] // 10
        full = np.repeat(np.repeat(rasters[band], factor, axis=0), factor, axis=1)
        window = np.zeros((chip_size, chip_size), dtype=full.dtype)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + chip_size, full.shape[0]), min(col0 + chip_size, full.shape[1])
        if r1 > r0 and c1 > c0:
            window[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = full[r0:r1, c0:c1]
        out.append(window)
    return np.stack(out[:-1]).astype(np.uint16), out[-1].astype(np.uint8)
