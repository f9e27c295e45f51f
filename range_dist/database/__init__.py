"""The retrieval database: rows of (location, key, value) with provenance."""

from range_dist.database.alignment import AlignmentReport, check_row_alignment
from range_dist.database.store import BlockCheck, RetrievalDatabase, VerifyReport, verify_database

__all__ = ["AlignmentReport", "BlockCheck", "RetrievalDatabase", "VerifyReport", "check_row_alignment",
           "verify_database"]
