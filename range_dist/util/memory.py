"""Process-wide memory setting of range_dist's commands and Ray workers: numpy without huge pages.

numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every array of
4 MiB or more. A run's large arrays (the database's values, 400 MB at 100k rows; a 0.1° tile's block,
500 MB; the cube writer's buffers) are mostly touched once or streamed, where huge pages save next to
nothing, while their first touch cost 4x more on the 2-core VMs of the README's figures (a fresh
410 MB array: 0.6-0.7 s against 0.15 s). There, without the hint, the exact 0.25° run took 28.9 s
instead of 34.3 s and the fast one 12.2 s instead of 14.9 s (medians of 3,
``benchmarks/grid_job.py --only 1 --repeat 3`` with ``NUMPY_MADVISE_HUGEPAGE`` 0 and 1).

numpy reads its setting from ``NUMPY_MADVISE_HUGEPAGE`` once, at import: set here it still reaches the
processes this one starts (a local Ray cluster), and numpy's setter applies it to this process, where
numpy is already imported. A user's own ``NUMPY_MADVISE_HUGEPAGE`` is left as it is.
"""

from __future__ import annotations

import os

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
    try:  # numpy's own setter of the variable's value (private, in numpy since 1.20; numpy 2 moved it)
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return False
    _set_madvise_hugepage(False)
    return True


def numpy_huge_pages_enabled() -> bool:
    """Whether numpy currently asks for huge pages for its large arrays in this process."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:
        from numpy.core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined,no-redef]
    enabled = bool(_set_madvise_hugepage(True))  # the setter returns the previous value: put it back
    _set_madvise_hugepage(enabled)
    return enabled
