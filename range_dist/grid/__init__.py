"""Global regular lat/lon grids and their tiles (pure); the grid job itself is :mod:`range_dist.jobs.grid`."""
