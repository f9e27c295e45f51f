"""Executors run a grid plan's tiles: in this process (``local``) or on Ray actors (``ray``).

Only :mod:`range_dist.executors.ray_executor` imports ray.
"""
