"""Benchmark of the database build on local servers: chips/s, bytes read per chip vs the bytes of
the COG tiles covering the window, and encoder throughput.

    python benchmarks/build_db.py [--chips 12] [--full-satmae]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from range_dist.chips.read import read_chip
from range_dist.encoders.image import (
    SatCLIPImageEncoder,
    SatMAEConfig,
    SatMAEEncoder,
    build_satclip_visual,
    build_satmae,
    get_spec,
)
from range_dist.stac.scenes import scene_from_item
from range_dist.testing.servers import RangeServer
from range_dist.testing.world import SceneSpec, scene_center, write_scene


def covering_tile_bytes(path: Path, bounds: tuple[float, float, float, float]) -> int:
    """Compressed bytes of the full-resolution tiles of ``path`` that intersect ``bounds``."""
    import rasterio

    with rasterio.open(path) as ds:
        bw, bh = ds.block_shapes[0]
        left, bottom, right, top = bounds
        c0, r0 = ~ds.transform * (left, top)
        c1, r1 = ~ds.transform * (right, bottom)
        total = 0
        for r in range(int(r0) // bh, (int(np.ceil(r1)) - 1) // bh + 1):
            for c in range(int(c0) // bw, (int(np.ceil(c1)) - 1) // bw + 1):
                size = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)
                total += int(size or 0)
        return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chips", type=int, default=12)
    parser.add_argument("--full-satmae", action="store_true", help="time the real ViT-L/16 (slow on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp())
    server = RangeServer(root).start()
    spec = SceneSpec("S2_BENCH", size10=2052, blocksize=512)  # ~20 km scene, 512 px tiles as Sentinel-2 COGs
    scene = scene_from_item(write_scene(spec, root, server.url))
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-7000, 7000, (args.chips, 2))
    served, covering = [], []
    start = time.perf_counter()
    chips = []
    for dx, dy in offsets:
        server.reset_counters()
        chip = read_chip(scene, *scene_center(spec, dx, dy), settings={"VSI_CACHE": "FALSE"})
        chips.append(chip)
        served.append(sum(server.bytes_served.values()))
        band_bytes = sum(covering_tile_bytes(root / spec.item_id / f"{b}.tif", chip.bounds) for b, _ in scene.hrefs)
        covering.append(band_bytes + covering_tile_bytes(root / spec.item_id / "SCL.tif", chip.bounds))
    wall = time.perf_counter() - start
    file_bytes = sum(f.stat().st_size for f in (root / spec.item_id).iterdir())
    print(f"chip reads: {args.chips / wall:.2f} chips/s (cold, one process, 13 COGs per chip)")
    print(f"bytes read per chip: {np.mean(served) / 1e3:.0f} kB; covering tiles: {np.mean(covering) / 1e3:.0f} kB "
          f"(ratio {np.mean(served) / np.mean(covering):.2f}); whole scene {file_bytes / 1e6:.1f} MB")
    refl = np.stack([c.dn for c in chips]).astype(np.float32) / 10000
    for name in ("satclip-vit16", "satclip-resnet18", "satclip-resnet50"):
        enc = SatCLIPImageEncoder(get_spec(name), build_satclip_visual(get_spec(name).architecture)).eval()
        enc.encode(refl[:2])
        t = time.perf_counter()
        enc.encode(refl)
        print(f"{name}: {len(refl) / (time.perf_counter() - t):.1f} chips/s (CPU, 2 threads)")
    config = SatMAEConfig() if args.full_satmae else SatMAEConfig(depth=4)
    value = SatMAEEncoder(build_satmae(config)).eval()
    n = 2 if args.full_satmae else len(refl)
    t = time.perf_counter()
    value.encode(refl[:n])
    rate = n / (time.perf_counter() - t)
    label = "SatMAE ViT-L/16" if args.full_satmae else "SatMAE ViT-L width, 4 of 24 blocks"
    print(f"{label}: {rate:.2f} chips/s (CPU, 2 threads)")
    server.stop()


if __name__ == "__main__":
    main()
