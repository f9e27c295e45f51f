"""How a cube stores its embeddings: the layout (β levels or retrieval heads) and the value encoding.

Pure: arrays in, arrays out (numpy when writing a tile, numpy or dask when reading), plus the
attribute record that says how to decode. The output of RANGE+ at β is ``[H_β | q̂]`` with the
linear blend ``H_β = (1-β)·H_geo + β·H_sem`` (docs/method.md; RANGE has no spatial head:
``H_β = H_sem``). Two layouts:

* ``beta`` (default): ``embedding(beta, lat, lon, feature)``, one ``[H_β | q̂]`` per computed β:
  ``K·(D+256)`` values per cell for K β levels (D = value dim, 1024 for the published database).
* ``heads``: ``H_geo(lat, lon, value)``, ``H_sem(lat, lon, value)`` and ``q_hat(lat, lon, key)``
  once per cell (RANGE: ``H_sem`` and ``q_hat`` only): ``2·D+256`` values per cell (``D+256`` for
  RANGE), and ANY β in [0, 1] is an exact blend on read. It is smaller as soon as K ≥ 2 (for
  D = 1024: 2304 values against 2560 at K = 2, 3840 at K = 3); with one β the beta layout is
  smaller (1280).

Encodings (``dtype`` × ``quantize``): float32, float16 (a cast), or int8 codes with one float32
scale per cell and part (:mod:`range_dist.cube.codec`; Tessera's scheme). Beta layout: the parts are
``H`` (feature [0, D)) and ``q_hat`` (feature [D, D+256)), scales in ``embedding_scale(beta, lat,
lon, part)``; heads layout: one scale per variable, ``<name>_scale(lat, lon)``. A NaN scale (or NaN
values) means not embedded. int8 adds 4 bytes per part to 1 byte per value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.cube.codec import INT8_DECODE, dequantize_int8, quantize_int8
from range_dist.errors import ConfigError, StoreMismatchError

LAYOUTS = ("beta", "heads")
QUANTIZE = ("none", "int8")
#: The attribute holding the encoding record (see :meth:`CubeEncoding.to_attrs`).
ENCODING_KEY = "range_dist:cube_encoding"
#: The STAC-embedding-style quantisation record.
QUANT_KEY = "emb:quantization"
HEAD_VARIABLES = {"geo": "H_geo", "sem": "H_sem"}


@dataclass(frozen=True)
class Variable:
    """One stored array per cell block: name, dimensions (after lat/lon), trailing size, dtype, fill."""

    name: str
    dims: tuple[str, ...]
    trailing: tuple[int, ...]
    dtype: str
    fill: Any
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CubeEncoding:
    """Layout and value encoding of a cube.

    Attributes:
        layout: ``beta`` or ``heads``.
        dtype: float values: ``float16`` or ``float32`` (with ``int8``: the dtype quantised from, float32).
        quantize: ``none`` or ``int8``.
        value_dim: D, width of the retrieved image embedding H.
        key_dim: width of q̂ (256).
        betas: the β levels the run was asked for (beta layout: the stored ones; heads: the default read).
        heads: retrieval heads (``("geo", "sem")`` for RANGE+, ``("sem",)`` for RANGE).
    """

    layout: str
    dtype: str
    quantize: str
    value_dim: int
    key_dim: int
    betas: tuple[float, ...]
    heads: tuple[str, ...] = ("geo", "sem")

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout={self.layout!r}: use one of {', '.join(LAYOUTS)}")
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"quantize={self.quantize!r}: use one of {', '.join(QUANTIZE)}")

    @property
    def feature_dim(self) -> int:
        return self.value_dim + self.key_dim

    @property
    def compute_betas(self) -> tuple[float, ...]:
        """The β levels a tile is computed at: the stored ones, or (0, 1) = [H_geo|q̂], [H_sem|q̂] for heads."""
        if self.layout == "beta":
            return self.betas
        return (0.0, 1.0) if "geo" in self.heads else (1.0,)

    @property
    def compute_dtype(self) -> str:
        """The dtype tiles are computed in (float32 before int8 quantisation)."""
        return "float32" if self.quantize == "int8" else self.dtype

    @property
    def value_dtype(self) -> str:
        return "int8" if self.quantize == "int8" else self.dtype

    def variables(self) -> list[Variable]:
        """The stored arrays, in the order their bytes enter a tile's checksum."""
        code = self.value_dtype
        fill: Any = 0 if self.quantize == "int8" else np.nan
        out: list[Variable] = []
        if self.layout == "beta":
            out.append(Variable("embedding", ("beta", "lat", "lon", "feature"), (self.feature_dim,), code, fill,
                                {"long_name": "RANGE geo-embedding [H_beta | q_hat]"}))
            if self.quantize == "int8":
                out.append(Variable("embedding_scale", ("beta", "lat", "lon", "part"), (2,), "float32", np.nan,
                                    {"long_name": "int8 scale per cell and part (H, q_hat); NaN = not embedded"}))
            return out
        for head in self.heads:
            name = HEAD_VARIABLES[head]
            out.append(Variable(name, ("lat", "lon", "value"), (self.value_dim,), code, fill,
                                {"long_name": f"retrieved image embedding of the {head} head ({name})"}))
        out.append(Variable("q_hat", ("lat", "lon", "key"), (self.key_dim,), code, fill,
                            {"long_name": "unit SatCLIP location embedding q_hat"}))
        if self.quantize == "int8":
            out += [Variable(f"{v.name}_scale", ("lat", "lon"), (), "float32", np.nan,
                             {"long_name": f"int8 scale per cell of {v.name}; NaN = not embedded"})
                    for v in list(out)]
        return out

    def values_per_cell(self) -> int:
        """Stored embedding values per cell (β levels × features, or the heads)."""
        if self.layout == "beta":
            return len(self.betas) * self.feature_dim
        return len(self.heads) * self.value_dim + self.key_dim

    def bytes_per_cell(self) -> int:
        """Stored bytes per cell before compression (values and int8 scales)."""
        size = self.values_per_cell() * np.dtype(self.value_dtype).itemsize
        if self.quantize == "int8":
            parts = 2 * len(self.betas) if self.layout == "beta" else len(self.heads) + 1
            size += 4 * parts
        return int(size)

    def to_attrs(self) -> dict[str, Any]:
        """The attributes that say how to decode: the encoding record and an ``emb:quantization`` record."""
        record = {"layout": self.layout, "dtype": self.dtype, "quantize": self.quantize,
                  "value_dim": self.value_dim, "key_dim": self.key_dim, "betas": list(self.betas),
                  "heads": list(self.heads), "variables": [v.name for v in self.variables()],
                  "blend": "embedding(beta) = [(1-beta)*H_geo + beta*H_sem | q_hat] (RANGE: [H_sem | q_hat])"
                           if self.layout == "heads" else "stored per beta"}
        if self.quantize == "int8":
            parts = "per beta and cell, part H = feature [0, D) and part q_hat = feature [D, D+256)" \
                if self.layout == "beta" else "per cell and variable"
            quant = {"method": "int8-absmax", "original_dtype": "float32", "codes_dtype": "int8",
                     "scale_dtype": "float32", "scale": f"max|x| / 127, {parts}",
                     "decode": INT8_DECODE}
        else:
            quant = {"method": "none" if self.dtype == "float32" else "float16-cast", "original_dtype": "float32",
                     "codes_dtype": self.dtype, "decode": "value as stored; NaN = not embedded"}
        return {ENCODING_KEY: record, QUANT_KEY: quant}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], embedding_dtype: str | None = None,
                   feature_dim: int | None = None, betas: Sequence[float] = ()) -> CubeEncoding:
        """The encoding a store records; a cube made before the record is a float beta-layout cube."""
        rec = attrs.get(ENCODING_KEY)
        if not isinstance(rec, Mapping):
            f = int(feature_dim or 0)
            key = 256 if f > 256 else 0
            return cls("beta", str(embedding_dtype or "float32"), "none", f - key, key, tuple(betas))
        return cls(str(rec["layout"]), str(rec["dtype"]), str(rec["quantize"]), int(rec["value_dim"]),
                   int(rec["key_dim"]), tuple(float(b) for b in rec["betas"]), tuple(rec["heads"]))

    # -- writing -------------------------------------------------------------------------------

    def encode_block(self, block: npt.NDArray[np.floating]) -> dict[str, npt.NDArray[Any]]:
        """A tile's block as computed, (len(compute_betas), h, w, D+256), to the stored arrays.

        Returns:
            Variable name -> block (beta layout: (beta, h, w, ...); heads: (h, w, ...)), in the
            stored dtype, C-contiguous, in :meth:`variables` order.
        """
        d = self.value_dim
        if block.shape[0] != len(self.compute_betas) or block.shape[-1] != self.feature_dim:
            raise ValueError(f"block {block.shape}: expected ({len(self.compute_betas)}, h, w, {self.feature_dim})")
        if self.layout == "beta":
            parts = {"embedding": block}
        else:
            parts = {HEAD_VARIABLES[h]: block[b, ..., :d] for b, h in enumerate(self.heads)}
            parts["q_hat"] = block[0, ..., d:]
        out: dict[str, npt.NDArray[Any]] = {}
        if self.quantize == "none":
            for name, values in parts.items():
                out[name] = np.ascontiguousarray(values, dtype=self.dtype)
            return out
        if self.layout == "beta":
            h_codes, h_scale = quantize_int8(block[..., :d])
            q_codes, q_scale = quantize_int8(block[..., d:])
            out["embedding"] = np.ascontiguousarray(np.concatenate([h_codes, q_codes], axis=-1))
            out["embedding_scale"] = np.ascontiguousarray(np.stack([h_scale, q_scale], axis=-1))
            return out
        scales = {}
        for name, values in parts.items():
            out[name], scales[f"{name}_scale"] = quantize_int8(values)
        return {**{k: np.ascontiguousarray(v) for k, v in out.items()},
                **{k: np.ascontiguousarray(v) for k, v in scales.items()}}

    def embedded_cells(self, stored: Mapping[str, npt.NDArray[Any]]) -> int:
        """Embedded cells of a tile's stored arrays (those of :meth:`encode_block`)."""
        if self.quantize == "int8":
            scale = stored["embedding_scale"][0, ..., 0] if self.layout == "beta" else stored["q_hat_scale"]
            return int((~np.isnan(scale)).sum())
        first = stored["embedding"][0, ..., 0] if self.layout == "beta" else stored["q_hat"][..., 0]
        return int((~np.isnan(first)).sum()) if first.size else 0

    # -- reading -------------------------------------------------------------------------------

    def decoded(self, arrays: Mapping[str, Any], betas: Sequence[float]) -> Any:
        """The embedding (beta, lat, lon, feature) for ``betas`` from the stored arrays (numpy or dask).

        Args:
            arrays: variable name -> array (numpy or dask; heads: (lat, lon, ...), beta: (beta, lat, lon, ...)).
            betas: heads layout: any β in [0, 1]; beta layout: ignored (select on the result).

        Returns:
            float32 (float16 for a float16 cube) array; lazy when the inputs are dask arrays.
        """
        import dask.array as da

        d = self.value_dim

        def plain(name: str) -> Any:
            if self.quantize == "none":
                return arrays[name]
            return dequantize_int8(arrays[name], arrays[f"{name}_scale"])

        if self.layout == "beta":
            if self.quantize == "none":
                return arrays["embedding"]
            codes, scale = arrays["embedding"], arrays["embedding_scale"]
            return da.concatenate([dequantize_int8(codes[..., :d], scale[..., 0]),
                                   dequantize_int8(codes[..., d:], scale[..., 1])], axis=-1)
        q_hat = plain("q_hat")
        sem = plain("H_sem")
        geo = plain("H_geo") if "geo" in self.heads else None
        levels = []
        for beta in betas:
            if geo is None or beta == 1.0:
                h = sem
            elif beta == 0.0:
                h = geo
            else:  # the published linear blend, in the stored precision (float32 after int8)
                w = np.asarray(beta, dtype=sem.dtype)
                h = (np.asarray(1, dtype=sem.dtype) - w) * geo + w * sem
            levels.append(da.concatenate([h, q_hat], axis=-1))
        return da.stack(levels, axis=0)


