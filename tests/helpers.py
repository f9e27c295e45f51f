"""Test helpers: straightforward float64 implementations of the published formulas."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
import torch

from range_dist.database.store import RetrievalDatabase
from range_dist.geo.coords import lonlat_to_xyz


def softmax64(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def reference_range(
    location_encoder: torch.nn.Module,
    db: RetrievalDatabase,
    lonlat: npt.NDArray[np.float64],
    betas: Sequence[float],
    variant: str = "range+",
    tau_sem: float | None = None,
    tau_geo: float = 40.0,
) -> npt.NDArray[np.float64]:
    """RANGE / RANGE+ as docs/method.md §Retrieval and §Variants and constants write it, float64, one β at a time."""
    q = location_encoder(torch.from_numpy(lonlat)).double().numpy()
    q_hat = q / np.linalg.norm(q, axis=1, keepdims=True)
    keys = db.keys.astype(np.float64)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    values = db.values.astype(np.float64)
    out = []
    for beta in betas:
        if variant == "range":
            h = softmax64((tau_sem or 15.0) * q_hat @ keys.T) @ values
        else:
            h_sem = softmax64((tau_sem or 12.0) * q_hat @ keys.T) @ values
            h_geo = softmax64(tau_geo * lonlat_to_xyz(lonlat) @ lonlat_to_xyz(db.locations).T) @ values
            h = (1 - beta) * h_geo + beta * h_sem
        out.append(np.concatenate([h, q_hat], axis=1))
    return np.stack(out)


def random_points(n: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Points uniform on the sphere plus the awkward ones: poles and the antimeridian."""
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))], axis=1)
    special = np.array([[0.0, 90.0], [0.0, -90.0], [180.0, 0.0], [-180.0, 0.0], [-180.0, 45.0], [179.9999, -89.9]])
    return np.concatenate([pts, special])


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI on ``argv``: it must exit 2 with exactly one ``error:`` line and no traceback; that line."""
    from range_dist.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
