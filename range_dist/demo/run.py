"""``range-dist demo``: the whole chain on a generated world, offline, in a few minutes on a laptop.

1. A generated world (:func:`range_dist.testing.world.demo_world`): land-cover regions (forest,
   grassland, cropland, shrubland, desert, snow) with a label per location, and one small
   Sentinel-2-like L2A scene (12 band COGs + SCL, local UTM zone) per location, uniform on land,
   showing its land cover. Served by a local Range-capable HTTP server and a local STAC API
   (``rustac serve``), both on 127.0.0.1 only.
2. Encoders demo-trained on that world (:mod:`range_dist.demo.train`): the SatCLIP location
   encoder and the key encoder's last layer fitted contrastively on the world's own chips, the
   SatMAE value model random; written in the published checkpoint formats and labelled
   "demo-trained on a synthetic world".
3. A database built from the locations through the real STAC pipeline
   (:func:`range_dist.executors.build_database`: search, chip reads over HTTP ranges,
   cloud/nodata checks, keys, values, Zarr append). A rerun resumes it.
4. A global grid embedded at 3 β levels on a local Ray (:func:`range_dist.jobs.grid.run.run_grid`),
   with the published method unchanged (τ, β blending, softmax over all rows).
5. The figures that show the method working (:mod:`range_dist.demo.figures`), a PNG map per β and
   a probe table: land/ocean, a checkerboard and the world's own land cover, baselines vs the cube.

Everything is seeded: two runs give the same cube values and the same probe table. Servers and Ray
are shut down at the end, on error too (``keep_serving`` keeps the servers up until Ctrl-C).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from range_dist.encoders.checkpoints import DEMO_TRAINED_LABEL

DEMO_LABEL = (f"DEMO, {DEMO_TRAINED_LABEL}: generated Sentinel-2-like scenes, and encoders fitted on them for a "
              "minute (location encoder + key head; random value model); it shows the method working, not the "
              "published model's content")
#: the cube and database attribute holding the assets' label (maps and db-info show it)
ASSETS_LABEL_ATTR = "range_dist:assets_label"
LANDCOVER_TASK = "landcover"
CUBE_PREFIX = "demo cube"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo computes.

    Attributes:
        out: output folder (everything the demo writes lands under it).
        locations: database locations, uniform on land, one small scene each.
        regions: land-cover regions (Voronoi cells on the sphere) of the world.
        resolution: grid cell size in degrees.
        betas: β levels of the cube.
        train_steps: full-batch steps of the encoders' contrastive fit.
        satmae_depth: blocks of the random SatMAE value model (24 = the full ViT-L/16; 1 = the smallest
            model in the published layout).
        probe_size: points per probe task.
        checkerboard_k: support points of the checkerboard task.
        seed: seed of the world, the weights, the locations and the probe tasks.
        keep_serving: keep the HTTP and STAC servers up after the run until Ctrl-C.
    """

    out: Path = Path("runs/demo")
    locations: int = 256
    regions: int = 120
    resolution: float = 5.0
    betas: tuple[float, ...] = (0.0, 0.5, 1.0)
    train_steps: int = 400
    satmae_depth: int = 1
    probe_size: int = 1000
    checkerboard_k: int = 20
    seed: int = 0
    keep_serving: bool = False


