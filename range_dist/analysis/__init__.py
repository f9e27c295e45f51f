"""Analysis of embedding cubes: lazy opening and point sampling, RGB maps, linear probes, tasks.

Modules (import the one you need; heavy dependencies load on first use):

* :mod:`range_dist.analysis.cube`: :func:`open_cube`, :func:`select_beta`, :func:`sample_cube`
  (nearest / bilinear, antimeridian wrap, NaN-aware), numpy / pandas / xarray outputs.
* :mod:`range_dist.analysis.maps`: ICA / PCA RGB projections, PNG with a land outline, GeoTIFF/COG.
* :mod:`range_dist.analysis.probes`: the paper's linear-probe protocol and baseline encoders.
* :mod:`range_dist.analysis.tasks`: land/ocean, Köppen-Geiger, country of cities, checkerboard.
* :mod:`range_dist.cli.analysis`: the ``map``, ``probe`` and ``sample`` subcommands.
"""

from __future__ import annotations
