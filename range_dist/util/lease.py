"""One driver per store: a lease file beside the store, taken before any compute and renewed by a heartbeat.

``STORE.zarr.lease`` (beside the store, so it can exist before the store does) holds the holder's
host, pid, run id, command, start time and last heartbeat. It is created with ``O_CREAT | O_EXCL``
(atomic on a local or NFS v3+ file system), so of two drivers starting at the same moment exactly
one gets it; the other is refused at once with a message naming the holder. The holder rewrites
its heartbeat every ``heartbeat_s`` (write a temporary file, then ``os.replace``: readers never see
a half-written lease) and removes the lease when it ends, however it ends short of SIGKILL.

On an object store (``s3://``, ``gs://``, ``az://``; :mod:`range_dist.util.stores`) the lease is the
object ``STORE.zarr.lease`` beside the store's prefix, created with a conditional write that the
server decides atomically: S3 ``PUT`` with ``If-None-Match: *`` (AWS S3 since 2024, and the
S3-compatible servers that implement it: SeaweedFS, MinIO), GCS ``ifGenerationMatch=0``, Azure
"no overwrite". So the guarantee is the local one: of two drivers exactly one creates it. A server
that ignores ``If-None-Match`` would let both PUTs succeed; the read-back after the create (the
holder must be us) then refuses the driver whose lease was overwritten, which narrows the race to
the two PUTs landing in the same instant, but cannot close it: use such a server with one driver
per store by convention. The heartbeat is a plain PUT of the whole object (an object is replaced
atomically: a reader sees the old lease or the new, never half of one).

A lease left by a driver that died: on the same host, a holder whose process no longer runs is
certainly gone, and its lease is taken over at once (a killed driver's rerun just resumes). On
another host nothing can be checked but the heartbeat: one older than ``timeout_s`` may be taken
over only with ``takeover=True`` (``--takeover``). The run report says whose lease it replaced
and why. A lease whose holder may be alive is never taken over. A takeover overwrites the lease and
reads it back (as locally: two drivers taking over the same stale lease at the same instant are
told apart by the read-back, the later writer wins, and the other is refused).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from range_dist.errors import RangeDistError
from range_dist.util.stores import StoreLocation

#: Seconds between heartbeats, and the age after which a heartbeat is stale.
HEARTBEAT_S = 10.0
TIMEOUT_S = 120.0


class StoreBusyError(RangeDistError):
    """Another driver holds the store's lease."""


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease (the content of the lease file)."""

    host: str
    pid: int
    run_id: str
    command: str
    started: float
    heartbeat: float

    def describe(self, now: float) -> str:
        return (f"run {self.run_id} (pid {self.pid} on {self.host}, {self.command!r}), started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}, last heartbeat "
                f"{now - self.heartbeat:.0f} s ago")


def lease_path(store: str | Path) -> Path:
    """Where the lease of a local ``store`` lives: ``STORE.lease`` beside it."""
    store = Path(store)
    return store.with_name(store.name + ".lease")


def lease_location(store: str | Path | StoreLocation) -> StoreLocation:
    """Where the lease of ``store`` (local or object store) lives: ``STORE.lease`` beside it."""
    return StoreLocation.parse(store).sibling(".lease")


def read_holder(store: str | Path | StoreLocation) -> LeaseHolder | None:
    """The current holder of ``store``'s lease, or None (no lease, or an unreadable one)."""
    try:
        data = lease_location(store).read_bytes()
        return None if data is None else LeaseHolder(**json.loads(data))
    except (ValueError, TypeError, OSError):  # half-written by a crashed writer: treat as no holder
        return None


def pid_runs(pid: int) -> bool:
    """True while a process ``pid`` exists (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_is_gone(holder: LeaseHolder) -> bool:
    """True when the holder ran on this host and its process no longer runs."""
    return holder.host == socket.gethostname() and not pid_runs(holder.pid)


def stale_reason(holder: LeaseHolder, now: float, timeout_s: float = TIMEOUT_S) -> str | None:
    """Why ``holder``'s lease is stale, or None when it may still be alive."""
    if holder_is_gone(holder):
        return f"its process {holder.pid} no longer runs on this host"
    if now - holder.heartbeat > timeout_s:
        return f"its heartbeat is {now - holder.heartbeat:.0f} s old (timeout {timeout_s:.0f} s)"
    return None


