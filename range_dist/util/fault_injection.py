"""The test seam for fault injection: faults are asked for by an environment variable, never by a
production parameter.

``RANGE_DIST_TEST_FAULTS="kill_after_tiles=3,sleep_after_batch=1"``:

* ``kill_after_tiles=N``: a grid actor's first incarnation SIGKILLs its own process after writing
  N tiles, before answering (the restart and retry path).
* ``sleep_after_batch=S``: a database build sleeps S seconds after each appended batch (so a test
  can kill the build between batches).

Unset (always, outside tests) every hook here is a no-op.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

ENV_VAR = "RANGE_DIST_TEST_FAULTS"
KNOWN = ("kill_after_tiles", "sleep_after_batch")


def active() -> dict[str, float]:
    """The faults asked for in the environment (empty when unset)."""
    text = os.environ.get(ENV_VAR, "").strip()
    faults: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in KNOWN:
            raise RuntimeError(f"{ENV_VAR}: unknown fault {name!r}; known: {', '.join(KNOWN)}")
        faults[name] = float(value)
    return faults


def runtime_env() -> dict[str, Any] | None:
    """A Ray ``runtime_env`` that carries the faults to actors started by an existing cluster."""
    text = os.environ.get(ENV_VAR)
    return {"env_vars": {ENV_VAR: text}} if text else None


def after_tile(tiles_done: int, reconstructed: bool) -> None:
    """Kill this process when ``kill_after_tiles`` is due (first incarnation only)."""
    limit = active().get("kill_after_tiles")
    if limit is not None and not reconstructed and tiles_done >= limit:
        os.kill(os.getpid(), signal.SIGKILL)


def after_batch() -> None:
    """Sleep ``sleep_after_batch`` seconds, when asked for."""
    seconds = active().get("sleep_after_batch")
    if seconds:
        time.sleep(seconds)
