"""Row-alignment sanity check: do spatially near rows have more similar values than random pairs?

Upstream's build script could pair value rows with the wrong locations. Image embeddings of
neighbouring places are more alike than those of random places, so a correctly aligned database
shows a clear gap between neighbour and random-pair similarity; a shuffled one shows none.

A database that range-dist built (``build-db``: one chip per location id, rows written together)
cannot be misaligned that way; for it a missing gap says the values do not vary with place (e.g.
untrained encoders), and the summary says so instead of warning about alignment. With fewer than
:data:`MIN_ROWS_FOR_VERDICT` rows the z-score says too little to judge either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from range_dist.database.store import RetrievalDatabase
from range_dist.geo.coords import lonlat_to_xyz

EARTH_RADIUS_KM = 6371.0088
#: below this many rows the neighbour-vs-random z-score is too noisy for a verdict
MIN_ROWS_FOR_VERDICT = 30
#: what ``build-db`` writes into ``rows_made_by``: rows aligned by construction
BUILT_ALIGNED_MARKER = "aligned by location_id"


def aligned_by_construction(db: RetrievalDatabase) -> bool:
    """Whether range-dist built the rows itself (one chip per location id), so they cannot be misaligned."""
    made_by = str(db.attrs.get("rows_made_by", ""))
    return BUILT_ALIGNED_MARKER in made_by and "location_id" in db.provenance


@dataclass(frozen=True)
class AlignmentReport:
    """Similarity of values for nearest-neighbour rows vs random pairs (centred cosine)."""

    sampled_rows: int
    neighbour_similarity: float
    random_similarity: float
    median_neighbour_km: float
    z_score: float
    built: bool = False

    @property
    def aligned(self) -> bool:
        """Neighbours clearly more alike than random pairs (z > 3)."""
        return self.z_score > 3.0

    @property
    def verdict(self) -> str:
        """One phrase: the conclusion the numbers allow."""
        if self.aligned:
            return "OK: rows look aligned" + (" (and are aligned by location_id: built by range-dist)"
                                              if self.built else "")
        if self.built:
            return ("rows are aligned by location_id (built by range-dist); the values barely vary with place "
                    "(untrained or location-blind encoders?)")
        if self.sampled_rows < MIN_ROWS_FOR_VERDICT:
            return f"too few rows for a verdict (< {MIN_ROWS_FOR_VERDICT})"
        return "WARNING: no spatial coherence, rows may be misaligned"

    def summary(self) -> str:
        verdict = self.verdict
        return (
            f"row alignment: neighbour similarity {self.neighbour_similarity:.3f} vs random "
            f"{self.random_similarity:.3f} (z = {self.z_score:.1f}, {self.sampled_rows} rows, median "
            f"neighbour distance {self.median_neighbour_km:.0f} km): {verdict}"
        )


def check_row_alignment(db: RetrievalDatabase, sample: int = 2000, seed: int = 0) -> AlignmentReport:
    """Compare centred-cosine similarity of values between nearest neighbours and random pairs.

    Args:
        db: the database.
        sample: rows to test (all when the database is smaller).
        seed: random seed for the sample and the random pairs.

    Returns:
        AlignmentReport; ``aligned`` is False when neighbours are not clearly more alike.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    m = db.rows
    built = aligned_by_construction(db)
    if m < 3:
        return AlignmentReport(m, float("nan"), float("nan"), float("nan"), float("nan"), built)
    rows = rng.choice(m, size=min(sample, m), replace=False)
    xyz = lonlat_to_xyz(db.locations)
    _, idx = cKDTree(xyz).query(xyz[rows], k=2)
    neighbours = idx[:, 1]
    partners = rng.integers(0, m, size=rows.shape[0])
    values = db.values.astype(np.float64)
    values = values - values.mean(axis=0)  # image embeddings share a large common component
    unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    near = np.einsum("ij,ij->i", unit[rows], unit[neighbours])
    rand = np.einsum("ij,ij->i", unit[rows], unit[partners])
    spread = np.sqrt(near.var() / len(near) + rand.var() / len(rand))
    chord = np.linalg.norm(xyz[rows] - xyz[neighbours], axis=1)
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
    return AlignmentReport(
        sampled_rows=int(rows.shape[0]),
        neighbour_similarity=float(near.mean()),
        random_similarity=float(rand.mean()),
        median_neighbour_km=float(np.median(km)),
        z_score=float((near.mean() - rand.mean()) / max(spread, 1e-12)),
        built=built,
    )
