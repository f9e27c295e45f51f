"""Geographic foundations (pure numpy): coordinates, the land mask, sampling on the sphere."""
