"""Settings of ``range-dist build-db``, declared once: YAML keys and flags both come from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from range_dist.chips.radiometry import RADIOMETRY_MODES
from range_dist.config.schema import option
from range_dist.config.values import parse_device, parse_storage_options, parse_store
from range_dist.errors import ConfigError
from range_dist.stac.presets import PRESETS
from range_dist.stac.search import SearchConfig
from range_dist.util.stores import StoreLocation, register_storage_options


@dataclass(frozen=True)
class BuildConfig:
    """Everything a database build needs (YAML keys = field names; flags override the YAML)."""

    locations: Path = option(help="CSV/Parquet of location_id, lon, lat (range-dist sample-locations writes one)")
    out: Path | str = option(parse=parse_store,
                             help="the Zarr database to create or resume (.zarr): a local path, or s3://, gs://, "
                                  "az:// (credentials from the environment, e.g. AWS_ACCESS_KEY_ID, "
                                  "AWS_ENDPOINT_URL)")
    storage_options: tuple[tuple[str, str], ...] = option(
        (), parse=parse_storage_options, cli=False,
        help="YAML only (a flag would show secrets in the process list): fsspec options of an object-store --out, "
             "e.g. {endpoint_url: http://host:8333, region: eu-west-1}; never stored or printed")
    stac_url: str | None = option(None, help="STAC API root (default: from --preset)")
    preset: Literal["earth-search", "planetary-computer"] | None = option(
        None, help="a known STAC API: its URL, collection and asset signing")
    collection: str = option("sentinel-2-l2a", help="STAC collection id")
    datetime: str | None = option("2021-01-01/2023-05-17", help="START/END acquisition interval")
    max_cloud: float = option(20.0, help="maximum cloud cover, percent: the scene's eo:cloud_cover and the chip's SCL")
    max_nodata: float = option(0.10, help="maximum nodata fraction of a chip (0..1)")
    chip_size: int = option(256, help="chip side in 10 m pixels (the encoders need >= 224)")
    radiometry: Literal["faithful", "harmonised"] = option(
        "faithful", help="faithful (DN/10000, as published) or harmonised (offset by processing baseline)")
    key_encoder: str = option("satclip-vit16", help="SatCLIP image encoder: satclip-vit16, satclip-resnet18/50")
    key_checkpoint: Path | None = option(None, help="SatCLIP Lightning .ckpt (model.visual.*)")
    value_encoder: str = option("satmae-vitl16-fmow-rgb", help="SatMAE encoder name")
    value_checkpoint: Path | None = option(None, help="SatMAE .pth or .safetensors")
    trust_checkpoint: bool = option(False, help="allow key/value checkpoints that need full pickle loading, which "
                                                "can run code: only for files whose origin you know")
    candidates: int = option(3, help="scenes tried per location")
    max_items: int = option(50, help="items fetched per STAC search")
    server_filter: Literal["auto", "client"] = option(
        "auto", help="auto: filter cloud cover on the server when the API supports it; client: always here")
    batch_size: int = option(16, help="locations per work unit (one append per batch)")
    executor: Literal["local", "ray"] = option("local", help="local (threads in this process) or ray")
    ray_address: str | None = option(None, help="Ray cluster to join (default: $RAY_ADDRESS or a local Ray)")
    num_readers: int = option(2, help="concurrent chip readers (threads locally, tasks on Ray)")
    device: str = option("auto", parse=parse_device, help="encoder device: auto, cpu, cuda, cuda:N")
    read_retries: int = option(2, help="attempts per chip read on HTTP errors (each with GDAL's own retries)")
    gdal: tuple[tuple[str, str], ...] = option((), flag="--gdal", metavar="NAME=VALUE",
                                               help="extra GDAL setting (repeatable)")
    overwrite: bool = option(False, help="replace an existing database instead of resuming it")
    takeover: bool = option(False, help="take over the lease of an earlier run whose heartbeat is stale (a driver "
                                        "that died on another host); a live driver's lease is never taken over")
    limit: int | None = option(None, help="only the first N locations")
    search_group_deg: float | None = option(
        None, help="search once per cell of this size (degrees) instead of once per location")

    def __repr__(self) -> str:
        # the dataclass repr would show storage_options' values, which may be secrets
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["storage_options"] = tuple((name, "***") for name, _ in self.storage_options)
        return f"BuildConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __post_init__(self) -> None:
        # Library callers construct the dataclass directly: the same parsers as the YAML and flags.
        object.__setattr__(self, "out", parse_store(self.out))
        if isinstance(self.storage_options, Mapping):
            object.__setattr__(self, "storage_options", parse_storage_options(self.storage_options))
        if self.storage_options:  # for this process, per bucket (see range_dist.util.stores); never stored
            register_storage_options(self.out, dict(self.storage_options))
        if self.radiometry not in RADIOMETRY_MODES:
            raise ConfigError(f"radiometry {self.radiometry!r}: expected one of {RADIOMETRY_MODES}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"preset {self.preset!r}: expected one of {sorted(PRESETS)}")
        if self.stac_url is None and self.preset is None:
            raise ConfigError("give --stac-url or --preset (earth-search, planetary-computer)")
        if not 0 <= self.max_cloud <= 100:
            raise ConfigError(f"max_cloud {self.max_cloud}: a percentage in [0, 100]")
        if not 0 <= self.max_nodata <= 1:
            raise ConfigError(f"max_nodata {self.max_nodata}: a fraction in [0, 1]")
        if self.chip_size < 224:
            raise ConfigError(f"chip_size {self.chip_size}: the encoders need at least 224 px")
        for name in ("batch_size", "num_readers", "candidates", "max_items", "read_retries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: expected >= 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit={self.limit}: expected >= 1, or unset for all locations")
        if not StoreLocation.parse(self.out).name.endswith(".zarr"):
            raise ConfigError(f"out={self.out}: the database store must end in .zarr")
        if self.search_group_deg is not None and not 0 < self.search_group_deg <= 10:
            raise ConfigError(f"search_group_deg {self.search_group_deg}: a cell size in (0, 10] degrees, or unset")

    def search_config(self) -> SearchConfig:
        """The STAC search settings (a preset fills in what is not given)."""
        preset = PRESETS[self.preset] if self.preset else None
        return SearchConfig(url=self.stac_url or (preset.url if preset else ""),
                            collection=self.collection if self.collection else (preset.collection if preset else ""),
                            datetime=self.datetime, max_cloud=self.max_cloud, max_items=self.max_items,
                            candidates=self.candidates, sign=bool(preset and preset.sign),
                            server_filter=self.server_filter)
