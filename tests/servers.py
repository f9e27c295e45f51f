"""Re-export of :mod:`range_dist.demo.servers` (the local servers moved into the package for ``range-dist demo``)."""

from __future__ import annotations

from range_dist.demo.servers import RangeServer, RustacServer, free_port

__all__ = ["RangeServer", "RustacServer", "free_port"]
