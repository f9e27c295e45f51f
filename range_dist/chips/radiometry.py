"""Radiometry, cloud and nodata of a chip (pure array maths).

Two radiometry products (a database records which one it used):

* ``faithful``: reflectance = DN / 10000 for every scene, as the published RANGE / SatCLIP
  databases (S2-100K mixes processing baselines without correcting the +1000 offset).
* ``harmonised``: from processing baseline 04.00 on, L2A DN carry a +1000 offset:
  reflectance = (DN - 1000) / 10000, decided by ``s2:processing_baseline`` (not by date), unless
  the provider already removed it (``earthsearch:boa_offset_applied``). SCL is never offset.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from range_dist.errors import ConfigError

Radiometry = Literal["faithful", "harmonised"]
RADIOMETRY_MODES: tuple[str, ...] = ("faithful", "harmonised")

BOA_OFFSET = 1000
#: SCL classes counted as cloud: 3 cloud shadow, 8 cloud medium, 9 cloud high, 10 thin cirrus.
SCL_CLOUD_CLASSES: tuple[int, ...] = (3, 8, 9, 10)
SCL_NODATA = 0


def parse_baseline(text: str) -> float | None:
    """``"05.09"`` -> 5.09; ``""`` or unparsable -> None."""
    try:
        return float(str(text).strip()) if str(text).strip() else None
    except ValueError:
        return None


def scene_offset(mode: str, processing_baseline: str, boa_offset_applied: bool) -> int:
    """The DN offset to subtract from a scene's reflectance bands under ``mode``.

    Raises:
        ConfigError: unknown mode.
    """
    if mode == "faithful":
        return 0
    if mode != "harmonised":
        raise ConfigError(f"radiometry {mode!r}: expected one of {RADIOMETRY_MODES}")
    baseline = parse_baseline(processing_baseline)
    if baseline is None or boa_offset_applied:
        return 0
    return BOA_OFFSET if baseline >= 4.0 else 0


def to_reflectance(dn: npt.NDArray[np.uint16], offset: int) -> npt.NDArray[np.float32]:
    """(B, H, W) DN -> float32 reflectance ``(DN - offset) / 10000`` (nodata 0 stays 0)."""
    out = (dn.astype(np.float32) - np.float32(offset)) / np.float32(10000.0)
    if offset:
        out[dn == 0] = 0.0
    return out


def nodata_mask(dn: npt.NDArray[np.uint16], scl: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """(H, W) True where every band is 0 (outside the swath / padding) or SCL says NO_DATA."""
    return np.asarray((dn == 0).all(axis=0) | (scl == SCL_NODATA), dtype=bool)


def nodata_fraction(dn: npt.NDArray[np.uint16], scl: npt.NDArray[np.uint8]) -> float:
    """Fraction of the chip's pixels that are nodata."""
    return float(nodata_mask(dn, scl).mean())


def cloud_fraction(scl: npt.NDArray[np.uint8], valid: npt.NDArray[np.bool_] | None = None) -> float:
    """Fraction of valid pixels whose SCL class is cloud, cloud shadow or cirrus (0 if none valid)."""
    cloudy = np.isin(scl, SCL_CLOUD_CLASSES)
    if valid is not None:
        if not valid.any():
            return 0.0
        return float(cloudy[valid].mean())
    return float(cloudy.mean())
