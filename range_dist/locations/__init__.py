"""Location sets (ids, sampling on land) and point / per-point embedding files."""
