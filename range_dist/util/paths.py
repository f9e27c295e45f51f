"""Local paths from user input, for the inputs that must stay local: ``file://`` URLs are local,
every other URL scheme is refused.

Object storage (``s3://``, ``gs://``, ``az://``) is accepted where a store is written or read
through :class:`~range_dist.util.stores.StoreLocation`: ``embed-grid --out`` (the cube, its lease and
fast plan) and the cube a command reads (``map``, ``sample``, ``similar``; ``open_cube`` in Python).
The checkpoint and database of ``embed-grid`` / ``embed-points`` (``--satclip``, ``--db``) also accept
URLs: downloaded once into the cache and SHA-256 checked (:mod:`range_dist.util.downloads`), or for a
Zarr database on object storage, read in place. Every other input and output (locations and points
files, the inputs of the other commands, PNG / GeoTIFF / npz outputs) is a local path.
``Path("s3://bucket/cube.zarr")`` would silently become a local folder ``s3:/bucket/cube.zarr``, so a
user would believe the file is in the bucket; a URL is therefore refused here with a message that
says what to do instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from range_dist.errors import ConfigError

#: ``scheme://``: RFC 3986 scheme characters (a Windows drive ``C:\`` has no ``//``).
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_OBJECT_STORES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "adl", "r2", "oss")


def local_path(value: str | Path, what: str = "") -> Path:
    """``value`` as a local path.

    Args:
        value: a path, or a ``file://`` URL (``file:///data/cube.zarr`` → ``/data/cube.zarr``).
        what: how the user named the input (a flag or a field), to begin messages with; empty when the
            caller prefixes the message itself.

    Raises:
        ConfigError: ``value`` is a URL of another scheme (``s3://``, ``gs://``, ``https://``, ...),
            also one already made a ``Path`` (``s3:/bucket/...``), or a ``file://`` URL with a host
            other than localhost.
    """
    if isinstance(value, Path):
        # Path("s3://b/x") is already "s3:/b/x": a first component "s3:" is a URL that lost its "//"
        head = value.parts[0] if value.parts else ""
        if head.endswith(":") and head[:-1].lower() in (*_OBJECT_STORES, "http", "https", "ftp", "file"):
            raise ConfigError(f"{what + ' ' if what else ''}{str(value)!r} is a URL turned into a path "
                              f"(Path() drops the '//' of {head}//); pass the URL as text: only local paths and "
                              "file:// URLs are supported for this input")
        return value
    match = _URL.match(value)
    if match is None:
        return Path(value)
    scheme = match["scheme"].lower()
    name = f"{what} {value!r}" if what else repr(value)
    if scheme == "file":
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{name}: a file:// URL names a file on this machine "
                              f"(file:///path), not on host {parts.netloc!r}")
        return Path(unquote(parts.path))
    kind = "object storage" if scheme in _OBJECT_STORES else f"a {scheme}:// URL"
    raise ConfigError(f"{name}: {kind} is not supported; range-dist reads and writes local paths "
                      "(or file:// URLs) only for this input. Give a local path instead: copy or download the input "
                      "first, or mount the bucket as a folder and copy the output to it afterwards. (Object storage "
                      "URLs s3://, gs://, az:// are accepted by the stores: --out of embed-grid, build-db and "
                      "import-db, the cube argument of map, sample, similar and the product commands; URLs, "
                      "https:// too, by the input files: --satclip and --db, and the .npz of import-db.)")
