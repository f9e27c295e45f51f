"""Inputs read from a URL (a checkpoint, an ``.npz`` database): downloaded once into the cache, SHA-256 checked.

``--satclip`` and ``--db`` accept, besides a local path, ``s3://``, ``gs://``, ``az://`` (read through
:class:`~range_dist.util.stores.StoreLocation`, credentials from each cloud's standard environment),
``https://`` (the published assets are on Hugging Face) and plain ``http://`` (meant for servers on a
private network and local test servers: nothing checks who answered, the digest pin below does).

Cache layout: ``cache_dir()/downloads/<sha256 of the URL>/<file name>`` (object stores: of the endpoint
and the URL), and beside it
``<file name>.sha256``, the file's SHA-256 computed while it was downloaded. The key is the URL
without its ``#sha256=`` fragment, so pinning a URL reuses what an unpinned run downloaded.

- A download goes to a temporary file in the same folder, is hashed while written, and is renamed into
  place only when complete and (when pinned) matching: a killed download leaves only a temporary file,
  never a short file that a later run would use. The digest record is renamed into place after the
  file, so a file without its record is an unfinished download and is downloaded again.
- Every reuse hashes the cached file again and compares it with the record: a damaged or replaced
  cached file is an error naming it and the fix (delete it and rerun), never used.
- A URL may pin the expected digest pip-style, ``https://host/x.ckpt#sha256=<64 hex>``: a mismatch, of
  a new download or of a cached copy, is an error naming both digests, and nothing is used.

No secret reaches a message, an attribute or the cache's folder names: credentials live in the
environment (never in the URL: a user part ``user:pass@`` is refused), and a URL's query (a presigned
URL's signature) is shown as ``?…`` by :func:`public_url`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from range_dist.errors import AssetError, ConfigError
from range_dist.util.cache import cache_dir
from range_dist.util.hashing import sha256_file
from range_dist.util.paths import local_path
from range_dist.util.stores import OBJECT_STORES, StoreLocation

#: URL schemes an input file may be downloaded from (``http`` for private-network and test servers).
DOWNLOAD_SCHEMES = (*OBJECT_STORES, "https", "http")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_PIN = re.compile(r"^sha256=(?P<hex>[0-9a-fA-F]{64})$")
#: Bytes per read while streaming a download (hashing as it goes).
_BLOCK = 1 << 20
#: Seconds before an HTTP(S) connection or read is given up.
HTTP_TIMEOUT_S = 60.0
#: Inside :func:`transient_downloads`: the temporary folder new downloads go to, and the URLs fetched there.
_TRANSIENT: ContextVar[tuple[Path, list[str]] | None] = ContextVar("range_dist_transient_downloads", default=None)


@dataclass(frozen=True)
class RemoteInput:
    """A URL an input is downloaded from.

    Attributes:
        url: the URL without its fragment (what is downloaded, and what keys the cache).
        pin: the expected SHA-256 (lower-case hex) from a ``#sha256=`` fragment, or None.
    """

    url: str
    pin: str | None = None

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower()

    @property
    def file_name(self) -> str:
        """The URL's last path component (``satclip.ckpt``): the cached copy keeps it (and its suffix)."""
        name = unquote(urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1])
        return name or "download"

    @property
    def public(self) -> str:
        """The URL as text safe for messages and attributes (see :func:`public_url`)."""
        return public_url(self.url) + (f"#sha256={self.pin}" if self.pin else "")

    @property
    def cache_folder(self) -> Path:
        """``cache_dir()/downloads/<sha256 of the URL>`` (the folder name shows nothing of the URL).

        For an object store the endpoint is hashed with the URL: ``s3://assets/x.ckpt`` on AWS and on a
        private S3-compatible server are different files and must not share a cached copy.
        """
        key = self.url
        if self.scheme in OBJECT_STORES:
            key = f"{StoreLocation.parse(self.url).endpoint()} {self.url}"
        return cache_dir() / "downloads" / hashlib.sha256(key.encode()).hexdigest()

    @property
    def cached(self) -> Path:
        return self.cache_folder / self.file_name

    @property
    def record(self) -> Path:
        """The digest recorded at download, beside the cached copy."""
        return self.cache_folder / f"{self.file_name}.sha256"


