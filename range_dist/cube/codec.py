"""int8 quantisation of embeddings: per-vector int8 codes and one float32 scale (Tessera's scheme).

Pure numpy, arrays in, arrays out. A vector ``x`` (last axis, D values) is stored as
``codes = round(x / scale)`` (int8 in [-127, 127]) with ``scale = max|x| / 127`` (float32), and decoded
as ``codes * scale``. A vector that is all NaN (a cell not embedded) gets codes 0 and a NaN scale, so
the decoded vector is NaN again; an all-zero vector gets scale 0 and decodes to zeros.

Error bound: each value is off by at most ``scale / 2 = max|x| / 254`` (rounding), i.e. a relative
error per vector of at most ``sqrt(D) / 254 · max|x| / ||x||`` in the L2 norm.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

INT8_MAX = 127
INT8_DECODE = "value = float32(code) * scale (per cell and part); NaN scale = not embedded"


def quantize_int8(x: npt.ArrayLike) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Quantise vectors along the last axis.

    Args:
        x: (..., D) floats; a vector with any NaN counts as not embedded (whole-vector NaN).

    Returns:
        ``codes`` (..., D) int8 in [-127, 127] and ``scale`` (...) float32 = max|x| / 127
        (NaN for a vector that holds NaN).
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        peak = np.max(np.abs(x), axis=-1) if x.shape[-1] else np.zeros(x.shape[:-1], np.float32)
    scale = (peak / np.float32(INT8_MAX)).astype(np.float32)  # NaN where the vector holds NaN
    safe = np.where(np.isfinite(scale) & (scale > 0), scale, np.float32(1.0))
    with np.errstate(invalid="ignore"):
        codes = np.rint(x / safe[..., None])
    codes = np.where(np.isnan(codes), 0, np.clip(codes, -INT8_MAX, INT8_MAX)).astype(np.int8)
    return codes, scale


def dequantize_int8(codes: npt.ArrayLike, scale: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Decode (..., D) int8 ``codes`` with their (...) float32 ``scale`` to (..., D) float32.

    Works on numpy arrays and, unchanged, on dask arrays (broadcasting only), so readers stay lazy.
    """
    codes_f = codes.astype(np.float32) if hasattr(codes, "astype") else np.asarray(codes, np.float32)
    scale_f = scale.astype(np.float32) if hasattr(scale, "astype") else np.asarray(scale, np.float32)
    return codes_f * scale_f[..., None]  # type: ignore[no-any-return,index]
