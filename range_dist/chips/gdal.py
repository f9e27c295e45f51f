"""GDAL settings for reading COGs over HTTP (passed explicitly to ``rasterio.Env``)."""

from __future__ import annotations

from collections.abc import Mapping

#: Defaults for COG range reads: no directory listing, merged ranges, retries on throttling.
COG_SETTINGS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "VSI_CACHE": "TRUE",
    "GDAL_CACHEMAX": "256",
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
    "GDAL_HTTP_TIMEOUT": "60",
}


def gdal_settings(overrides: Mapping[str, str] | None = None) -> dict[str, str | int]:
    """:data:`COG_SETTINGS` updated with ``overrides`` (strings; ``GDAL_CACHEMAX`` as MB int for rasterio)."""
    out: dict[str, str | int] = dict(COG_SETTINGS)
    out.update({str(k): str(v) for k, v in (overrides or {}).items()})
    out["GDAL_CACHEMAX"] = int(out["GDAL_CACHEMAX"])
    return out
