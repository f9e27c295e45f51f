"""``range-dist demo``: the whole chain on a generated sample world, offline, in minutes on a laptop.

1. Sample assets: a SatCLIP-format checkpoint (location encoder + ViT-S/16 image encoder) and a
   SatMAE ViT-L/16 checkpoint, both with **random weights** (labelled as such everywhere).
2. A sample world: one Sentinel-2-like L2A scene (12 band COGs + SCL, local UTM zone) per land
   region, served by a local Range-capable HTTP server, and a local STAC API over their items
   (``rustac serve``); both on 127.0.0.1 only.
3. Locations uniform inside the scenes' footprints, and a database built from them through the
   real STAC pipeline (:func:`range_dist.executors.build_database`: search, chip reads over
   HTTP ranges, cloud/nodata checks, SatCLIP keys, SatMAE values, Zarr append).
4. A global grid embedded at 3 β levels on a local Ray (:func:`range_dist.jobs.grid.run.run_grid`),
   written as a Zarr cube.
5. A PNG map per β (:func:`range_dist.analysis.maps.render_map`) and a probe table
   (land/ocean and a checkerboard; baselines against the cube).

Servers and Ray are shut down at the end, on error too (``keep_serving`` keeps the servers up
until Ctrl-C after the run, to explore them).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

DEMO_LABEL = ("SAMPLE DEMO: generated Sentinel-2-like scenes and UNTRAINED encoders (random weights); the "
              "embeddings show the pipeline working, not the published model's content")
KEY_CHECKPOINT = "sample-satclip-vit16-l10-random.ckpt"
VALUE_CHECKPOINT = "sample-satmae-vitl16-random.safetensors"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo computes.

    Attributes:
        out: output folder (everything the demo writes lands under it).
        per_scene: locations (database rows) per scene; 8 scenes.
        resolution: grid cell size in degrees.
        betas: β levels of the cube.
        satmae_depth: SatMAE transformer blocks; 24 = the real ViT-L/16, fewer = a reduced sample
            (labelled as such).
        probe_size: points per probe task.
        checkerboard_k: support points of the checkerboard task.
        seed: seed of the weights, the locations and the probe tasks.
        keep_serving: keep the HTTP and STAC servers up after the run until Ctrl-C.
    """

    out: Path = Path("runs/demo")
    per_scene: int = 3
    resolution: float = 5.0
    betas: tuple[float, ...] = (0.0, 0.5, 1.0)
    satmae_depth: int = 24
    probe_size: int = 1000
    checkerboard_k: int = 20
    seed: int = 0
    keep_serving: bool = False


@dataclass
class DemoResult:
    """Where everything is, and how long each step took."""

    out: Path
    cogs: Path
    stac_url: str
    cogs_url: str
    locations: Path
    database: Path
    database_rows: int
    failures: dict[str, int]
    cube: Path
    cube_shape: tuple[int, ...]
    betas: tuple[float, ...]
    maps: list[Path]
    probe_markdown: Path
    probe_csv: Path
    probe_table: str
    key_checkpoint: Path
    value_checkpoint: Path
    value_model: str
    metadata: Path
    steps: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def summary(self) -> str:
        maps = "\n".join(f"  map:          {p}" for p in self.maps)
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.steps.items())
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        return (
            f"range-dist demo finished in {self.wall_s:.1f} s ({steps})\n"
            f"NOTE: {DEMO_LABEL}\n"
            f"  scenes:       {self.cogs} (served at {self.cogs_url}, STAC API {self.stac_url})\n"
            f"  checkpoints:  {self.key_checkpoint} (SatCLIP, random weights)\n"
            f"                {self.value_checkpoint} ({self.value_model})\n"
            f"  locations:    {self.locations}\n"
            f"  database:     {self.database} ({self.database_rows} rows built through the STAC pipeline; "
            f"failures: {fails})\n"
            f"  cube:         {self.cube} {self.cube_shape} (beta, lat, lon, feature), β={list(self.betas)}\n"
            f"{maps}\n"
            f"  probe table:  {self.probe_markdown} (and {self.probe_csv.name})\n"
            f"  metadata:     {self.metadata}\n\n"
            f"{self.probe_table}\n\n"
            f"Open the cube:  python -c \"import xarray as xr; print(xr.open_zarr('{self.cube}', "
            f"decode_coords='all'))\""
        )


class _Steps:
    def __init__(self, log: TextIO) -> None:
        self.log = log
        self.times: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, text: str) -> Iterator[None]:
        print(f"[demo] {text} ...", file=self.log, flush=True)
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start
        print(f"[demo] {name}: {self.times[name]:.1f} s", file=self.log, flush=True)


