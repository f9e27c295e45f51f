"""Spherical harmonics: closed forms, scipy, upstream's expression text, poles and the antimeridian."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from range_dist.encoders.sh_compiled import ExpressionProgram, VectorisedProgram
from range_dist.encoders.sh_expressions import TABLE_PATH, published_expression
from range_dist.encoders.spherical_harmonics import _published_program, angles_from_lonlat, spherical_harmonics
from tests.helpers import random_points

POINTS = torch.from_numpy(random_points(200, seed=5))


def _theta_phi(lonlat: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return np.radians(lonlat[:, 1].numpy() + 90), np.radians(lonlat[:, 0].numpy() + 180)


def _scipy_real_harmonic(l: int, m: int, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """SatCLIP's convention from scipy's complex orthonormal harmonics (which carry the CS phase)."""
    y = sph_harm_y(l, abs(m), theta, phi)
    cs = (-1) ** abs(m)  # remove the Condon-Shortley phase
    if m > 0:
        return math.sqrt(2) * cs * y.real
    if m < 0:
        return math.sqrt(2) * cs * y.imag
    return math.pi * y.real  # upstream's pi-scaled m = 0 terms


def test_check_values_of_facts() -> None:
    pts = torch.tensor([[10.0, 20.0], [-120.0, -60.0]], dtype=torch.float64)
    cos_theta = -np.sin(np.radians(pts[:, 1].numpy()))
    for mode in ("published", "exact"):
        y = spherical_harmonics(pts, 2, mode).numpy()  # type: ignore[arg-type]
        np.testing.assert_allclose(y[:, 0], 0.886226925452758, rtol=1e-14)
    exact = spherical_harmonics(pts, 2, "exact").numpy()
    # Y(1,0) = pi * sqrt(3 / (4 pi)) cos(theta) = sqrt(3 pi) / 2 cos(theta) = 1.53499006... cos(theta)
    # (docs/method.md §Spherical harmonics; the facts sheet it was written from printed 1.5349900212,
    # off in the 8th digit.)
    np.testing.assert_allclose(exact[:, 2], math.sqrt(3 * math.pi) / 2 * cos_theta, rtol=1e-14)
    # the published text carries sympy's 15-digit float of sqrt(0.75*pi)
    published = spherical_harmonics(pts, 2, "published").numpy()
    np.testing.assert_allclose(published[:, 2], 1.53499006191973 * cos_theta, rtol=1e-14)


@pytest.mark.parametrize("l", [0, 1, 2, 3, 5, 8, 13, 21, 30, 39, 45])
def test_exact_mode_matches_scipy(l: int) -> None:
    degrees = l + 1
    y = spherical_harmonics(POINTS, degrees, "exact").numpy()
    theta, phi = _theta_phi(POINTS)
    for m in range(-l, l + 1):
        expected = _scipy_real_harmonic(l, m, theta, phi)
        np.testing.assert_allclose(y[:, l * l + l + m], expected, atol=1e-10, err_msg=f"l={l} m={m}")


def test_closed_form_mode_is_upstream_closed_form_convention() -> None:
    y = spherical_harmonics(POINTS, 6, "closed-form").numpy()
    theta, phi = _theta_phi(POINTS)
    for l in range(6):
        for m in range(-l, l + 1):
            base = _scipy_real_harmonic(l, m, theta, phi)
            expected = base / math.pi if m == 0 else (-1) ** abs(m) * base
            np.testing.assert_allclose(y[:, l * l + l + m], expected, atol=1e-12)


def test_published_mode_is_bit_identical_to_upstream_eval() -> None:
    """Upstream evaluates the expression text with torch; ours must give the very same bits."""
    with gzip.open(TABLE_PATH, "rt") as fh:
        table = json.load(fh)["expressions"]
    assert len(table) == 1600
    ours = spherical_harmonics(POINTS, 40, "published")
    phi = torch.deg2rad(POINTS[:, 0] + 180)
    theta = torch.deg2rad(POINTS[:, 1] + 90)
    namespace = {"cos": torch.cos, "sin": torch.sin, "theta": theta, "phi": phi}
    for k, text in enumerate(table):
        value = eval(text, {"__builtins__": {}}, namespace)  # the upstream evaluation
        if isinstance(value, float):
            value = value * torch.ones_like(phi)
        assert torch.equal(ours[:, k], value), f"feature {k}: {text[:60]}"


def test_published_agrees_with_exact_at_low_degree_and_differs_at_high() -> None:
    pub = spherical_harmonics(POINTS, 40, "published").numpy()
    exact = spherical_harmonics(POINTS, 40, "exact").numpy()
    np.testing.assert_allclose(pub[:, :144], exact[:, :144], atol=1e-9)  # l < 12
    assert np.abs(pub - exact).max() > 1e-6  # the documented precision loss of the expanded text


def test_shipped_table_matches_fresh_sympy_generation() -> None:
    with gzip.open(TABLE_PATH, "rt") as fh:
        payload = json.load(fh)
    table = payload["expressions"]
    pairs = [(d, o) for d in range(6) for o in range(-d, d + 1)] + [(17, -4), (25, 0), (39, 39), (39, -7)]
    for l, m in pairs:
        assert published_expression(l, m) == table[l * l + l + m], (l, m)


@pytest.mark.parametrize("mode", ["published", "exact", "closed-form"])
def test_finite_at_poles_and_antimeridian(mode: str) -> None:
    pts = torch.tensor([[0, 90], [0, -90], [180, 0], [-180, 0], [180, 89.999999], [-180, -90]], dtype=torch.float64)
    y = spherical_harmonics(pts, 40, mode)  # type: ignore[arg-type]
    assert y.shape == (6, 1600)
    assert torch.isfinite(y).all()
    if mode != "published":
        # lon = 180 and lon = -180 are the same place
        torch.testing.assert_close(y[2], y[3], atol=1e-12, rtol=0)


def test_batch_layout_does_not_change_published_values_beyond_rounding() -> None:
    full = spherical_harmonics(POINTS, 20, "published")
    parts = torch.cat([spherical_harmonics(POINTS[i : i + 7], 20, "published") for i in range(0, len(POINTS), 7)])
    torch.testing.assert_close(full, parts, rtol=1e-12, atol=1e-9)


def test_exact_mode_on_grid_equals_point_by_point() -> None:
    """The exact mode evaluates latitude and longitude parts on distinct values; nothing may change."""
    lat, lon = np.meshgrid(np.arange(89.5, -90, -7.0), np.arange(-179.5, 180, 9.0), indexing="ij")
    grid = torch.from_numpy(np.stack([lon.ravel(), lat.ravel()], axis=1))
    together = spherical_harmonics(grid, 40, "exact")
    one_by_one = torch.cat([spherical_harmonics(grid[i : i + 1], 40, "exact") for i in range(len(grid))])
    torch.testing.assert_close(together, one_by_one, rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------------------------
# the vectorised published evaluation (sh_compiled) against the per-op one and upstream's eval
# --------------------------------------------------------------------------------------------


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view(torch.int64).numpy()


def _grid(lat_step: float, lon_step: float) -> torch.Tensor:
    """Cell centres of a lat/lon grid including both poles and both sides of the antimeridian."""
    lat, lon = np.meshgrid(np.arange(90.0, -90.01, -lat_step), np.arange(-180.0, 180.01, lon_step), indexing="ij")
    return torch.from_numpy(np.stack([lon.ravel(), lat.ravel()], axis=1))


@pytest.mark.parametrize("n", [64 * 20, 64 * 20 + 13])
def test_vectorised_program_is_bit_identical_to_per_op_on_random_points(n: int) -> None:
    """All 1600 features, several chunks (and a ragged last one), poles and antimeridian included."""
    program = _published_program(40)
    phi, theta = angles_from_lonlat(torch.from_numpy(random_points(n - 6, seed=11)))
    old = program.program.evaluate_per_op(theta, phi)
    for chunk, block in [(256, 64), (4096, None)]:
        new = program.evaluate(theta, phi, chunk=chunk, block=block)
        assert np.array_equal(_bits(new), _bits(old)), (chunk, block)


@pytest.mark.parametrize("lat_step", [15.0, 0.5])
def test_shared_latitude_path_is_bit_identical_to_per_op_and_upstream(lat_step: float) -> None:
    """Grid points share latitudes: that path must give the very same bits as the per-op one."""
    program = _published_program(40)
    assert program._shared  # the shipped table has the shape the latitude sharing needs
    pts = _grid(lat_step, 15.0)[:1280] if lat_step < 1 else _grid(lat_step, 2.0)  # 13 lat x 181 lon
    phi, theta = angles_from_lonlat(pts)
    old = program.program.evaluate_per_op(theta, phi)
    new = program.evaluate(theta, phi, chunk=256, block=64)
    assert np.array_equal(_bits(new), _bits(old))
    # and upstream's eval on a slice of grid points (poles and antimeridian in the first rows)
    head = pts[:128]
    ours = spherical_harmonics(head, 40, "published")
    assert np.array_equal(_bits(ours), _bits(_upstream_eval(head, 40)))


def test_shared_longitude_path_on_a_grid_tile_is_bit_identical_to_per_op() -> None:
    """A grid job's chunk: rows of one tile (few latitudes, few longitudes), the antimeridian included.

    The per-point factors (cos(m*phi), sin(m*phi)) are computed once per distinct longitude there.
    """
    program = _published_program(40)
    assert program._lon_steps is not None  # upstream's per-point factors depend on longitude only
    lat, lon = np.meshgrid(np.arange(89.95, 88.3, -0.1), np.arange(-180.0, -154.4, 0.1), indexing="ij")
    pts = torch.from_numpy(np.stack([lon.ravel(), lat.ravel()], axis=1))  # 17 x 256 cells
    phi, theta = angles_from_lonlat(pts)
    old = program.program.evaluate_per_op(theta, phi)
    for chunk, block in [(4096, None), (1024, 64)]:
        assert np.array_equal(_bits(program.evaluate(theta, phi, chunk=chunk, block=block)), _bits(old)), chunk


def _upstream_eval(lonlat: torch.Tensor, degrees: int) -> torch.Tensor:
    with gzip.open(TABLE_PATH, "rt") as fh:
        table = json.load(fh)["expressions"][: degrees * degrees]
    phi, theta = angles_from_lonlat(lonlat)
    namespace = {"cos": torch.cos, "sin": torch.sin, "theta": theta, "phi": phi}
    cols = [eval(text, {"__builtins__": {}}, namespace) for text in table]  # the upstream evaluation
    return torch.stack([c * torch.ones_like(phi) if isinstance(c, float) else c for c in cols], dim=1)


@pytest.mark.parametrize("degrees", [1, 2, 7])
def test_small_degrees_match_upstream_eval(degrees: int) -> None:
    ours = spherical_harmonics(POINTS, degrees, "published")
    assert np.array_equal(_bits(ours), _bits(_upstream_eval(POINTS, degrees)))


def test_vectorised_program_falls_back_for_unusual_expression_shapes() -> None:
    """Texts outside upstream's shape (nested sums, constants late in a product, negations, division)."""
    texts = [
        "2.5*(cos(theta) - 1.0*(3.0 - sin(phi)))*cos(phi)",
        "cos(theta)*3.0*sin(phi)",
        "-cos(theta)**3 + 0.5",
        "(1.0 - cos(theta)**2)**1.5/7.0",
        "1.25",
        "sin(phi)*(2.0*cos(theta)**2 - 1.0)",
    ]
    program = VectorisedProgram(ExpressionProgram(texts))
    phi, theta = angles_from_lonlat(torch.from_numpy(random_points(130, seed=3)))
    old = program.program.evaluate_per_op(theta, phi)
    assert np.array_equal(_bits(program.evaluate(theta, phi, chunk=64)), _bits(old))
    namespace = {"cos": torch.cos, "sin": torch.sin, "theta": theta, "phi": phi}
    for k, text in enumerate(texts):
        value = eval(text, {"__builtins__": {}}, namespace)
        expected = value * torch.ones_like(phi) if isinstance(value, float) else value
        assert np.array_equal(_bits(old[:, k]), _bits(expected)), text


