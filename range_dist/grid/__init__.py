"""Global lat/lon grids, their tiling, and the embed-grid job."""
