"""The RANGE / RANGE+ retrieval maths (pure torch: tensors in, tensors out)."""

from range_dist.retrieval.engine import (
    VARIANTS,
    DeviceDatabase,
    Partials,
    RetrievalSettings,
    blend,
    merge_partials,
    retrieve_partials,
)

__all__ = [
    "VARIANTS",
    "DeviceDatabase",
    "Partials",
    "RetrievalSettings",
    "blend",
    "merge_partials",
    "retrieve_partials",
]