@dataclass
class DemoResult:
    """Where everything is, the figures, and how long each step took."""

    out: Path
    cogs: Path
    stac_url: str
    cogs_url: str
    locations: Path
    database: Path
    database_rows: int
    database_resumed: bool
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
    assets_label: str
    training: str
    figures: list[str]
    metadata: Path
    steps: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def summary(self) -> str:
        maps = "\n".join(f"  map:          {p}" for p in self.maps)
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.steps.items())
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        figures = "\n".join(f"  {line}" for line in self.figures)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in (self.key_checkpoint,
                                                                               self.value_checkpoint))
        return (
            f"range-dist demo finished in {self.wall_s:.1f} s ({steps})\n"
            f"NOTE: {DEMO_LABEL}\n"
            f"  scenes:       {self.cogs} (served at {self.cogs_url}, STAC API {self.stac_url})\n"
            f"  checkpoints:  {self.key_checkpoint.parent} ({sizes}): {self.assets_label}\n"
            f"  training:     {self.training}\n"
            f"  locations:    {self.locations}\n"
            f"  database:     {self.database} ({self.database_rows} rows built through the STAC pipeline"
            f"{', resumed' if self.database_resumed else ''}; failures: {fails})\n"
            f"  cube:         {self.cube} {self.cube_shape} (beta, lat, lon, feature), β={list(self.betas)}\n"
            f"{maps}\n"
            f"  probe table:  {self.probe_markdown} (and {self.probe_csv.name})\n"
            f"  metadata:     {self.metadata}\n\n"
            f"What the demo shows:\n{figures}\n\n"
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


def _label_database(path: Path, label: str) -> None:
    """Mark a built database as made with demo-trained encoders (``db-info`` and the cube show it)."""
    import zarr

    from range_dist.database.store import ATTRS_KEY

    group = zarr.open_group(str(path), mode="r+")
    meta: dict[str, Any] = dict(group.attrs[ATTRS_KEY])  # type: ignore[arg-type]
    meta.update({"sample": True, "sample_note": label, "assets_label": label})
    for key, tag in (("key_model", f" [{DEMO_TRAINED_LABEL}]"), ("value_model", " [random weights]")):
        if not str(meta.get(key, "")).endswith(tag):  # a resumed database is labelled once
            meta[key] = f"{meta.get(key, '')}{tag}"
    group.attrs[ATTRS_KEY] = meta


def _write_world(world: Any, cogs: Path, log: TextIO) -> int:
    """Write the scenes' COGs unless an earlier run of the same world left them all; returns scenes written."""
    from range_dist.testing.world import write_scene_cogs

    marker = cogs / "world.json"
    record = json.dumps({"world": world.describe(), "scenes": [s.item_id for s in world.scenes]}, sort_keys=True)
    if marker.exists() and marker.read_text() == record:
        print(f"[demo] reusing the {len(world.scenes)} scenes in {cogs}", file=log)
        return 0
    marker.unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:  # GDAL releases the GIL while it compresses
        list(pool.map(lambda spec: write_scene_cogs(spec, cogs), world.scenes))
    marker.write_text(record)
    return len(world.scenes)


def run_demo(settings: DemoSettings = DemoSettings(), log: TextIO = sys.stderr) -> DemoResult:
    """Run the whole chain (see the module docstring); progress goes to ``log``.

    Returns:
        A :class:`DemoResult` (its ``summary()`` is what ``range-dist demo`` prints).

    Raises:
        RangeDistError: the database got no rows (the message names the failures).
    """
    from range_dist.demo.train import KEY_ENCODER, TrainSettings, write_demo_checkpoints
    from range_dist.executors import build_database, executor_for
    from range_dist.testing.servers import RangeServer, RustacServer
    from range_dist.testing.world import demo_world, scene_item, write_catalog

    start = time.perf_counter()
    out = Path(settings.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(log)
    print(f"[demo] {DEMO_LABEL}", file=log)
    http: RangeServer | None = None
    stac: RustacServer | None = None
    try:
        world = demo_world(settings.locations, settings.seed, settings.regions)
        train = TrainSettings(steps=settings.train_steps, satmae_depth=settings.satmae_depth, seed=settings.seed)
        with steps.step("train", f"fitting the demo's encoders on {len(world.ids)} generated chips "
                                 f"({settings.train_steps} steps; reused when already fitted)"):
            key_ckpt, value_ckpt, training, fresh = write_demo_checkpoints(
                out / "assets", world, train, log=lambda s: print(f"[demo]   {s}", file=log, flush=True))

        world_dir = out / "world"
        cogs = world_dir / "cogs"
        cogs.mkdir(parents=True, exist_ok=True)
        with steps.step("scenes", f"generating {len(world.scenes)} Sentinel-2-like scenes (COGs) and serving them"):
            _write_world(world, cogs, log)
            http = RangeServer(cogs).start()
            collection, ndjson = write_catalog([scene_item(s, http.url) for s in world.scenes], world_dir)
            stac = RustacServer(collection, ndjson)
        print(f"[demo] COGs on {http.url}, STAC API on {stac.url}", file=log)

        from range_dist.locations.sampling import Locations, write_locations

        locations = write_locations(Locations(world.ids, world.lonlat), out / "locations.parquet", overwrite=True)

        from range_dist.database import RetrievalDatabase
        from range_dist.errors import RangeDistError
        from range_dist.jobs.build.config import BuildConfig

        database = out / "database.zarr"
        # new checkpoints make a new database; the same ones resume it (a rerun reads no chip twice)
        config = BuildConfig(locations=locations, out=database, stac_url=stac.url, datetime="2022-01-01/2022-12-31",
                             key_encoder=KEY_ENCODER, key_checkpoint=key_ckpt, value_checkpoint=value_ckpt,
                             batch_size=16, device="cpu", overwrite=fresh or not database.exists(),
                             executor="local")
        resumed = database.exists() and not fresh
        with steps.step("database", f"{'resuming' if resumed else 'building'} a database of {len(world.ids)} "
                                    "locations through the STAC pipeline"):
            report = build_database(config)
            db = RetrievalDatabase.open(database)
        if db.rows == 0:
            raise RangeDistError(f"the demo database got no rows ({dict(report.failures)}); see {database}")
        _label_database(database, str(training["label"]))
        db = RetrievalDatabase.open(database)

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
            plan.attrs[ASSETS_LABEL_ATTR] = str(training["label"])
            plan.attrs["range_dist:value_model"] = f"SatMAE ViT-L/16 layout, {settings.satmae_depth} of 24 blocks, " \
                                                   "random weights"
            run_grid(plan, executor_for("ray"), log=log)

        from range_dist.analysis.cube import open_cube
        from range_dist.analysis.maps import render_map
        from range_dist.demo.figures import cube_figures

        ds = open_cube(cube)
        figures = cube_figures(db.keys, ds["embedding"].values, settings.betas, db.value_dim)
        maps: list[Path] = []
        with steps.step("maps", "rendering a PNG map per β (ICA)"):
            for beta in settings.betas:
                result = render_map(ds, beta, out / "maps" / f"demo_beta{beta:g}.png", seed=settings.seed)
                maps.append(result.png)
                print(f"[demo] beta={beta:g}: {result.png} ({result.size[0]}x{result.size[1]} px)", file=log)

        with steps.step("probes", "probing land/ocean, a checkerboard and the world's land cover: baselines vs "
                                  "the cube"):
            table, md, csv, verdict = _probe_table(ds, key_ckpt, world, settings, out, log)
        figure_lines = [*figures.lines(), verdict]

        metadata = out / "demo.json"
        result_obj = DemoResult(
            out=out, cogs=cogs, stac_url=stac.url, cogs_url=http.url, locations=locations, database=database,
            database_rows=db.rows, database_resumed=resumed, failures=dict(report.failures), cube=cube,
            cube_shape=tuple(int(n) for n in ds["embedding"].shape), betas=tuple(settings.betas), maps=maps,
            probe_markdown=md, probe_csv=csv, probe_table=table, key_checkpoint=key_ckpt,
            value_checkpoint=value_ckpt, assets_label=str(training["label"]), training=str(training["summary"]),
            figures=figure_lines, metadata=metadata, steps=steps.times, wall_s=time.perf_counter() - start,
        )
        record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result_obj).items()}
        record.update({"label": DEMO_LABEL, "sample_assets": True, "maps": [str(p) for p in maps],
                       "figures_values": {"key_cosine_median": figures.key_cosine_median,
                                          "deviation_median": {str(k): v for k, v in figures.deviation_median.items()},
                                          "beta_correlation": figures.beta_correlation},
                       "world": world.describe(), "settings": {**asdict(settings), "out": str(out)}})
        record.pop("probe_table")
        metadata.write_text(json.dumps(record, indent=2, default=str))
        for line in figure_lines:
            print(f"[demo] {line}", file=log)
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


