"""The settings every command shares, parsed and validated here and nowhere else.

β levels, variant, retrieval mode and tolerance, matrix-product precision, bbox and device each
have one parser: the configs (:mod:`range_dist.jobs`), the CLI and the library call these, so a
value means the same thing and fails with the same message wherever it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from range_dist.errors import ConfigError
from range_dist.util.stores import StoreLocation

if TYPE_CHECKING:
    import torch

#: RANGE variants (their temperatures are in :data:`range_dist.retrieval.engine.VARIANTS`).
VARIANTS = ("range+", "range")
#: Retrieval modes: ``exact`` (the published formula) or ``fast`` (approximations with a measured error).
MODES = ("exact", "fast")
#: Matrix-product precision on CUDA devices (a CPU always computes in float32).
PRECISIONS = ("fp32", "tf32", "bf16")

#: (west, south, east, north) in degrees.
BBox = tuple[float, float, float, float]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)\Z")  # ASCII digits: torch rejects others with a RuntimeError


def _numbers(value: Any, what: str, example: str) -> tuple[float, ...]:
    parts = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(float(p) for p in parts if not (isinstance(p, str) and not p.strip()))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}={value!r}: expected comma-separated numbers, e.g. {example}") from exc


def parse_betas(value: str | Sequence[float]) -> tuple[float, ...]:
    """β levels from ``"0,0.5,1"`` or a sequence: each in [0, 1], at least one, no repeats.

    Raises:
        ConfigError: not numbers, empty, outside [0, 1], or repeated.
    """
    betas = _numbers(value, "betas", "0,0.5,1")
    if not betas:
        raise ConfigError("betas is empty; give at least one β in [0, 1], e.g. 0.5")
    bad = [b for b in betas if not 0.0 <= b <= 1.0]
    if bad:
        raise ConfigError(f"betas={value!r}: {bad[0]} is outside [0, 1]")
    if len(set(betas)) != len(betas):
        raise ConfigError(f"betas={value!r}: a β level is repeated")
    return betas


def parse_variant(value: str) -> str:
    """``range+`` or ``range``."""
    if value not in VARIANTS:
        raise ConfigError(f"variant={value!r}: use one of {', '.join(VARIANTS)}")
    return value


def parse_mode(value: str) -> str:
    """``exact`` or ``fast``."""
    if value not in MODES:
        raise ConfigError(f"mode={value!r}: use one of {', '.join(MODES)}")
    return value


def check_tolerance(mode: str, tolerance: float | None) -> float | None:
    """The fast mode's tolerance, required in (0, 1) for ``fast`` and ignored (None) for ``exact``."""
    if parse_mode(mode) == "exact":
        return None
    if tolerance is None or not 0.0 < float(tolerance) < 1.0:
        raise ConfigError(f"mode=fast needs a tolerance in (0, 1), got {tolerance!r}; "
                          "e.g. --tolerance 1e-3 (largest relative error per point)")
    return float(tolerance)


def parse_precision(value: str) -> str:
    """``fp32``, ``tf32`` or ``bf16`` (GPU matrix products)."""
    if value not in PRECISIONS:
        raise ConfigError(f"precision={value!r}: use one of {', '.join(PRECISIONS)} (GPU only; CPUs use fp32)")
    return value


def parse_bbox(value: str | Sequence[float]) -> BBox:
    """``"W,S,E,N"`` or four numbers: degrees, west < east in [-180, 180], south < north in [-90, 90]."""
    bbox = _numbers(value, "bbox", "5,45,11,48 (west,south,east,north)")
    if len(bbox) != 4:
        raise ConfigError(f"bbox={value!r}: expected four numbers west,south,east,north, e.g. 5,45,11,48")
    west, south, east, north = bbox
    if not (-180.0 <= west < east <= 180.0 and -90.0 <= south < north <= 90.0):
        raise ConfigError(f"bbox={value!r}: expected -180 <= west < east <= 180 and -90 <= south < north <= 90 "
                          "degrees (an antimeridian-crossing box is two runs)")
    return west, south, east, north


def parse_device(value: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (syntax only; :func:`resolve_device` checks it exists)."""
    text = str(value).strip()
    if not _DEVICE.match(text):
        raise ConfigError(f"device={value!r}: use auto, cpu, cuda or cuda:N")
    return text


def resolve_device(value: str | torch.device) -> torch.device:
    """The torch device for ``value`` on this machine (``auto``: the first GPU if any, else the CPU).

    Raises:
        ConfigError: bad syntax, or a CUDA device asked for that this machine does not have.
    """
    import torch  # here, not at the top: the CLI parses configs without loading torch

    if isinstance(value, torch.device):
        value = str(value)
    text = parse_device(value)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):  # checked before torch.device(), which fails on an index beyond int64
        if not torch.cuda.is_available():
            raise ConfigError(f"device {text!r} asked for, but no CUDA GPU is available here; use cpu or auto")
        index = text.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s) exist here")
    return torch.device(text)


def parse_store(value: Any) -> Path | str:
    """A store setting: a local Path, or object-store URL text (``s3://``, ``gs://``, ``az://``).

    A URL stays text: ``Path()`` would drop its ``//`` (``s3:/bucket/...``), a local folder. Other URL
    schemes are refused (:meth:`StoreLocation.parse`).
    """
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(value)
    return StoreLocation.parse(value, "out").as_arg()


def parse_storage_options(value: Any) -> tuple[tuple[str, str], ...]:
    """``storage_options``: a mapping of fsspec option names to text, numbers or true/false.

    The messages name the option, never its value (the values may be secrets).
    """
    if not isinstance(value, Mapping):
        raise ConfigError("storage_options must be a mapping of option names to values, e.g. "
                          "{endpoint_url: 'http://127.0.0.1:8333'}")
    pairs = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError("storage_options: option names must be text")
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, str | int | float):
            raise ConfigError(f"storage_options: the value of {name!r} must be text, a number or true/false "
                              "(nested options are not supported)")
        pairs[name] = str(item)
    return tuple(sorted(pairs.items()))
