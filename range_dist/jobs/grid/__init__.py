"""The grid job: a lat/lon grid embedded tile by tile into a Zarr cube at several β levels."""
