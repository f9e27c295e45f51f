"""SHA-256 of files (asset and checkpoint provenance) and of byte streams hashed beside their reading."""

from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in ``block``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


#: Pieces waiting for the hashing thread at most: bounds the memory they hold (4 MiB pieces: 32 MiB).
QUEUED_PIECES = 8
#: Bytes per piece when an array is fed (:meth:`BackgroundSha256.update_array`, whole rows).
ARRAY_PIECE_BYTES = 1 << 22


class BackgroundSha256:
    """SHA-256 of the pieces fed to it, hashed in a background thread while the caller goes on.

    hashlib releases the GIL while it hashes a piece (of 2 KiB or more), so a reader that copies
    and checks what it reads (zip CRC-32, numpy copies: both release it too) and this thread run on
    two cores side by side. Reading a 100k-row database (.npz, 490 MB of rows) and then hashing its
    rows took 0.79-0.99 + 0.55-0.62 s on the 2-core benchmark VM; opened (read and validated) and hashed
    together 0.73-0.75 s.
    One stream in order: the digest is the one of the pieces' concatenation, however they are cut.

    Use it as a context manager (the thread is stopped on the way out, also after an error); the
    digest is :meth:`hexdigest`, which waits for the pieces fed so far.
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._pieces: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_PIECES)
        self._done: str | None = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._hash, name="range-dist-sha256", daemon=True)
        self._thread.start()  # last: the thread reads the state above

    def _hash(self) -> None:
        while (piece := self._pieces.get()) is not None:
            if self._failed is not None:
                continue  # keep taking pieces: a full queue must never block the reader
            try:
                self._digest.update(piece)
            except BaseException as exc:  # raised to the caller by hexdigest()
                self._failed = exc

    def update(self, piece: bytes | memoryview) -> None:
        """Hash ``piece`` next (it must not change until hashed: pass bytes, or memory nothing writes)."""
        if not self._thread.is_alive():
            raise ValueError("BackgroundSha256: update() after close() or hexdigest()")
        self._pieces.put(piece)

    def update_array(self, array: npt.NDArray[Any]) -> None:
        """Hash ``str(array.shape)`` and then the array's bytes in C order, in row blocks (no full copy)."""
        self.update(str(array.shape).encode())
        rows = max(1, ARRAY_PIECE_BYTES // max(1, array[:1].nbytes))
        for start in range(0, len(array), rows):
            # a copy only of a block that is not contiguous (the values' view of their ones-column buffer)
            self.update(np.ascontiguousarray(array[start : start + rows]).view(np.uint8).data)

    def hexdigest(self) -> str:
        """The digest of everything fed (waits for the thread)."""
        self.close()
        if self._failed is not None:
            raise self._failed
        if self._done is None:
            self._done = self._digest.hexdigest()
        return self._done

    def close(self) -> None:
        """Stop the thread (the pieces still queued are hashed first); the digest stays available."""
        if self._thread.is_alive():
            self._pieces.put(None)
            self._thread.join()

    def __enter__(self) -> BackgroundSha256:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
