"""The figures that show RANGE working on the demo (pure: arrays in, numbers out).

* key diversity: the median pairwise cosine of the database keys (random-weight encoders give
  ~0.99999: every chip the same key, every row the same softmax weight);
* variation of the retrieved part ``H_β`` (the first ``value_dim`` features of the cube) across
  the globe: per cell ``||H_c - mean(H)|| / ||H_c||``, its median over cells, per β;
* how much the β levels differ: the Pearson correlation of ``H_0`` and ``H_1`` over cells (each
  feature centred over the cells, then all entries together);
* the land-cover verdict: does the cube at some β beat the SatCLIP-only baseline on the demo
  world's own labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


def median_pairwise_cosine(keys: npt.ArrayLike, max_rows: int = 2000, seed: int = 0) -> float:
    """Median cosine similarity over all pairs of distinct rows (a seeded sample of ``max_rows`` rows).

    Args:
        keys: (M, K) database keys.

    Returns:
        The median over the M (M - 1) / 2 pairs; NaN with fewer than two rows.
    """
    k = np.asarray(keys, dtype=np.float64)
    if len(k) > max_rows:
        k = k[np.sort(np.random.default_rng(seed).choice(len(k), max_rows, replace=False))]
    if len(k) < 2:
        return float("nan")
    unit = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    return float(np.median(cos[np.triu_indices(len(k), 1)]))


def relative_deviation(retrieved: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per cell ``||H_c - mean_c(H)|| / ||H_c||`` of the retrieved part, (C,) over the finite cells.

    Args:
        retrieved: (C, D) retrieved parts of C cells (NaN cells, e.g. ocean of a land-only cube, skipped).
    """
    h = np.asarray(retrieved, dtype=np.float64)
    h = h[np.isfinite(h).all(axis=1)]
    mean = h.mean(axis=0)
    return np.asarray(np.linalg.norm(h - mean, axis=1) / np.maximum(np.linalg.norm(h, axis=1), 1e-12))


def field_correlation(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Pearson correlation of two (C, D) fields: each feature centred over the cells, all entries together."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    x, y = x[keep] - x[keep].mean(axis=0), y[keep] - y[keep].mean(axis=0)
    return float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-300))


@dataclass(frozen=True)
class DemoFigures:
    """What the demo prints to show the method working.

    Attributes:
        key_cosine_median: median pairwise cosine of the database keys.
        deviation_median: β -> median over cells of the retrieved part's relative deviation from its global mean.
        beta_correlation: correlation of the retrieved parts at the smallest and the largest β.
        betas: the cube's β levels.
    """

    key_cosine_median: float
    deviation_median: dict[float, float]
    beta_correlation: float
    betas: tuple[float, ...]

    def lines(self) -> list[str]:
        lo, hi = min(self.betas), max(self.betas)
        devs = ", ".join(f"β={b:g}: {100 * v:.1f} %" for b, v in sorted(self.deviation_median.items()))
        return [
            f"key diversity:      median pairwise key cosine {self.key_cosine_median:.3f} (random encoders: ~0.99999)",
            f"retrieved part:     median per-cell deviation from its global mean, relative to its norm: {devs}",
            f"β levels differ:    correlation of the retrieved parts at β={lo:g} and β={hi:g}: "
            f"{self.beta_correlation:.3f}",
        ]


def cube_figures(keys: npt.ArrayLike, embedding: npt.ArrayLike, betas: Sequence[float], value_dim: int) -> DemoFigures:
    """The figures from the database keys and the cube's embedding array.

    Args:
        keys: (M, K) database keys.
        embedding: (B, lat, lon, F) cube values (F = value_dim + key dim).
        betas: the B β levels.
        value_dim: width of the retrieved part (the first features).
    """
    emb = np.asarray(embedding)
    cells = emb.reshape(emb.shape[0], -1, emb.shape[-1])[:, :, :value_dim].astype(np.float64)
    betas = tuple(float(b) for b in betas)
    deviation = {b: float(np.median(relative_deviation(cells[i]))) for i, b in enumerate(betas)}
    lo, hi = int(np.argmin(betas)), int(np.argmax(betas))
    return DemoFigures(median_pairwise_cosine(keys), deviation, field_correlation(cells[lo], cells[hi]), betas)


@dataclass(frozen=True)
class LandCoverVerdict:
    """The cube's best β against the SatCLIP-only baseline on the demo world's land cover."""

    task: str
    satclip: float
    best_encoder: str
    best: float
    majority: float

    @property
    def beats(self) -> bool:
        return self.best > self.satclip

    def line(self) -> str:
        verb = "beats" if self.beats else "does NOT beat"
        return (f"land cover:         {self.best_encoder} {100 * self.best:.1f} % {verb} the SatCLIP-only baseline "
                f"{100 * self.satclip:.1f} % (majority class {100 * self.majority:.1f} %) on the demo world's labels")


def landcover_verdict(results: Sequence[Any], task: str, cube_prefix: str) -> LandCoverVerdict:
    """Compare the cube encoders (names starting ``cube_prefix``) with ``satclip`` on ``task``.

    Args:
        results: :class:`~range_dist.analysis.probes.ProbeResult` rows.
    """
    rows = [r for r in results if r.task == task]
    satclip = next(r for r in rows if r.encoder == "satclip")
    best = max((r for r in rows if r.encoder.startswith(cube_prefix)), key=lambda r: r.score)
    return LandCoverVerdict(task, satclip.score, best.encoder, best.score, satclip.majority)
