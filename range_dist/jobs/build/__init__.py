"""The database build: locations -> STAC scenes -> chips -> (key, value) rows in a Zarr database."""