def value_model_label(depth: int) -> str:
    if depth == 24:
        return "SatMAE ViT-L/16 architecture, random weights"
    return f"REDUCED SAMPLE SatMAE: ViT-L width with {depth} of 24 blocks, random weights"


def write_demo_checkpoints(folder: Path, satmae_depth: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """The demo's random-weight checkpoints (reused when already there).

    Returns:
        (SatCLIP Lightning checkpoint: L=10 location encoder + ViT-S/16 13-band image encoder,
        SatMAE safetensors (float16 storage to halve the file; loaded as float32)).
    """
    import torch

    from range_dist.assets import SAMPLE_LABEL
    from range_dist.encoders.checkpoints import save_satclip_checkpoint
    from range_dist.encoders.image import SatMAEConfig, build_satclip_visual, build_satmae, save_satmae_checkpoint
    from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder

    folder.mkdir(parents=True, exist_ok=True)
    key = folder / KEY_CHECKPOINT
    value = folder / (VALUE_CHECKPOINT if satmae_depth == 24 else
                      VALUE_CHECKPOINT.replace("vitl16", f"vitl16-depth{satmae_depth}-reduced"))
    if not key.exists():
        torch.manual_seed(seed)
        location = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=256, embed_dim=256))
        visual = build_satclip_visual("vit_small_patch16_224")
        tmp = key.with_suffix(".tmp")
        save_satclip_checkpoint(location, tmp, visual_state=visual.state_dict(), vision_layers="moco_vit16",
                                extra={"range_dist_sample": SAMPLE_LABEL})
        tmp.replace(key)
    if not value.exists():
        torch.manual_seed(seed + 1)
        model = build_satmae(SatMAEConfig(depth=satmae_depth)).half()
        tmp = value.with_name(value.name + ".tmp.safetensors")
        save_satmae_checkpoint(model, tmp)
        tmp.replace(value)
    return key, value


def _label_database(path: Path, note: str) -> None:
    """Mark a built database as a sample (``db-info`` and the cube's ``range_dist:sample_assets`` show it)."""
    import zarr

    from range_dist.database.store import ATTRS_KEY

    group = zarr.open_group(str(path), mode="r+")
    meta: dict[str, Any] = dict(group.attrs[ATTRS_KEY])  # type: ignore[arg-type]
    meta.update({"sample": True, "sample_note": note})
    group.attrs[ATTRS_KEY] = meta


