"""Executors run the jobs' steps: here (``local``) or on Ray (``ray``). The job says WHAT, the executor HOW.

:mod:`range_dist.executors.ray_executor` is the only module of range_dist that imports ray, and it
is imported only when a Ray executor is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from range_dist.errors import ConfigError

if TYPE_CHECKING:
    from range_dist.executors.local import LocalExecutor
    from range_dist.executors.ray_executor import RayExecutor
    from range_dist.jobs.build.config import BuildConfig
    from range_dist.jobs.build.run import BuildReport
    from range_dist.jobs.grid.config import GridJobConfig
    from range_dist.jobs.grid.report import RunReport

EXECUTORS = ("local", "ray")


def executor_for(name: str, ray_address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``; ``ray_address`` None = $RAY_ADDRESS or a local Ray)."""
    if name == "local":
        from range_dist.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from range_dist.executors.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    raise ConfigError(f"executor={name!r}: use one of {', '.join(EXECUTORS)}")


def build_database(config: BuildConfig, quiet: bool = False) -> BuildReport:
    """Plan and run a database build on the executor its config names (what ``range-dist build-db`` does)."""
    from range_dist.jobs.build.plan import build_plan
    from range_dist.jobs.build.run import run_build

    return run_build(build_plan(config), executor_for(config.executor, config.ray_address), quiet=quiet)


def embed_grid(config: GridJobConfig, executor: str | None = None, log: Any = None) -> RunReport:
    """Load the inputs named in ``config`` (``satclip`` and ``db`` set), plan, and run on ``executor``
    (default: the config's). What ``range-dist embed-grid`` does once the assets are resolved."""
    from range_dist.jobs.grid.plan import build_plan, load_inputs
    from range_dist.jobs.grid.run import run_grid

    plan = build_plan(config, load_inputs(config))
    return run_grid(plan, executor_for(executor or config.executor, config.ray_address), log=log)
