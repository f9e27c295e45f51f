"""The user's cache folder of range_dist: ``$RANGE_DIST_CACHE``, else ``~/.cache/range_dist``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where fetched assets and derived data (the packed land mask) are kept."""
    return Path(os.environ.get("RANGE_DIST_CACHE", Path.home() / ".cache" / "range_dist"))
