"""The synthetic Sentinel-2 world the STAC tests share: scenes as COGs on a Range HTTP server, their items on
``rustac serve``, locations inside them, and tiny SatCLIP/SatMAE checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from range_dist.encoders.checkpoints import save_satclip_checkpoint
from range_dist.encoders.image import SatMAEConfig, build_satclip_visual, build_satmae, save_satmae_checkpoint
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.jobs.build.config import BuildConfig
from range_dist.locations.sampling import Locations, write_locations
from range_dist.testing.servers import RangeServer, RustacServer
from range_dist.testing.world import SceneSpec, scene_center, write_catalog, write_scene


@dataclass
class World:
    """The scenes, their servers, the locations and the checkpoints.

    Attributes:
        root: folder of everything. cogs: the COGs (served by ``http``).
        collection, items: ``collection.json`` and ``items.ndjson`` (served by ``stac``).
    """

    root: Path
    cogs: Path
    http: RangeServer
    stac: RustacServer
    specs: dict[str, SceneSpec]
    locations: Locations
    key_ckpt: Path
    value_ckpt: Path
    collection: Path
    items: Path

    def close(self) -> None:
        self.stac.stop()
        self.http.stop()


def make_world(root: Path) -> World:
    """Write the scenes (one per failure mode), serve them, and make the checkpoints under ``root``."""
    cogs = root / "cogs"
    cogs.mkdir()
    http = RangeServer(cogs).start()
    step = 20000.0
    specs = {
        "clear": SceneSpec("S2_CLEAR", origin=(500000.0, 5000040.0), cloud_cover=5, baseline="05.09"),
        "clear_cloudy_alt": SceneSpec("S2_CLEAR_CLOUDY", origin=(500000.0, 5000040.0), cloud_cover=60, seed=5),
        "old": SceneSpec("S2_OLD", origin=(500000.0 + step, 5000040.0), cloud_cover=2, baseline="03.01", seed=1),
        "scl_cloud": SceneSpec("S2_SCLCLOUD", origin=(500000.0 + 2 * step, 5000040.0), cloud_cover=10,
                               cloudy_scl=True, seed=2),
        "edge": SceneSpec("S2_EDGE", origin=(500000.0 + 3 * step, 5000040.0), cloud_cover=1, nodata_cols=400, seed=3),
        "edge_fallback": SceneSpec("S2_EDGE_OK", origin=(500000.0 + 3 * step, 5000040.0), cloud_cover=8, seed=4),
        "truncated": SceneSpec("S2_TRUNC", origin=(500000.0 + 4 * step, 5000040.0), cloud_cover=3, seed=6),
        "flaky": SceneSpec("S2_FLAKY", origin=(500000.0 + 5 * step, 5000040.0), cloud_cover=3, seed=7),
    }
    items = [write_scene(s, cogs, http.url) for s in specs.values()]
    for band in ("B04", "B11"):  # a truncated COG: header fine, tile data cut
        path = cogs / "S2_TRUNC" / f"{band}.tif"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    collection, ndjson = write_catalog(items, root)
    stac = RustacServer(collection, ndjson)
    names = ["clear", "old", "scl_cloud", "edge", "truncated", "flaky"]
    lonlat = [scene_center(specs[n]) for n in names] + [(-60.0, -10.0)]  # the last: no scene
    ids = (*(f"loc-{n}" for n in names), "loc-none")
    locations = Locations(ids, np.array(lonlat))
    torch.manual_seed(0)
    location = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=32, embed_dim=256))
    key_ckpt = root / "satclip-resnet18.ckpt"
    save_satclip_checkpoint(location, key_ckpt, visual_state=build_satclip_visual("resnet18").state_dict(),
                            vision_layers="moco_resnet18")
    value_ckpt = root / "satmae-tiny.pth"  # the ViT-L width (1024) with one block, to keep tests fast
    save_satmae_checkpoint(build_satmae(SatMAEConfig(depth=1)), value_ckpt)
    return World(root, cogs, http, stac, specs, locations, key_ckpt, value_ckpt, collection, ndjson)


def build_config(world: World, out: Path | str, **kw: object) -> BuildConfig:
    """A small CPU build of the world's locations into ``out`` (a path or a store URL; ``kw`` overrides,
    e.g. ``stac_url``)."""
    locs = out.with_suffix(".parquet") if isinstance(out, Path) else world.root / "locations.parquet"
    if not locs.exists():
        write_locations(world.locations, locs)
    base = {"locations": locs, "out": out, "stac_url": world.stac.url, "datetime": None, "key_encoder":
            "satclip-resnet18", "key_checkpoint": world.key_ckpt, "value_checkpoint": world.value_ckpt,
            "batch_size": 3, "device": "cpu", "gdal": (("GDAL_HTTP_RETRY_DELAY", "0.05"),)}
    base.update(kw)
    return BuildConfig(**base)  # type: ignore[arg-type]