@dataclass(frozen=True)
class FetchedInput:
    """An input ready to read locally.

    Attributes:
        path: the local file (the given path, or the cached copy of a URL).
        source: where it came from, safe to record: the local path, or the public URL.
        sha256: the file's SHA-256 (hex).
        downloaded: whether this call downloaded it (False: local, or reused from the cache).
    """

    path: Path
    source: str
    sha256: str
    downloaded: bool = False


def public_url(url: str) -> str:
    """``url`` without what may be secret: no user part, and a query (a presigned signature) shown as ``?…``."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


def parse_remote(value: str, what: str = "") -> RemoteInput | None:
    """``value`` as a URL to download, or None when it is not URL text (a local path, ``file://``).

    Raises:
        ConfigError: a scheme that cannot be downloaded, credentials in the URL, a fragment other than
            ``sha256=<64 hex>``, or an object-store URL without a bucket.
    """
    match = _SCHEME.match(value)
    if match is None or match["scheme"].lower() == "file":
        return None
    scheme = match["scheme"].lower()
    parts = urlsplit(value)
    name = f"{what} {public_url(value)!r}" if what else repr(public_url(value))
    if scheme not in DOWNLOAD_SCHEMES:
        raise ConfigError(f"{name}: {scheme}:// inputs are not supported; give a local path or a URL of "
                          f"{', '.join(s + '://' for s in DOWNLOAD_SCHEMES)}")
    if "@" in parts.netloc:
        # a password in the URL would end in messages and the cube's provenance
        raise ConfigError(f"{name}: credentials in a URL are refused; they come from the environment "
                          "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    pin = None
    if parts.fragment:
        found = _PIN.match(parts.fragment)
        if found is None:
            raise ConfigError(f"{name}: the only URL fragment understood is #sha256=<64 hex digits> (the "
                              "expected SHA-256 of the file)")
        pin = found["hex"].lower()
    url = value.split("#", 1)[0]
    if scheme in OBJECT_STORES:
        url = StoreLocation.parse(url, what).url or url  # normalised; refuses a URL without a bucket
    elif not parts.hostname:
        raise ConfigError(f"{name}: the URL names no host")
    return RemoteInput(url, pin)


def parse_input(value: str | Path, what: str = "") -> Path | str:
    """An input setting (``--satclip``, ``--db``): a local ``Path``, or URL text kept as text.

    ``Path()`` would drop a URL's ``//`` (``s3:/bucket/...``): a URL stays text until
    :func:`fetch_input` (or, for a Zarr database, the store code) reads it.
    """
    if isinstance(value, str) and parse_remote(value, what) is not None:
        return value
    return local_path(value, what)


def is_remote(value: str | Path | None) -> bool:
    """Whether an input setting is a URL to download (not a local path)."""
    return isinstance(value, str) and parse_remote(value) is not None


@contextmanager
def transient_downloads() -> Iterator[list[str]]:
    """Within: a URL not in the cache is downloaded to a temporary folder removed on exit, not to the cache.

    A dry run reads its inputs (the plan needs the checkpoint's degree and the database's size) but must
    leave nothing behind: a copy already in the cache is used (and verified), a new one is not kept.

    Yields:
        The public URLs downloaded temporarily so far (for the dry run to say so).
    """
    with tempfile.TemporaryDirectory(prefix="range-dist-dry-run-") as folder:
        fetched: list[str] = []
        token = _TRANSIENT.set((Path(folder), fetched))
        try:
            yield fetched
        finally:
            _TRANSIENT.reset(token)


def fetch_input(value: str | Path, what: str = "input") -> FetchedInput:
    """The local file of an input: the path itself, or the URL's verified copy in the cache.

    Args:
        value: a local path, a ``file://`` URL, or a URL of :data:`DOWNLOAD_SCHEMES` (optionally
            ``#sha256=<hex>``).
        what: how the user named the input (``--satclip``), to begin messages with.

    Raises:
        AssetError: the download failed; the cached copy does not match its record; or the file does not
            match the URL's pin.
        ObjectStoreError: the object store refused (credentials, bucket, reachability).
    """
    remote = parse_remote(value, what) if isinstance(value, str) else None
    if remote is None:
        path = local_path(value, what)
        return FetchedInput(path, str(path), sha256_file(path) if path.is_file() else "")
    if remote.cached.is_file() and remote.record.is_file():
        return FetchedInput(remote.cached, remote.public, _check_cached(remote, what))
    transient = _TRANSIENT.get()
    if transient is not None:  # a dry run: a temporary copy, gone when the dry run ends
        folder = Path(tempfile.mkdtemp(dir=transient[0]))
        transient[1].append(remote.public)
        digest = _download(remote, what, folder)
        return FetchedInput(folder / remote.file_name, remote.public, digest, downloaded=True)
    digest = _download(remote, what)
    return FetchedInput(remote.cached, remote.public, digest, downloaded=True)


def _check_cached(remote: RemoteInput, what: str) -> str:
    """The cached copy's digest, after checking it against the record and the pin."""
    recorded = remote.record.read_text().strip().lower()
    actual = sha256_file(remote.cached)
    if actual != recorded:
        raise AssetError(
            f"{what} {remote.public}: the cached copy {remote.cached} is damaged or was replaced (SHA-256 {actual}, "
            f"recorded at download {recorded}); it is not used. Delete the folder {remote.cache_folder} and rerun "
            "to download it again")
    _check_pin(remote, actual, what, f"the cached copy {remote.cached}")
    return actual


def _check_pin(remote: RemoteInput, actual: str, what: str, which: str) -> None:
    if remote.pin is not None and actual != remote.pin:
        raise AssetError(
            f"{what} {remote.public}: SHA-256 mismatch: {which} has {actual}, the URL pins {remote.pin}; nothing "
            "was used. Check the URL's #sha256= (or the file at the URL); a mismatching cached copy is removed "
            f"by deleting {remote.cache_folder}")


def _download(remote: RemoteInput, what: str, folder: Path | None = None) -> str:
    """Download into the cache (or ``folder``) (temporary file + rename), record the digest, return it."""
    folder = remote.cache_folder if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{remote.file_name}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out, _open_source(remote, what) as source:
            while block := source.read(_BLOCK):
                digest.update(block)
                out.write(block)
        actual = digest.hexdigest()
        _check_pin(remote, actual, what, "the downloaded file")
        record_tmp = folder / f".{remote.record.name}.{os.getpid()}.tmp"
        record_tmp.write_text(actual + "\n")
        # the file first, then its record: a file without a record is an unfinished download (fetched again)
        os.replace(tmp, folder / remote.file_name)
        os.replace(record_tmp, folder / remote.record.name)
        return actual
    finally:
        tmp.unlink(missing_ok=True)


class _Source:
    """A readable download source (an object-store file or an HTTP response) as a context manager."""

    def __init__(self, stream: IO[bytes], location: StoreLocation | None, name: str) -> None:
        self.stream, self.location, self.name = stream, location, name

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()

    def read(self, size: int) -> bytes:
        if self.location is not None:
            with self.location.errors("downloading"):
                return self.stream.read(size)
        try:
            return self.stream.read(size)
        except OSError as exc:  # a connection cut mid-download: the temporary file is removed, nothing used
            raise AssetError(f"{self.name}: the download was cut ({exc}); rerun to download it again") from exc


def _open_source(remote: RemoteInput, what: str) -> _Source:
    """Open the URL for reading, with one-line errors that name the public URL (never a secret)."""
    if remote.scheme in OBJECT_STORES:
        location = StoreLocation.parse(remote.url, what)
        with location.errors("downloading"):
            fs, path = location.filesystem()
            try:
                stream = fs.open(path, "rb")
            except FileNotFoundError as exc:
                raise AssetError(f"{what} {remote.public}: no such object") from exc
        return _Source(stream, location, f"{what} {remote.public}")
    request = urllib.request.Request(remote.url, headers={"User-Agent": "range-dist"})
    try:
        response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)  # http(s) only: checked by parse_remote
    except urllib.error.HTTPError as exc:
        raise AssetError(f"{what} {remote.public}: the server answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AssetError(f"{what} {remote.public}: cannot download ({reason}); check the URL and the network, "
                         "or download the file yourself and pass its local path") from exc
    return _Source(response, None, f"{what} {remote.public}")