def run_demo(settings: DemoSettings = DemoSettings(), log: TextIO = sys.stderr) -> DemoResult:
    """Run the whole chain (see the module docstring); progress goes to ``log``.

    Returns:
        A :class:`DemoResult` (its ``summary()`` is what ``range-dist demo`` prints).
    """
    from range_dist.executors import build_database, executor_for
    from range_dist.testing.servers import RangeServer, RustacServer
    from range_dist.testing.world import demo_scenes, locations_in_scenes, write_catalog, write_scene

    start = time.perf_counter()
    out = Path(settings.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(log)
    print(f"[demo] {DEMO_LABEL}", file=log)
    http: RangeServer | None = None
    stac: RustacServer | None = None
    try:
        with steps.step("assets", "writing random-weight SatCLIP and SatMAE checkpoints (sample assets)"):
            key_ckpt, value_ckpt = write_demo_checkpoints(out / "assets", settings.satmae_depth, settings.seed)

        world = out / "world"
        cogs = world / "cogs"
        cogs.mkdir(parents=True, exist_ok=True)
        specs = demo_scenes()
        with steps.step("scenes", f"generating {len(specs)} Sentinel-2-like scenes (COGs) and serving them"):
            http = RangeServer(cogs).start()
            items = [write_scene(spec, cogs, http.url) for spec in specs]
            collection, ndjson = write_catalog(items, world)
            stac = RustacServer(collection, ndjson)
        print(f"[demo] COGs on {http.url}, STAC API on {stac.url}", file=log)

        from range_dist.locations.sampling import Locations, write_locations

        ids, lonlat = locations_in_scenes(specs, settings.per_scene, seed=settings.seed)
        locations = write_locations(Locations(tuple(ids), lonlat), out / "locations.parquet", overwrite=True)

        from range_dist.jobs.build.config import BuildConfig

        database = out / "database.zarr"
        config = BuildConfig(locations=locations, out=database, stac_url=stac.url, datetime="2022-01-01/2022-12-31",
                             key_encoder="satclip-vit16", key_checkpoint=key_ckpt, value_checkpoint=value_ckpt,
                             batch_size=8, device="cpu", overwrite=True, executor="local")
        with steps.step("database", f"building a database of {len(ids)} locations through the STAC pipeline"):
            report = build_database(config)
        if report.rows_written == 0:
            from range_dist.errors import RangeDistError

            raise RangeDistError(f"the demo database got no rows ({dict(report.failures)}); see {database}")
        _label_database(database, f"{DEMO_LABEL}; values: {value_model_label(settings.satmae_depth)}")

        from range_dist.jobs.grid.config import GridJobConfig
        from range_dist.jobs.grid.plan import build_plan, load_inputs
        from range_dist.jobs.grid.run import run_grid

        cube = out / "cube.zarr"
        grid_config = GridJobConfig(resolution=settings.resolution, betas=settings.betas, satclip=key_ckpt,
                                    db=database, out=cube, tile_size=16, chunk_size=8, overwrite=True,
                                    executor="ray")
        with steps.step("grid", f"embedding a global {settings.resolution:g}° grid at β={list(settings.betas)} "
                                "on a local Ray"):
            plan = build_plan(grid_config, load_inputs(grid_config, sample=True))
            plan.attrs["range_dist:demo"] = DEMO_LABEL
            plan.attrs["range_dist:value_model"] = value_model_label(settings.satmae_depth)
            run_grid(plan, executor_for("ray"), log=log)

        from range_dist.analysis.cube import open_cube
        from range_dist.analysis.maps import render_map

        ds = open_cube(cube)
        maps: list[Path] = []
        with steps.step("maps", "rendering a PNG map per β (ICA)"):
            for beta in settings.betas:
                result = render_map(ds, beta, out / "maps" / f"demo_beta{beta:g}.png", seed=settings.seed)
                maps.append(result.png)
                print(f"[demo] beta={beta:g}: {result.png} ({result.size[0]}x{result.size[1]} px)", file=log)

        with steps.step("probes", "probing land/ocean and a checkerboard: baselines vs the cube"):
            table, md, csv = _probe_table(ds, key_ckpt, settings, out)

        metadata = out / "demo.json"
        result_obj = DemoResult(
            out=out, cogs=cogs, stac_url=stac.url, cogs_url=http.url, locations=locations, database=database,
            database_rows=report.rows_written, failures=dict(report.failures), cube=cube,
            cube_shape=tuple(int(n) for n in ds["embedding"].shape), betas=tuple(settings.betas), maps=maps,
            probe_markdown=md, probe_csv=csv, probe_table=table, key_checkpoint=key_ckpt,
            value_checkpoint=value_ckpt, value_model=value_model_label(settings.satmae_depth), metadata=metadata,
            steps=steps.times, wall_s=time.perf_counter() - start,
        )
        record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result_obj).items()}
        record.update({"label": DEMO_LABEL, "sample_assets": True, "maps": [str(p) for p in maps],
                       "scenes": [s.item_id for s in specs], "settings": {**asdict(settings), "out": str(out)}})
        record.pop("probe_table")
        metadata.write_text(json.dumps(record, indent=2, default=str))
        if settings.keep_serving:
            print(result_obj.summary())
            print(f"\nserving the COGs on {http.url} and the STAC API on {stac.url}; Ctrl-C to stop", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return result_obj
    finally:
        if stac is not None:
            stac.stop()
        if http is not None:
            http.stop()


def _probe_table(ds: Any, satclip: Path, settings: DemoSettings, out: Path) -> tuple[str, Path, Path]:
    from range_dist.analysis.probes import (
        baseline_encoders,
        cube_encoder,
        results_markdown,
        run_probes,
        write_results_csv,
    )
    from range_dist.analysis.tasks import checkerboard_task, landocean_task

    size = settings.probe_size
    tasks = [landocean_task(size, settings.seed),
             checkerboard_task(settings.checkerboard_k, n_train=size, n_test=size + size % 2, seed=settings.seed)]
    encoders = baseline_encoders(["direct", "cartesian3d", "wrap", "satclip"], satclip=satclip)
    encoders += [cube_encoder(ds, float(b), name=f"demo cube beta={float(b):g}") for b in settings.betas]
    results = run_probes(tasks, encoders)
    note = (f"Probe table of `range-dist demo` ({DEMO_LABEL}). The satclip baseline and the cube use the demo's "
            f"random-weight SatCLIP checkpoint; the cube is a {settings.resolution:g}° grid sampled at the "
            "nearest cell.\n\n")
    table = results_markdown(results)
    md = out / "probes.md"
    md.write_text(note + table + "\n")
    csv = write_results_csv(results, out / "probes.csv")
    return table, md, csv
