"""The retrieval database: rows of (location, key, value) with provenance."""

from range_dist.database.alignment import AlignmentReport, check_row_alignment
from range_dist.database.store import RetrievalDatabase

__all__ = ["AlignmentReport", "RetrievalDatabase", "check_row_alignment"]
