"""Where a store lives: a local folder or an object-store URL (``s3://``, ``gs://``, ``az://``), one type for both.

:class:`StoreLocation` is the one place that knows about locations. It parses what a user gave
(a local path, ``file://``, ``s3://``, ``gs://`` or ``az://``; every other scheme is refused with a
message, never turned into a local folder), and it gives what the cube code needs: the Zarr store
(:meth:`StoreLocation.zarr_store`), existence, removal of a whole store, small sidecar objects
(the lease, the fast plan) with an optional create-only write, and object sizes.

Library: fsspec (``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``, ``adlfs`` for ``az://``) through
zarr v3's ``FsspecStore``. Why fsspec rather than obstore: xarray and zarr open URL strings through
fsspec natively, so a user's ``xr.open_zarr("s3://bucket/cube.zarr", storage_options=...)`` opens the
cube with the same configuration the job used (the same environment variables, the same options),
with no store object to build; the three backends also all offer a create-only write (S3
``If-None-Match: *``, GCS ``ifGenerationMatch=0``, Azure ``overwrite=False``), which the lease needs.

Credentials and endpoints come from each cloud's standard environment, read by the backend itself
(S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, profiles; GCS:
``GOOGLE_APPLICATION_CREDENTIALS``; Azure: ``AZURE_STORAGE_ACCOUNT_NAME`` with
``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_CONNECTION_STRING``). For S3, ``AWS_ENDPOINT_URL``
(an ``http://`` endpoint is allowed: an S3-compatible server on a private network) and ``AWS_REGION``
are read here too, so that messages can name the endpoint. Options given in the job's YAML
(``storage_options``) are registered per bucket for this process (:func:`register_storage_options`):
stores travel through code that knows them only as text or a path (executors, ``Path(str(out))``),
and every later parse of a location in that bucket finds them. They may hold secrets, so they are
never part of a location's text, ``repr`` or :meth:`StoreLocation.describe`, and never written to a
store, a report or a log.

Object stores have no rename and no folders: a "store" is the set of objects under a prefix, a
write of one object is atomic (a reader sees the old object or the new one, never a part), and
existence of the store means "some object under the prefix".
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from range_dist.errors import ConfigError, RangeDistError

#: ``scheme://``: RFC 3986 scheme characters (a Windows drive ``C:\`` has no ``//``).
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
#: The object stores supported, and the fsspec backend package of each.
OBJECT_STORES: dict[str, str] = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs"}
#: Schemes whose ``Path()`` (which drops the ``//``: ``s3:/bucket/key``) is recognised as the URL it was.
_MANGLED = (*OBJECT_STORES, "gcs", "abfs", "abfss", "adl", "r2", "oss", "http", "https", "ftp", "file")
#: Storage options registered for this process, per ``scheme://bucket`` (see the module notes).
_REGISTERED: dict[str, dict[str, Any]] = {}
#: How to create a missing bucket, per scheme (for the error message).
_CREATE_BUCKET = {
    "s3": "aws s3 mb s3://{bucket}{endpoint_flag}",
    "gs": "gcloud storage buckets create gs://{bucket}",
    "az": "az storage container create --name {bucket}",
}
#: The environment variables that hold each cloud's credentials (for the error message).
_CREDENTIAL_VARS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN for temporary keys)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "az": "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_CONNECTION_STRING",
}

#: where each object store's endpoint is set, for the "cannot reach" message
_ENDPOINT_SETTINGS = {
    "s3": "AWS_ENDPOINT_URL or storage_options endpoint_url",
    "gs": "STORAGE_EMULATOR_HOST or storage_options endpoint_url",
    "az": "AZURE_STORAGE_ACCOUNT_NAME or AZURE_STORAGE_CONNECTION_STRING, or storage_options account_name",
}


class ObjectStoreError(RangeDistError):
    """An object store refused or could not serve a request (credentials, bucket, permission, reachability)."""


def is_url(value: str | Path) -> bool:
    """True when ``value`` is URL text (``scheme://...``) of any scheme."""
    return isinstance(value, str) and _URL.match(value) is not None


def register_storage_options(location: str | Path | StoreLocation, options: Mapping[str, Any]) -> None:
    """Use ``options`` (fsspec storage options) for every object-store location in ``location``'s bucket.

    A no-op for a local location. Later registrations for the same bucket replace earlier ones.
    """
    loc = StoreLocation.parse(location)
    if loc.url is not None and options:
        _REGISTERED[loc.bucket_url] = _normalise_options(loc.scheme, dict(options))


def _normalise_options(scheme: str, options: dict[str, Any]) -> dict[str, Any]:
    """Flat YAML text values as fsspec expects them: booleans, and (S3) ``region`` as the client's region."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        out[name] = value
    if scheme == "s3" and "region" in out:
        out["client_kwargs"] = {**out.get("client_kwargs", {}), "region_name": out.pop("region")}
    return out


@dataclass(frozen=True)
class StoreLocation:
    """A store's location: a local path, or an object-store URL.

    Exactly one of ``path`` and ``url`` is set. ``url`` is normalised (``scheme://bucket/key``, lower-case
    scheme, no trailing ``/``). Neither ever holds a secret: storage options live in the process
    registry and the environment (module notes).

    Attributes:
        path: the local path.
        url: the object-store URL.
    """

    path: Path | None = None
    url: str | None = None

    # ------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, value: str | Path | StoreLocation, what: str = "") -> StoreLocation:
        """``value`` as a location.

        Args:
            value: a local path; a ``file://`` URL (local); an ``s3://``, ``gs://`` or ``az://`` URL; or a
                ``Path`` made of such a URL by code that passed the store on as a path (``Path`` drops
                the ``//``: ``s3:/bucket/key``), which is read back as the URL it was.
            what: how the user named the input (a flag or a field), to begin messages with.

        Raises:
            ConfigError: another URL scheme (``https://``, ``gcs://``, ...), a URL without a bucket, or
                a ``file://`` URL naming another host.
        """
        if isinstance(value, StoreLocation):
            return value
        name = f"{what} {str(value)!r}" if what else repr(str(value))
        if isinstance(value, Path):
            head = value.parts[0] if value.parts else ""
            scheme = head[:-1].lower() if head.endswith(":") else ""
            if scheme in OBJECT_STORES:
                return cls._object_url(scheme, "/".join(value.parts[1:]), name)
            if scheme in _MANGLED:
                raise ConfigError(f"{name} is a {scheme}:// URL turned into a path (Path() drops the '//'); "
                                  f"{_SUPPORTED}")
            return cls(path=value)
        match = _URL.match(value)
        if match is None:
            return cls(path=Path(value))
        scheme = match["scheme"].lower()
        if scheme == "file":
            parts = urlsplit(value)
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(f"{name}: a file:// URL names a file on this machine "
                                  f"(file:///path), not on host {parts.netloc!r}")
            return cls(path=Path(unquote(parts.path)))
        if scheme not in OBJECT_STORES:
            raise ConfigError(f"{name}: {scheme}:// is not a supported store location; {_SUPPORTED}")
        return cls._object_url(scheme, value[match.end():], name)

    @classmethod
    def _object_url(cls, scheme: str, rest: str, name: str) -> StoreLocation:
        parts = urlsplit(f"{scheme}://{rest}")
        if parts.query or parts.fragment or "@" in parts.netloc:
            # credentials in a URL would end up in attributes and logs: they belong in the environment
            raise ConfigError(f"{name}: a store URL is scheme://bucket/key, without user, query or fragment; "
                              "credentials come from the environment or the job's storage_options")
        bucket, key = parts.netloc, parts.path.strip("/")
        if not bucket:
            raise ConfigError(f"{name}: the URL names no bucket; use {scheme}://BUCKET/path/store.zarr")
        return cls(url=f"{scheme}://{bucket}" + (f"/{key}" if key else ""))

    # ------------------------------------------------------------------ naming

    @property
    def is_local(self) -> bool:
        return self.url is None

    @property
    def scheme(self) -> str:
        """``s3``, ``gs``, ``az``, or ``file`` for a local location."""
        return "file" if self.url is None else self.url.split("://", 1)[0]

    @property
    def bucket(self) -> str:
        """The bucket (Azure: the container); empty for a local location."""
        return "" if self.url is None else self.url.split("://", 1)[1].split("/", 1)[0]

    @property
    def bucket_url(self) -> str:
        return f"{self.scheme}://{self.bucket}"

    @property
    def name(self) -> str:
        """The last component (``cube.zarr``)."""
        return self.local.name if self.url is None else self.url.rsplit("/", 1)[-1]

    @property
    def local(self) -> Path:
        """The local path (raises for an object-store location: callers branch on :attr:`is_local`)."""
        if self.path is None:
            raise ConfigError(f"{self.url}: a local path was expected here")
        return self.path

    def child(self, name: str) -> StoreLocation:
        """The location ``name`` (a relative key, ``/``-separated) inside this one."""
        if self.url is None:
            return StoreLocation(path=self.local.joinpath(*name.split("/")))
        return StoreLocation(url=f"{self.url}/{name.strip('/')}")

    def sibling(self, suffix: str) -> StoreLocation:
        """The location beside this one whose name is this name + ``suffix`` (``cube.zarr.lease``)."""
        if self.url is None:
            return StoreLocation(path=self.local.with_name(self.local.name + suffix))
        return StoreLocation(url=self.url + suffix)

    def __str__(self) -> str:
        return str(self.path) if self.url is None else self.url

    def describe(self) -> str:
        """The location as text safe for attributes, reports and logs (never an option or a secret)."""
        return str(self)

    def as_arg(self) -> Path | str:
        """What a job config's store field holds: the local Path, or the URL text."""
        return self.local if self.url is None else self.url

    # ------------------------------------------------------------------ configuration

    def endpoint(self) -> str:
        """The object store's endpoint, for messages (S3: ``endpoint_url`` or ``AWS_ENDPOINT_URL``)."""
        if self.scheme == "s3":
            options = self.storage_options()
            return str(options.get("endpoint_url") or "the AWS S3 default endpoint")
        if self.scheme == "gs":
            return str(self.storage_options().get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST")
                       or "Google Cloud Storage")
        if self.scheme == "az":
            return f"Azure Blob Storage account {os.environ.get('AZURE_STORAGE_ACCOUNT_NAME', '(unset)')}"
        return "the local file system"

    def storage_options(self) -> dict[str, Any]:
        """The fsspec storage options of this location: the environment's, then the registered ones.

        May hold secrets (registered ``key`` / ``secret``): pass it to fsspec only, never print it.
        """
        if self.url is None:
            return {}
        options: dict[str, Any] = {}
        if self.scheme == "s3":
            if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
                # passed explicitly (botocore would read the same variables) so that fsspec's cache of file
                # systems, keyed by these options, never serves a client made with other credentials
                options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
                options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
                if os.environ.get("AWS_SESSION_TOKEN"):
                    options["token"] = os.environ["AWS_SESSION_TOKEN"]
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options["endpoint_url"] = endpoint
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if region:
                options["client_kwargs"] = {"region_name": region}
            # a few quick retries, then a clear error: botocore's defaults wait minutes on a dead endpoint
            options["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 60,
                                        "retries": {"max_attempts": 3, "mode": "standard"}}
            # listings change under a running job (tiles, the lease): never answer from a cached listing
            options["use_listings_cache"] = False
        registered = _REGISTERED.get(self.bucket_url, {})
        merged = {**options, **registered}
        if "client_kwargs" in options and "client_kwargs" in registered:
            merged["client_kwargs"] = {**options["client_kwargs"], **registered["client_kwargs"]}
        return merged

    def filesystem(self) -> tuple[Any, str]:
        """(the fsspec file system, this location's path in it) of an object-store location."""
        import fsspec

        if self.url is None:
            return fsspec.filesystem("file"), str(self.local)
        _require_backend(self.scheme)
        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options())
        return fs, path

    def zarr_store(self, read_only: bool = False) -> Any:
        """The Zarr store to open this location with (``zarr.open_group(loc.zarr_store(), ...)``,
        ``ds.to_zarr(loc.zarr_store())``): a ``LocalStore`` or an ``FsspecStore``."""
        from zarr.storage import FsspecStore, LocalStore

        if self.url is None:
            return LocalStore(self.local, read_only=read_only)
        _require_backend(self.scheme)
        return FsspecStore.from_url(self.url, storage_options=self.storage_options(), read_only=read_only)

    # ------------------------------------------------------------------ objects

    def exists(self) -> bool:
        """Whether anything is there (an object-store location: an object, or objects under it).

        An object store may list a "folder" whose objects are all deleted (SeaweedFS keeps the entry
        for a while; AWS never has one), so a prefix counts only when an object is under it. A Zarr
        store is recognised by its ``zarr.json`` first: one request, no listing.
        """
        if self.url is None:
            return self.local.exists()
        with self.errors("looking at"):
            fs, path = self.filesystem()
            if fs.isfile(f"{path}/zarr.json") or fs.isfile(path):
                return True
            return bool(fs.find(path))

    def is_object(self) -> bool:
        """Whether this is a single file / object (not a folder / prefix)."""
        if self.url is None:
            return self.local.is_file()
        with self.errors("looking at"):
            fs, path = self.filesystem()
            return bool(fs.isfile(path))

    def size(self) -> int | None:
        """The size of the file / object, or None when there is none."""
        if self.url is None:
            return self.local.stat().st_size if self.local.is_file() else None
        with self.errors("looking at"):
            fs, path = self.filesystem()
            try:
                return int(fs.size(path))
            except FileNotFoundError:
                return None

    def object_sizes(self) -> dict[str, int]:
        """Sizes of every object under this location, by key relative to it (one listing)."""
        if self.url is None:
            root = self.local
            return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()} \
                if root.is_dir() else {}
        with self.errors("listing"):
            fs, path = self.filesystem()
            found = fs.find(path, detail=True)
        prefix = path.rstrip("/") + "/"
        return {name[len(prefix):]: int(info.get("size") or 0) for name, info in found.items()
                if name.startswith(prefix)}

    def read_bytes(self) -> bytes | None:
        """The content of the file / object, or None when there is none."""
        if self.url is None:
            try:
                return self.local.read_bytes()
            except FileNotFoundError:
                return None
        with self.errors("reading"):
            fs, path = self.filesystem()
            try:
                return bytes(fs.cat_file(path))
            except FileNotFoundError:
                return None

    def write_bytes(self, data: bytes, create_only: bool = False) -> bool:
        """Write the file / object whole.

        Args:
            data: the content.
            create_only: write only if nothing is there, atomically (local: ``O_CREAT | O_EXCL``; S3:
                ``If-None-Match: *``; GCS: ``ifGenerationMatch=0``; Azure: no overwrite).

        Returns:
            False when ``create_only`` and something was already there (nothing written); else True.
        """
        if self.url is None:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            if not create_only:  # temporary file + rename: a reader never sees half of it
                tmp = self.local.with_name(f".{self.local.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, self.local)
                return True
            try:
                fd = os.open(self.local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        with self.errors("writing", writing=True):
            fs, path = self.filesystem()
            # one PUT: an object is replaced whole, so a reader sees the old content or the new
            if not create_only:
                fs.pipe_file(path, data)
                return True
            try:
                fs.pipe_file(path, data, mode="create")
            except OSError as exc:  # s3fs: FileExistsError, or OSError(EINVAL) from older servers' 412
                if _is_precondition_failed(exc):
                    return False
                raise
            return True

    def delete(self) -> None:
        """Remove the file / object (nothing there is fine)."""
        if self.url is None:
            self.local.unlink(missing_ok=True)
            return
        with self.errors("deleting", writing=True):
            fs, path = self.filesystem()
            with suppress(FileNotFoundError):  # nothing there is fine
                fs.rm_file(path)

    def remove_tree(self, last: str | None = None) -> None:
        """Remove the store and everything in it (callers validate first that it is a range-dist store).

        Args:
            last: a key removed only after every other object (``zarr.json``: an object store deletes
                object by object, so a removal cut short still leaves the store's signature, and a
                rerun with ``--overwrite`` recognises and finishes it instead of refusing a stranger).
        """
        if self.url is None:
            shutil.rmtree(self.local)
            return
        with self.errors("removing", writing=True):
            fs, path = self.filesystem()
            keys = sorted(fs.find(path))
            final = f"{path.rstrip('/')}/{last}" if last else None
            first = [k for k in keys if k != final]
            if first:
                fs.rm(first)
            if final in keys:
                fs.rm_file(final)

    def check_bucket(self) -> None:
        """Raise unless the bucket exists and the credentials may list it (reads only; a no-op locally)."""
        if self.url is None:
            return
        with self.errors("opening the bucket of"):
            fs, _ = self.filesystem()
            if self.scheme == "s3":  # one request (a whole listing of a big bucket's top level could be long)
                fs.call_s3("list_objects_v2", Bucket=self.bucket, MaxKeys=1)
            else:
                fs.ls(self.bucket, detail=False)

    # ------------------------------------------------------------------ errors

    @contextmanager
    def errors(self, doing: str, writing: bool = False) -> Iterator[None]:
        """Turn an object-store failure inside the block into a one-line :class:`ObjectStoreError`.

        Args:
            doing: what was being done, as a verb phrase followed by the location ("writing").
            writing: whether the block writes (an access denial then means a read-only key).
        """
        if self.url is None:
            yield
            return
        try:
            yield
        except RangeDistError:
            raise
        except Exception as exc:
            error = self.explain(exc, doing, writing)
            if error is None:
                raise
            raise error from exc

    def explain(self, exc: BaseException, doing: str, writing: bool = False) -> ObjectStoreError | None:
        """The one-line error for an object-store failure ``exc``, or None when it is not one we know.

        Args:
            exc: the exception (its chain is searched for the service's error code).
            doing: what was being done ("writing tile (row 0, col 1) to").
            writing: whether the failed request wrote.
        """
        if self.url is None:
            return None
        code, text = _error_code(exc)
        where = f"{doing} {self.url}"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "AuthenticationFailed", "InvalidClientTokenId", "NoCredentials", "Unauthorized", "401") \
                or _looks_like(text, "signature we calculated", "access key id you provided does not exist",
                               "unable to locate credentials", "invalid_grant", "authenticationfailed"):
            return ObjectStoreError(
                f"{where}: the object store refused the credentials ({_short(text)}). Check "
                f"{_CREDENTIAL_VARS.get(self.scheme, 'the credentials')}, or key/secret in the job's "
                "storage_options")
        if code in ("NoSuchBucket", "ContainerNotFound", "404Bucket") \
                or _looks_like(text, "bucket does not exist", "specified container does not exist"):
            endpoint = self.endpoint()
            flag = f" --endpoint-url {endpoint}" if "://" in endpoint else ""
            how = _CREATE_BUCKET[self.scheme].format(bucket=self.bucket, endpoint_flag=flag)
            return ObjectStoreError(f"{where}: bucket {self.bucket!r} does not exist at {endpoint}. Create it first "
                                    f"(e.g. `{how}`) or fix the URL")
        if code in ("AccessDenied", "Forbidden", "403", "AuthorizationPermissionMismatch",
                    "AuthorizationFailure") or isinstance(exc, PermissionError):
            if writing:
                return ObjectStoreError(
                    f"{where}: the key lacks write permission on bucket {self.bucket!r} ({_short(text)}). Use "
                    "credentials that may write, list and delete objects there (S3: s3:PutObject, s3:GetObject, "
                    "s3:ListBucket, s3:DeleteObject)")
            return ObjectStoreError(f"{where}: the key may not read bucket {self.bucket!r} ({_short(text)}); use "
                                    "credentials that may list and read it")
        rerun = ("what was finished is kept: rerun the same command to resume" if writing else
                 "then rerun the same command")
        if _is_unreachable(exc):
            return ObjectStoreError(
                f"{where}: cannot reach the object store at {self.endpoint()} ({_short(text)}). Check that the "
                f"server runs and the endpoint ({_ENDPOINT_SETTINGS[self.scheme]}) is right; {rerun}")
        if code in ("InternalError", "ServiceUnavailable", "SlowDown", "ServerBusy", "InternalServerError") \
                or (code.isdigit() and code.startswith("5")):
            return ObjectStoreError(
                f"{where}: the object store at {self.endpoint()} failed to serve the request ({_short(text)}); "
                f"it may be stopping or overloaded: once it serves again, {rerun}")
        return None


_SUPPORTED = ("store locations are local paths, file:// URLs, or object storage: "
              + ", ".join(f"{s}:// ({p})" for s, p in OBJECT_STORES.items()))


def _require_backend(scheme: str) -> None:
    import importlib.util

    package = OBJECT_STORES[scheme]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"{scheme}:// stores need the {package} package: pip install {package}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _error_code(exc: BaseException) -> tuple[str, str]:
    """(the service's error code, if any, from the exception chain; the exception's text, one line)."""
    code = ""
    for item in _chain(exc):
        response = getattr(item, "response", None)  # botocore ClientError
        if isinstance(response, dict) and not code:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(response.get("Error", {}).get("Code", "") or status or "")
        error_code = getattr(item, "error_code", None)  # azure HttpResponseError
        if error_code and not code:
            code = str(error_code)
        status = getattr(item, "code", None)  # gcsfs HttpError
        if isinstance(status, int) and not code:
            code = str(status)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return code, text


def _looks_like(text: str, *needles: str) -> bool:
    low = text.lower()
    return any(n in low for n in needles)


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_precondition_failed(exc: BaseException) -> bool:
    code, text = _error_code(exc)
    return isinstance(exc, FileExistsError) or code in ("PreconditionFailed", "412", "BlobAlreadyExists") \
        or _looks_like(text, "pre-condition", "precondition", "already exists")


def _is_unreachable(exc: BaseException) -> bool:
    """A connection that could not be made or was cut (botocore, aiohttp and OS errors)."""
    names = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
             "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ServiceRequestError",
             "ServiceResponseError")
    # by class name through the MRO: the client libraries are optional imports, and they subclass
    # (aiohttp's ClientConnectorDNSError is a ClientConnectorError)
    return any(any(cls.__name__ in names for cls in type(item).__mro__)
               or isinstance(item, ConnectionError | TimeoutError | socket.gaierror)
               for item in _chain(exc))