def test_chunk_must_be_aligned() -> None:
    program = _published_program(3)
    theta = torch.zeros(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="multiple of 64, got 100"):
        program.evaluate(theta, theta, chunk=100)


def test_factorised_features_are_the_evaluated_ones_within_float64_rounding() -> None:
    """A tile's points as latitude part x longitude part (the SIREN's first layer contracts them so):
    the same factors multiplied in another order, so within a few ulp of the published values."""
    program = _published_program(40)
    lat, lon = np.meshgrid(np.arange(89.95, 86.0, -0.1), np.arange(-180.0, -154.4, 0.1), indexing="ij")
    pts = torch.from_numpy(np.stack([lon.ravel(), lat.ravel()], axis=1))  # 40 x 256 cells, pole and antimeridian
    phi, theta = angles_from_lonlat(pts)
    parts = program.factorised(theta, phi)
    assert parts is not None
    assert parts.lat.shape == (40, 1600) and parts.lon.shape == (256, 2 * 40 - 1)  # 1, cos(m*phi), sin(m*phi)
    rebuilt = parts.lat[parts.lat_index] * parts.lon[parts.lon_index][:, parts.group]
    dense = program.evaluate(theta, phi)
    scale = dense.abs().amax(dim=0, keepdim=True)
    assert float(((rebuilt - dense).abs() / scale).max()) < 1e-13


def test_factorised_is_refused_where_it_would_not_pay_or_not_apply() -> None:
    program = _published_program(40)
    phi, theta = angles_from_lonlat(POINTS)  # scattered: a latitude per point
    assert program.factorised(theta, phi) is None
    odd = VectorisedProgram(ExpressionProgram(["sin(phi)*(2.0*cos(theta)**2 - 1.0)", "cos(theta)"]))
    phi, theta = angles_from_lonlat(_grid(15.0, 15.0))
    assert odd.factorised(theta, phi) is None  # a polynomial after a longitude factor: no split