def _probe_table(ds: Any, satclip: Path, world: Any, settings: DemoSettings, out: Path,
                 log: TextIO) -> tuple[str, Path, Path, str]:
    from range_dist.analysis.probes import (
        baseline_encoders,
        cube_encoder,
        results_markdown,
        run_probes,
        write_results_csv,
    )
    from range_dist.analysis.tasks import checkerboard_task, labelled_land_task, landocean_task
    from range_dist.demo.figures import landcover_verdict
    from range_dist.testing.world import DEMO_MAX_LAT, LAND_COVER_CLASSES

    size = settings.probe_size
    landcover = labelled_land_task(LANDCOVER_TASK, world.land_cover, size, settings.seed, max_abs_lat=DEMO_MAX_LAT,
                                   class_names=LAND_COVER_CLASSES,
                                   description=f"label = the demo world's land cover ({world.land_cover.describe()})")
    tasks = [landcover, landocean_task(size, settings.seed),
             checkerboard_task(settings.checkerboard_k, n_train=size, n_test=size + size % 2, seed=settings.seed)]
    encoders = baseline_encoders(["direct", "cartesian3d", "wrap", "satclip"], satclip=satclip)
    # bilinear: the cube is a continuous field sampled at the probe points (nearest cells would add up to half a
    # cell of position error that the SatCLIP baseline, evaluated at the points themselves, does not have)
    encoders += [cube_encoder(ds, float(b), method="bilinear", name=f"{CUBE_PREFIX} beta={float(b):g}")
                 for b in settings.betas]

    def progress(r: Any) -> None:
        print(f"[demo]   {r.task} / {r.encoder}: {100 * r.score:.1f} %", file=log, flush=True)

    results = run_probes(tasks, encoders, on_result=progress)
    verdict = landcover_verdict(results, LANDCOVER_TASK, CUBE_PREFIX)
    note = (f"Probe table of `range-dist demo` ({DEMO_LABEL}). The satclip baseline and the cube use the demo's "
            f"demo-trained SatCLIP checkpoint; the cube is a {settings.resolution:g}° grid sampled bilinearly at "
            f"the probe points. Task {LANDCOVER_TASK}: {landcover.description}.\n\n{verdict.line().strip()}\n\n")
    if not verdict.beats:
        note += (f"The cube does not beat SatCLIP alone here: best cube {100 * verdict.best:.1f} % vs satclip "
                 f"{100 * verdict.satclip:.1f} %.\n\n")
    table = results_markdown(results)
    md = out / "probes.md"
    md.write_text(note + table + "\n")
    csv = write_results_csv(results, out / "probes.csv")
    return table, md, csv, verdict.line()
