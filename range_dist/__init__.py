"""range_dist: RANGE / RANGE+ geo-embeddings for any set of locations, on a laptop or a Ray cluster.

Public API::

    from range_dist import load_satclip_location_encoder, RetrievalDatabase, RangeEncoder

    location = load_satclip_location_encoder("satclip-vit16-l40.ckpt")
    db = RetrievalDatabase.open("range_db_med.npz")          # or the Zarr form
    emb = RangeEncoder(location, db, variant="range+").encode(lonlat, betas=(0.0, 0.5, 1.0))
    # emb: (3, N, 1280) float32 = [H_β (1024) | q̂ (256)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "RangeEncoder",
    "RetrievalDatabase",
    "__version__",
    "encode_sharded",
    "load_satclip_location_encoder",
]

if TYPE_CHECKING:
    from range_dist.database.store import RetrievalDatabase
    from range_dist.encoders.checkpoints import load_satclip_location_encoder
    from range_dist.retrieval.encoder import RangeEncoder, encode_sharded

_LAZY = {
    "RangeEncoder": "range_dist.retrieval.encoder",
    "encode_sharded": "range_dist.retrieval.encoder",
    "RetrievalDatabase": "range_dist.database.store",
    "load_satclip_location_encoder": "range_dist.encoders.checkpoints",
}


def __getattr__(name: str) -> Any:
    # torch is heavy: the public names are imported on first use, not with the package.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'range_dist' has no attribute {name!r}")