def check_betas_for(encoding: CubeEncoding, betas: Sequence[float], available: Sequence[float]) -> None:
    """Refuse β outside [0, 1] (any layout) and, in beta layout, β the cube does not hold.

    Raises:
        ConfigError: naming the β and the fix.
    """
    for beta in betas:
        if not 0.0 <= float(beta) <= 1.0:
            raise ConfigError(f"beta={beta}: β must be in [0, 1] (0 = spatial head, 1 = semantic head)")
    if encoding.layout == "beta":
        missing = [b for b in betas if not np.any(np.abs(np.asarray(available, float) - float(b)) <= 1e-6)]
        if missing:
            raise ConfigError(
                f"beta={missing[0]:g} is not in the cube; it holds beta = "
                f"{', '.join(f'{b:g}' for b in available)}. Pick one of those (embed-grid --betas sets the levels "
                "of a beta-layout cube; a cube made with --layout heads gives any β in [0, 1] on read).")


def require_layout(attrs: Mapping[str, Any], source: str) -> None:
    """Refuse a store whose encoding record names an unknown layout or quantisation (a newer writer)."""
    rec = attrs.get(ENCODING_KEY)
    if isinstance(rec, Mapping) and (rec.get("layout") not in LAYOUTS or rec.get("quantize") not in QUANTIZE):
        raise StoreMismatchError(f"{source}: unknown cube encoding {dict(rec)!r}; this range-dist reads layouts "
                                 f"{', '.join(LAYOUTS)} and quantisations {', '.join(QUANTIZE)} (upgrade range-dist)")
