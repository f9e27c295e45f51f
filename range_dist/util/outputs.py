"""Checks of an output location, made before any computing (a run must not fail at its last step)."""

from __future__ import annotations

import os
from pathlib import Path

from range_dist.errors import ConfigError
from range_dist.util.paths import local_path


def check_output_location(path: str | Path, flag: str = "--out", overwrite: bool | None = None) -> None:
    """Raise unless ``path`` can be written: its nearest existing ancestor is a writable folder.

    Missing parent folders are fine (they are created when writing). Reads only.

    Args:
        path: the output.
        flag: how the user named it, for messages.
        overwrite: False refuses an existing ``path`` (pass --overwrite); None leaves that to the caller
            (stores decide by their own signature whether a rerun resumes them).

    Raises:
        ConfigError: ``path`` is a URL (only local paths and file:// are supported); the output exists
            and ``overwrite`` is False; the location is under a file, or in a
            read-only / forbidden folder; the message names the path and the folder.
    """
    path = local_path(path, flag)
    if overwrite is False and path.exists():
        raise ConfigError(f"{flag} {path} already exists; pass --overwrite to replace it")
    ancestor = path.parent if str(path.parent) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {path}: {ancestor} is a file, not a folder; choose another {flag}")
    # os.access honours read-only file systems (EROFS) even for root, unlike a permission-bit check
    target = path if path.exists() else ancestor
    if not os.access(target, os.W_OK) or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {target} is not writable (read-only file system or no permission); "
                          f"choose another {flag}")
