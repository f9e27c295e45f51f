"""The demo's parts, fast: the generated world, the encoders' fit, the figures, the land-cover task, db-info notes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def test_world_labels_chips_and_scenes_agree(tmp_path: Path) -> None:
    import rasterio

    from range_dist.testing.world import LAND_COVER_CLASSES, chip_dn, demo_world, scene_rasters, write_scene_cogs

    world = demo_world(6, seed=3, regions=40)
    again = demo_world(6, seed=3, regions=40)
    np.testing.assert_array_equal(world.lonlat, again.lonlat)
    labels = world.labels()
    assert labels.shape == (6,) and set(labels) <= set(range(len(LAND_COVER_CLASSES)))
    assert (np.abs(world.lonlat[:, 1]) <= 80).all()
    spec = world.scenes[0]
    assert spec.land_cover == labels[0]
    dn, scl = chip_dn(spec, *world.lonlat[0])
    assert dn.shape == (12, 256, 256) and dn.min() > 0 and scl.shape == (256, 256)
    folder = write_scene_cogs(spec, tmp_path)
    with rasterio.open(folder / "B05.tif") as src:  # a 20 m band: the block means the chip replicates
        np.testing.assert_array_equal(src.read(1), scene_rasters(spec)["B05"])
    # different land covers look different: mean reflectance spectra far apart
    from range_dist.testing.world import land_cover_reflectance

    spectra = np.array([land_cover_reflectance(c, 60, 0).mean(axis=(1, 2)) for c in range(len(LAND_COVER_CLASSES))])
    gaps = np.linalg.norm(spectra[:, None] - spectra[None], axis=2)[np.triu_indices(len(spectra), 1)]
    assert gaps.min() > 0.05


def test_fit_is_seeded_and_written_in_published_formats(tmp_path: Path) -> None:
    from range_dist.demo.train import TrainSettings, write_demo_checkpoints
    from range_dist.encoders.checkpoints import DEMO_TRAINED_LABEL, load_satclip_location_encoder
    from range_dist.encoders.image import load_image_encoder
    from range_dist.testing.world import demo_world

    world = demo_world(8, seed=1, regions=20)
    settings = TrainSettings(steps=30)
    key_a, value_a, record, fresh = write_demo_checkpoints(tmp_path / "a", world, settings)
    assert fresh and record["report"]["final_loss"] < record["report"]["first_loss"]
    key_b, _, _, _ = write_demo_checkpoints(tmp_path / "b", world, settings)
    loc_a, loc_b = load_satclip_location_encoder(key_a), load_satclip_location_encoder(key_b)
    for (name, a), b in zip(loc_a.state_dict().items(), loc_b.state_dict().values()):
        assert (a == b).all(), name
    assert loc_a.sample_label.startswith(DEMO_TRAINED_LABEL)
    keys = load_image_encoder("satclip-resnet18", key_a)
    values = load_image_encoder("satmae-vitl16-fmow-rgb", value_a)
    assert len(values.model.blocks) == 1 and values.model.embed_dim == 1024
    assert keys.spec.dim == 256
    assert key_a.stat().st_size < 30e6 and value_a.stat().st_size < 30e6
    # same world and settings: reused, not refitted
    assert write_demo_checkpoints(tmp_path / "a", world, settings)[3] is False


def test_figures() -> None:
    from range_dist.demo.figures import cube_figures, field_correlation, median_pairwise_cosine, relative_deviation

    same = np.ones((5, 4)) + 1e-6 * np.arange(20).reshape(5, 4)
    assert median_pairwise_cosine(same) > 0.999
    assert median_pairwise_cosine(np.eye(4)) == pytest.approx(0.0)
    assert np.allclose(relative_deviation(np.ones((3, 2))), 0.0)
    h = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    assert np.allclose(relative_deviation(h), np.sqrt(0.5))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    assert field_correlation(a, 2 * a + 1) == pytest.approx(1.0)
    emb = np.stack([np.concatenate([a, a[:, :1]], axis=1), np.concatenate([-a, a[:, :1]], axis=1)])
    figs = cube_figures(rng.normal(size=(10, 4)), emb.reshape(2, 5, 10, 4), (0.0, 1.0), value_dim=3)
    assert figs.beta_correlation == pytest.approx(-1.0) and set(figs.deviation_median) == {0.0, 1.0}
    assert any("β=0 and β=1: -1.000" in line for line in figs.lines())


def test_landcover_verdict() -> None:
    from range_dist.demo.figures import landcover_verdict

    rows = [SimpleNamespace(task="landcover", encoder="satclip", score=0.8, majority=0.2),
            SimpleNamespace(task="landcover", encoder="demo cube beta=0", score=0.85, majority=0.2),
            SimpleNamespace(task="landcover", encoder="demo cube beta=1", score=0.75, majority=0.2),
            SimpleNamespace(task="landocean", encoder="demo cube beta=1", score=0.99, majority=0.7)]
    verdict = landcover_verdict(rows, "landcover", "demo cube")
    assert verdict.beats and verdict.best_encoder == "demo cube beta=0" and "beats" in verdict.line()
    rows[1].score = 0.7
    assert "does NOT beat" in landcover_verdict(rows, "landcover", "demo cube").line()


def test_db_info_note_and_alignment_verdicts() -> None:
    from range_dist.cli.database import _sample_note
    from range_dist.database import RetrievalDatabase, check_row_alignment

    assert _sample_note({"sample": False}) is None
    assert "synthetic" in (_sample_note({"sample": True, "origin": "sample:seed=0"}) or "")
    label = "demo-trained on a synthetic world"
    note = _sample_note({"sample": True, "origin": "stac:http://x", "assets_label": label})
    assert note is not None and "STAC pipeline" in note and "synthetic rows" not in note

    rng = np.random.default_rng(0)
    locs = np.column_stack([rng.uniform(-180, 180, 200), rng.uniform(-60, 60, 200)])
    keys, values = rng.normal(size=(200, 4)).astype(np.float32), rng.normal(size=(200, 8)).astype(np.float32)
    built = RetrievalDatabase(locs, keys, values, {"location_id": np.array([f"L{i}" for i in range(200)])},
                              {"rows_made_by": "range-dist build-db: one chip per location id; rows aligned by "
                                               "location_id"})
    report = check_row_alignment(built)
    assert report.built and not report.aligned and "misaligned" not in report.summary()
    small = RetrievalDatabase(locs[:10], keys[:10], values[:10])
    assert "too few rows" in check_row_alignment(small).summary()
    assert "misaligned" in check_row_alignment(RetrievalDatabase(locs, keys, values)).summary()


def test_labelled_land_task() -> None:
    from range_dist.analysis.tasks import labelled_land_task
    from range_dist.errors import ConfigError
    from range_dist.testing.world import LAND_COVER_CLASSES, land_cover_map

    cover = land_cover_map(30, seed=2)
    task = labelled_land_task("landcover", cover, 200, seed=0, max_abs_lat=80, class_names=LAND_COVER_CLASSES)
    assert task.lonlat.shape == (200, 2) and (np.abs(task.lonlat[:, 1]) <= 80).all()
    np.testing.assert_array_equal(task.labels, cover(task.lonlat))
    assert sum(task.info["class_counts"].values()) == 200
    with pytest.raises(ConfigError, match="label function gave shape"):
        labelled_land_task("bad", lambda ll: np.zeros(3), 50)
