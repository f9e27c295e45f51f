"""Real spherical-harmonic features of SatCLIP's location encoder (pure torch, float64).

Three ways to compute the same L² features, index ``l*l + l + m`` for l < L, -l <= m <= l:

* ``published`` (default): reproduces upstream SatCLIP bit for bit by evaluating the
  sympy-expanded expression text it was trained on (``data/sh_published.json.gz``). That text loses
  precision for high degrees (up to ~0.6 near the poles at l = 39), but the released weights
  expect exactly those values.
* ``exact``: the same conventions (no Condon-Shortley phase, m = 0 terms scaled by pi) from a
  stable normalised recurrence: accurate and finite everywhere, for any L.
* ``closed-form``: upstream's alternative ``harmonics_calculation="closed-form"`` convention
  (Condon-Shortley phase, orthonormal m = 0 terms), for checkpoints trained with it.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from typing import Literal

import torch
from torch import nn

from range_dist.encoders.sh_compiled import ExpressionProgram, Factorised, VectorisedProgram
from range_dist.errors import ConfigError

HarmonicsMode = Literal["published", "exact", "closed-form"]
HARMONICS_MODES: tuple[str, ...] = ("published", "exact", "closed-form")


def angles_from_lonlat(lonlat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's angles: phi = radians(lon + 180), theta = radians(lat + 90) (from the south pole)."""
    return torch.deg2rad(lonlat[:, 0] + 180), torch.deg2rad(lonlat[:, 1] + 90)


# --------------------------------------------------------------------------------------------
# published mode: upstream's expression text, compiled once per L (sh_compiled)
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _shipped_table() -> list[str]:
    from range_dist.encoders.sh_expressions import TABLE_PATH

    with gzip.open(TABLE_PATH, "rt") as fh:
        return list(json.load(fh)["expressions"])


@functools.lru_cache(maxsize=8)
def _published_program(degrees: int) -> VectorisedProgram:
    table = _shipped_table()
    count = degrees * degrees
    if count > len(table):
        # Degrees beyond the shipped table are generated once per process (sympy, slow).
        from range_dist.encoders.sh_expressions import generate_table

        table = generate_table(degrees)
    return VectorisedProgram(ExpressionProgram(table[:count]))


# --------------------------------------------------------------------------------------------
# exact mode: stable normalised recurrence
# --------------------------------------------------------------------------------------------


def _normalised_legendre(x: torch.Tensor, s: torch.Tensor, degrees: int) -> dict[tuple[int, int], torch.Tensor]:
    """K(l,m)·P(l,m)(x) without Condon-Shortley phase for 0 <= m <= l < degrees.

    ``s`` is sqrt(1 - x²) supplied by the caller (cos(lat), exact at the poles). The three-term
    recurrence on the normalised functions is stable to very high degree, unlike expanded
    polynomials.
    """
    out: dict[tuple[int, int], torch.Tensor] = {}
    pmm = torch.full_like(x, math.sqrt(1.0 / (4.0 * math.pi)))
    for m in range(degrees):
        if m > 0:
            pmm = math.sqrt((2 * m + 1) / (2 * m)) * s * pmm
        out[(m, m)] = pmm
        if m + 1 < degrees:
            out[(m + 1, m)] = math.sqrt(2 * m + 3) * x * pmm
        for l in range(m + 2, degrees):
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            out[(l, m)] = a * (x * out[(l - 1, m)] - b * out[(l - 2, m)])
    return out


def _recurrence_harmonics(lonlat: torch.Tensor, degrees: int, upstream_closed_form: bool) -> torch.Tensor:
    # The latitude part (Legendre functions) and the longitude part (cos/sin(m·phi)) are computed
    # on the distinct latitudes and longitudes, then multiplied per point: on grids this is far
    # cheaper, and for scattered points it costs the same as the direct product.
    unique_lat, inverse_lat = torch.unique(lonlat[:, 1], return_inverse=True)
    unique_lon, inverse_lon = torch.unique(lonlat[:, 0], return_inverse=True)
    lat = torch.deg2rad(unique_lat)
    phi = torch.deg2rad(unique_lon + 180)
    x = -torch.sin(lat)  # cos(theta), theta from the south pole
    s = torch.cos(lat).clamp_min(0.0)  # sin(theta) >= 0
    plm = _normalised_legendre(x, s, degrees)
    latitude_part: list[torch.Tensor] = []
    longitude_part: list[torch.Tensor] = []
    ones = torch.ones_like(phi)
    for l in range(degrees):
        for m in range(-l, l + 1):
            p = plm[(l, abs(m))]
            if m == 0:
                latitude_part.append(p if upstream_closed_form else math.pi * p)
                longitude_part.append(ones)
                continue
            sign = -1.0 if (upstream_closed_form and abs(m) % 2 == 1) else 1.0
            latitude_part.append((sign * math.sqrt(2.0)) * p)
            longitude_part.append(torch.cos(m * phi) if m > 0 else torch.sin(-m * phi))
    return torch.stack(latitude_part, dim=-1)[inverse_lat] * torch.stack(longitude_part, dim=-1)[inverse_lon]


# --------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------


def spherical_harmonics(lonlat: torch.Tensor, degrees: int, mode: HarmonicsMode = "published") -> torch.Tensor:
    """SatCLIP spherical-harmonic features.

    Args:
        lonlat: (N, 2) float64 tensor of (lon, lat) degrees.
        degrees: L, the number of Legendre degrees (features = L²).
        mode: ``published``, ``exact`` or ``closed-form`` (see the module docstring).

    Returns:
        (N, L²) float64 tensor.
    """
    if mode not in HARMONICS_MODES:
        raise ConfigError(f"harmonics mode {mode!r} is unknown; use one of {', '.join(HARMONICS_MODES)}")
    if degrees < 1:
        raise ConfigError(f"legendre_polys must be >= 1, got {degrees}")
    lonlat = lonlat.to(torch.float64)
    if mode == "published":
        phi, theta = angles_from_lonlat(lonlat)
        return _published_program(degrees).evaluate(theta, phi)
    return _recurrence_harmonics(lonlat, degrees, upstream_closed_form=(mode == "closed-form"))


class SphericalHarmonics(nn.Module):
    """Spherical-harmonic positional encoding, (N, 2) lon/lat degrees -> (N, L²) float64."""

    def __init__(self, legendre_polys: int, mode: HarmonicsMode = "published") -> None:
        super().__init__()
        if mode not in HARMONICS_MODES:
            raise ConfigError(f"harmonics mode {mode!r} is unknown; use one of {', '.join(HARMONICS_MODES)}")
        self.legendre_polys = int(legendre_polys)
        self.mode: HarmonicsMode = mode
        self.embedding_dim = self.legendre_polys**2

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(lonlat, self.legendre_polys, self.mode)

    def factorised(self, lonlat: torch.Tensor) -> Factorised | None:
        """The features as a latitude part times a longitude part (published mode, points sharing
        latitudes: :meth:`~range_dist.encoders.sh_compiled.VectorisedProgram.factorised`), else None."""
        if self.mode != "published" or self.legendre_polys < 2:
            return None
        phi, theta = angles_from_lonlat(lonlat.to(torch.float64))
        return _published_program(self.legendre_polys).factorised(theta, phi)

    def extra_repr(self) -> str:
        return f"legendre_polys={self.legendre_polys}, mode={self.mode!r}"