class StoreLease:
    """The lease of one store, held for one run (a context manager).

    Args:
        store: the store the lease guards.
        command: what the run is (shown to a driver that is refused).
        takeover: replace a stale lease (never a live one).
        heartbeat_s, timeout_s: renewal period and staleness age, seconds.
    """

    def __init__(self, store: str | Path | StoreLocation, command: str, takeover: bool = False,
                 heartbeat_s: float = HEARTBEAT_S, timeout_s: float = TIMEOUT_S) -> None:
        self.location = StoreLocation.parse(store)
        self.store: Path | str = self.location.as_arg()
        self.lease = self.location.sibling(".lease")
        self.command = command
        self.takeover = takeover
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        now = time.time()
        self.holder = LeaseHolder(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12], command, now, now)
        self.replaced: LeaseHolder | None = None
        self.replaced_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        """The lease file of a local store."""
        return self.lease.local

    def _write_new(self) -> bool:
        """Create the lease atomically (``O_EXCL`` / a conditional PUT); False when one exists."""
        return self.lease.write_bytes(json.dumps(asdict(self.holder)).encode(), create_only=True)

    def _replace(self, holder: LeaseHolder) -> None:
        # local: temporary file + os.replace; object store: one PUT (both atomic for a reader)
        self.lease.write_bytes(json.dumps(asdict(holder)).encode())

    def acquire(self) -> StoreLease:
        """Take the lease (or a stale one with ``takeover``) and start the heartbeat.

        Raises:
            StoreBusyError: another driver holds it; the message names the holder and what to do.
        """
        while not self._write_new():
            now = time.time()
            current = read_holder(self.store)
            if current is None:  # removed or half-written meanwhile: look again
                time.sleep(0.05)
                if read_holder(self.store) is None and self.lease.exists():
                    self.lease.delete()
                continue
            reason = stale_reason(current, now, self.timeout_s)
            if reason is None:
                raise StoreBusyError(
                    f"{self.store} is being written by another driver: {current.describe(now)}. One driver per "
                    f"store: wait for it to finish (then rerun to resume), stop it, or use another --out.")
            if not (self.takeover or holder_is_gone(current)):
                raise StoreBusyError(
                    f"{self.store} has the lease of an earlier run that looks dead ({reason}): "
                    f"{current.describe(now)}. If no driver is writing it, rerun with --takeover (or remove "
                    f"{self.lease}).")
            self._replace(self.holder)
            if read_holder(self.store) != self.holder:  # another driver took it over at the same moment
                raise StoreBusyError(f"{self.store}: another driver took over the stale lease at the same moment")
            self.replaced, self.replaced_reason = current, reason
            break
        if read_holder(self.store) != self.holder:  # a server that ignored the create-only condition
            raise StoreBusyError(f"{self.store}: another driver wrote the lease at the same moment; one driver per "
                                 "store: wait for it to finish (then rerun to resume), or use another --out")
        self._thread = threading.Thread(target=self._beat, name="store-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = read_holder(self.store)
                if current is None or current.run_id != self.holder.run_id:
                    return  # taken over (our heartbeat had gone stale): stop renewing
                self._replace(LeaseHolder(**{**asdict(self.holder), "heartbeat": time.time()}))
            except (RangeDistError, OSError):
                continue  # an object store briefly unreachable: the run's own writes report it; beat again later

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            current = read_holder(self.store)
            if current is not None and current.run_id == self.holder.run_id:
                self.lease.delete()
        except (RangeDistError, OSError):
            # an unreachable object store: the lease stays, and the rerun on this host takes it over (the
            # holder's process is gone); raising here would hide the error that ended the run
            pass

    def report(self) -> dict[str, Any]:
        """What the run report records about the lease."""
        out: dict[str, Any] = {"run_id": self.holder.run_id, "host": self.holder.host, "pid": self.holder.pid}
        if self.replaced is not None:
            out["took_over"] = {**asdict(self.replaced), "reason": self.replaced_reason}
        return out

    def __enter__(self) -> StoreLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
