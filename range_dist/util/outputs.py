"""Checks of an output location, made before any computing (a run must not fail at its last step).

A local output: its nearest existing folder must be writable. An object-store output (``s3://``,
``gs://``, ``az://``): the bucket must exist and the credentials must list it; whether the key may
also write is known only by writing, so the first write of a run (the store's lease, before any
compute) says so when it may not.
"""

from __future__ import annotations

import os
from pathlib import Path

from range_dist.errors import ConfigError
from range_dist.util.stores import StoreLocation


def check_output_location(path: str | Path | StoreLocation, flag: str = "--out", overwrite: bool | None = None) -> None:
    """Raise unless ``path`` can be written: its nearest existing ancestor is a writable folder (an
    object-store output: its bucket exists and can be listed).

    Missing parent folders are fine (they are created when writing). Reads only. Inputs that must stay
    local are refused as URLs when they are parsed (:func:`range_dist.util.paths.local_path`).

    Args:
        path: the output.
        flag: how the user named it, for messages.
        overwrite: False refuses an existing ``path`` (pass --overwrite); None leaves that to the caller
            (stores decide by their own signature whether a rerun resumes them).

    Raises:
        ConfigError: ``path`` is a URL of an unsupported scheme; the output exists and ``overwrite`` is
            False; the location is under a file, or in a read-only / forbidden folder; the message
            names the path and the folder.
        ObjectStoreError: the bucket does not exist, the credentials are refused, or the object store
            cannot be reached.
    """
    location = StoreLocation.parse(path, flag)
    if not location.is_local:
        location.check_bucket()
        if overwrite is False and location.exists():
            raise ConfigError(f"{flag} {location} already exists; pass --overwrite to replace it")
        return
    path = location.local
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
