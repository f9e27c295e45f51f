"""The map, probe and sample subcommands (registered with add_parsers)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from range_dist.cli.analysis import add_parsers
from range_dist.errors import ConfigError
from tests.analysis_helpers import make_cube


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="range-dist")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory, sample_assets: tuple[Path, Path]) -> Path:
    return make_cube(tmp_path_factory.mktemp("clicube") / "cube.zarr", sample_assets, dtype="float16")


def test_map_writes_one_png_per_beta(cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["map", str(cube), "--out", str(tmp_path / "m.png"), "--scale", "2", "--method", "pca"]) == 0
    for beta in ("0", "0.5", "1"):
        with Image.open(tmp_path / f"m_beta{beta}.png") as img:
            assert img.size == (72, 36)
    assert "NOTE: this cube was not made with the published assets: SAMPLE - untrained" in capsys.readouterr().out
    assert _run(["map", str(cube), "--beta", "0.5", "--out", str(tmp_path / "one.png"), "--geotiff",
                 str(tmp_path / "one.tif")]) == 0
    assert (tmp_path / "one.png").exists() and (tmp_path / "one.tif").exists()
    with pytest.raises(ConfigError, match=r"--out .*m.jpg: the map is written as PNG"):
        _run(["map", str(cube), "--out", str(tmp_path / "m.jpg")])


def test_sample_writes_embeddings(cube: Path, tmp_path: Path) -> None:
    pd.DataFrame({"lon": [8.5, -70.6, 179.9], "lat": [47.4, -33.4, 0.0]}).to_csv(tmp_path / "p.csv", index=False)
    assert _run(["sample", str(cube), "--points", str(tmp_path / "p.csv"), "--out", str(tmp_path / "e.npz"),
                 "--betas", "0,1"]) == 0
    with np.load(tmp_path / "e.npz") as f:
        assert f["embedding"].shape == (2, 3, 1280) and f["beta"].tolist() == [0.0, 1.0]


def test_probe_prints_a_table_and_writes_csv(cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             sample_assets: tuple[Path, Path]) -> None:
    ckpt, _ = sample_assets
    argv = ["probe", "--task", "landocean,checkerboard:16", "--size", "300", "--cube", str(cube), "--betas", "0.5",
            "--baselines", "direct,wrap,satclip,geoclip", "--satclip", str(ckpt), "--csv", str(tmp_path / "r.csv")]
    assert _run(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "| landocean | wrap | accuracy |" in out and "| checkerboard:16 | cube beta=0.5 (bilinear) |" in out
    assert "probe: landocean / wrap: accuracy" in captured.err
    assert re.search(r"probe: (\d+)/\1 probes \(100%\)", captured.err)  # progress per probe, to the end
    frame = pd.read_csv(tmp_path / "r.csv")
    assert len(frame) == 2 * (3 + 1) + (2 if "geoclip: skipped" not in out else 0)
    with pytest.raises(ConfigError, match="nothing to probe"):
        _run(["probe", "--task", "landocean"])
    with pytest.raises(ConfigError, match="--db needs --satclip CKPT"):
        _run(["probe", "--task", "landocean", "--db", "x.npz"])
