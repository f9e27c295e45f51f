"""The test seam for fault injection: faults are asked for by an environment variable, never by a
production parameter.

``RANGE_DIST_TEST_FAULTS="kill_after_tiles=3,sleep_after_batch=1"``:

* ``kill_after_tiles=N``: a grid actor's first incarnation SIGKILLs its own process after writing
  N tiles, before answering (the restart and retry path).
* ``sleep_after_batch=S``: a database build sleeps S seconds after each appended batch (so a test
  can kill the build between batches).

``RANGE_DIST_TEST_FAULT_LOG=FILE`` (optional): each injected fault appends one line to FILE first,
so that a test can tell the fault really happened (a killed Ray worker leaves no trace in the
driver's output).

Unset (always, outside tests) every hook here is a no-op.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

ENV_VAR = "RANGE_DIST_TEST_FAULTS"
LOG_VAR = "RANGE_DIST_TEST_FAULT_LOG"
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
    carried = {name: os.environ[name] for name in (ENV_VAR, LOG_VAR) if os.environ.get(name)}
    return {"env_vars": carried} if ENV_VAR in carried else None


def _log(event: str) -> None:
    path = os.environ.get(LOG_VAR)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{event} pid={os.getpid()}\n")


def after_tile(tiles_done: int, reconstructed: bool) -> None:
    """Kill this process when ``kill_after_tiles`` is due (first incarnation only)."""
    limit = active().get("kill_after_tiles")
    if limit is not None and not reconstructed and tiles_done >= limit:
        _log(f"kill_after_tiles after {tiles_done} tile(s)")
        os.kill(os.getpid(), signal.SIGKILL)


def after_batch() -> None:
    """Sleep ``sleep_after_batch`` seconds, when asked for."""
    seconds = active().get("sleep_after_batch")
    if seconds:
        time.sleep(seconds)
