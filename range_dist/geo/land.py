"""The one land mask of range_dist: global-land-mask (GLOBE, 30 arc-seconds), by point.

Why not simply ``globe.is_land``: importing global-land-mask decompresses its whole grid, 21600 ×
43200 booleans (933 MB), which takes 3-7 s and that memory in every process that asks (the driver,
each Ray actor, each test). The same grid is kept instead as a bit-packed copy (117 MB) in the
cache folder (``$RANGE_DIST_CACHE/land_mask``), written once per machine from the library's own
array and memory-mapped afterwards: a lookup reads only the pages of the points asked. Indices are
computed with the library's own formula and axes, so every answer equals ``globe.is_land``'s
(``tests/test_land_mask.py``). Where the cache cannot be written, the library's array is used as is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from range_dist.util.cache import cache_dir


@dataclass(frozen=True)
class _PackedMask:
    """The GLOBE ocean mask, 8 cells per byte along longitude, and the library's axis constants."""

    ocean_bits: npt.NDArray[np.uint8]  # (21600, 5400), np.packbits of the ocean mask along axis 1
    lat0: float
    lat_step: float
    lat_min: float
    lat_max: float
    lon0: float
    lon_step: float
    lon_min: float
    lon_max: float

    def is_land(self, lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        # global_land_mask.globe.lat_to_index / lon_to_index, operation for operation
        lat = np.minimum(np.maximum(lat, self.lat_min), self.lat_max)
        lon = np.minimum(np.maximum(lon, self.lon_min), self.lon_max)
        row = ((lat - self.lat0) / self.lat_step).astype("int")
        col = ((lon - self.lon0) / self.lon_step).astype("int")
        ocean = (self.ocean_bits[row, col >> 3] >> (7 - (col & 7)).astype(np.uint8)) & 1
        return ocean == 0


def _library_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("global_land_mask")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "globe_combined_mask_compressed.npz"


@functools.lru_cache(maxsize=1)
def _packed() -> _PackedMask | None:
    """The packed mask from the cache (written first if missing); None if the cache is not writable."""
    source = _library_file()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]  # 2.5 MB: a new library version, a new copy
    folder = cache_dir() / "land_mask"
    bits_path, axes_path = folder / f"globe-{digest}.bits.npy", folder / f"globe-{digest}.axes.json"
    if not (bits_path.exists() and axes_path.exists()):
        try:
            _write_cache(folder, bits_path, axes_path)
        except OSError:
            return None
    axes = json.loads(axes_path.read_text())
    return _PackedMask(np.load(bits_path, mmap_mode="r"), **axes)


def _write_cache(folder: Path, bits_path: Path, axes_path: Path) -> None:
    """Pack the library's grid into the cache; each file appears whole or not at all (temp file + rename)."""
    from global_land_mask import globe

    folder.mkdir(parents=True, exist_ok=True)
    lat, lon = np.asarray(globe._lat, dtype=np.float64), np.asarray(globe._lon, dtype=np.float64)
    axes = {"lat0": float(lat[0]), "lat_step": float(lat[1] - lat[0]), "lat_min": float(lat.min()),
            "lat_max": float(lat.max()), "lon0": float(lon[0]), "lon_step": float(lon[1] - lon[0]),
            "lon_min": float(lon.min()), "lon_max": float(lon.max())}
    for path, write in ((bits_path, lambda fh: np.save(fh, np.packbits(np.asarray(globe._mask, dtype=bool), axis=1))),
                        (axes_path, lambda fh: fh.write(json.dumps(axes).encode()))):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)  # concurrent writers (Ray actors) each rename a complete file
        finally:
            Path(tmp).unlink(missing_ok=True)


def land_mask(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """True where a (lon, lat) point is on land.

    Args:
        lonlat: (N, 2) float64 degrees.

    Returns:
        (N,) bool.
    """
    # The mask's own grid is open at the poles and the antimeridian: clip onto it.
    lat = np.clip(np.asarray(lonlat[:, 1], dtype=np.float64), -89.9999, 89.9999)
    lon = np.clip(np.asarray(lonlat[:, 0], dtype=np.float64), -179.9999, 179.9999)
    packed = _packed()
    if packed is not None:
        return packed.is_land(lat, lon)
    from global_land_mask import globe

    return np.asarray(globe.is_land(lat, lon), dtype=bool)
