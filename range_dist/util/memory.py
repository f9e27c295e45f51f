"""Process-wide memory setting of range_dist's commands and Ray workers: numpy without huge pages.

numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every array of
4 MiB or more. A run's large arrays (the database's values, 400 MB at 100k rows; a 0.1° tile's block,
500 MB; the cube writer's buffers) are mostly touched once or streamed, where huge pages save next to
nothing, while a fresh process's first touch of them cost 0.6-2.3 s per 410 MB with the hint and
0.15-0.2 s without on the 2-core VMs of the README's figures. There ``range-dist embed-grid`` in fresh
processes took, without the hint against with it (medians): fast 0.1° tile 18.4 s against 22.5 s,
fast 0.25° 15.6 s against 16.6 s, exact 0.25° 34.6 s against 37.8 s; the exact 0.1° tile was unchanged.

numpy reads its setting from ``NUMPY_MADVISE_HUGEPAGE`` once, at import: set here it still reaches the
processes this one starts (a local Ray cluster), and numpy's setter applies it to this process, where
numpy is already imported. A user's own ``NUMPY_MADVISE_HUGEPAGE`` is left as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: numpy's environment variable for its huge-page hint ("0": off, "1": on).
HUGEPAGE_VARIABLE = "NUMPY_MADVISE_HUGEPAGE"


def numpy_without_huge_pages() -> bool:
    """Turn numpy's huge-page hint off in this process and the processes it starts, unless the user set it.

    Returns:
        Whether the hint is off now (False: the user's ``NUMPY_MADVISE_HUGEPAGE`` keeps it on, or this
        numpy has no setter).
    """
    chosen = os.environ.get(HUGEPAGE_VARIABLE)
    if chosen is not None:
        return chosen.strip() == "0"
    os.environ[HUGEPAGE_VARIABLE] = "0"
    setter = _hugepage_setter()
    if setter is None:
        return False
    setter(False)
    return True


def numpy_huge_pages_enabled() -> bool:
    """Whether numpy currently asks for huge pages for its large arrays in this process."""
    setter = _hugepage_setter()
    if setter is None:
        return False
    enabled = bool(setter(True))  # the setter returns the previous value: put it back
    setter(enabled)
    return enabled


def _hugepage_setter() -> Callable[[bool], bool] | None:
    """numpy's setter of the value it read from the variable (private, since numpy 1.20; numpy 2 moved it)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return None
    return _set_madvise_hugepage  # type: ignore[no-any-return]
