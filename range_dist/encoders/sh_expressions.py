"""Generate the published SatCLIP spherical-harmonic expressions with sympy.

The released SatCLIP weights were trained on harmonics that upstream evaluates from sympy-expanded
polynomial text (15 significant digits), not from a recurrence. Reproducing those features bit
for bit means building the same expressions the same way
(``docs/method.md §Published harmonics``). This module is only needed to (re)generate the shipped
table ``data/sh_published.json.gz`` and by the test that checks the table against a fresh
generation; the encoder itself only reads the table.

Run ``python -m range_dist.encoders.sh_expressions --degrees 40`` to regenerate the table.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("data") / "sh_published.json.gz"


def published_expression(degree: int, order: int) -> str:
    """Return upstream's expression text for the real harmonic Y(degree, order).

    Args:
        degree: l >= 0.
        order: m with -l <= m <= l.

    Returns:
        Python expression text in ``theta`` and ``phi`` (radians) using ``cos``, ``sin`` and
        ``**``, exactly as ``str(expr.evalf())`` prints it upstream.
    """
    from sympy import Abs, Symbol, assoc_legendre, cos, factorial, pi, sin, sqrt

    theta = Symbol("theta")
    phi = Symbol("phi")
    l, m = degree, order
    if m == 0:
        # (2l+1)/4 is a Python float before it meets sympy, and pi multiplies instead of
        # dividing: a missing parenthesis upstream that the released weights were trained with.
        expr = sqrt((2 * l + 1) / 4 * pi) * assoc_legendre(l, m, cos(theta))
    else:
        plm = assoc_legendre(l, Abs(m), cos(theta))
        plm_bar = sqrt(((2 * l + 1) / (4 * pi)) * (factorial(l - Abs(m)) / factorial(l + Abs(m)))) * plm
        angular = cos(m * phi) if m > 0 else sin(Abs(m) * phi)
        expr = (-1) ** m * sqrt(2) * plm_bar * angular
    return str(expr.evalf())


def generate_table(degrees: int) -> list[str]:
    """Return the expressions for l = 0..degrees-1, m = -l..l, in feature order ``l*l + l + m``."""
    return [published_expression(l, m) for l in range(degrees) for m in range(-l, l + 1)]


def write_table(degrees: int, path: Path = TABLE_PATH) -> None:
    """Write the expression table as gzipped JSON (deterministic bytes: no timestamp)."""
    import sympy

    payload = {"sympy_version": sympy.__version__, "degrees": degrees, "expressions": generate_table(degrees)}
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(payload, indent=0).encode()
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degrees", type=int, default=40, help="number of Legendre degrees L")
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    args = parser.parse_args()
    write_table(args.degrees, args.out)


if __name__ == "__main__":
    main()
