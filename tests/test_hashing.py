"""BackgroundSha256: the digest of a stream hashed in a thread beside its reading."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from range_dist.util.hashing import QUEUED_PIECES, BackgroundSha256


def test_the_digest_is_the_streams_however_it_is_cut() -> None:
    rows = np.arange(3_000_000, dtype=np.float32).reshape(3000, 1000)
    view = rows[:, :-1]  # not contiguous: hashed through row-block copies
    with BackgroundSha256() as digest:
        digest.update(b"head")
        digest.update_array(view)
    expected = hashlib.sha256(b"head" + str(view.shape).encode() + np.ascontiguousarray(view).tobytes())
    assert digest.hexdigest() == expected.hexdigest()
    with pytest.raises(ValueError, match="after close"):
        digest.update(b"more")


def test_a_failed_piece_is_raised_at_the_digest_and_never_blocks_the_reader() -> None:
    digest = BackgroundSha256()
    digest.update(12345)  # type: ignore[arg-type]  # not bytes: hashlib refuses it in the thread
    for _ in range(4 * QUEUED_PIECES):  # more than the queue holds: the thread keeps taking pieces
        digest.update(b"piece")
    with pytest.raises(TypeError):
        digest.hexdigest()
    digest.close()  # closing again (as a with block's exit would) does not raise
