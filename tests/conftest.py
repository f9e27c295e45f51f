"""Shared fixtures: small encoders, databases and sample assets built by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from range_dist.assets import make_sample_database, write_sample_assets
from range_dist.database.store import RetrievalDatabase
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder


@pytest.fixture(scope="session")
def location_encoder() -> SatCLIPLocationEncoder:
    torch.manual_seed(0)
    return SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=64, embed_dim=256))


@pytest.fixture(scope="session")
def random_db() -> RetrievalDatabase:
    rng = np.random.default_rng(1)
    m = 3000
    locs = np.stack([rng.uniform(-180, 180, m), np.degrees(np.arcsin(rng.uniform(-1, 1, m)))], axis=1)
    return RetrievalDatabase(locs, rng.normal(size=(m, 256)), rng.normal(size=(m, 1024)))


@pytest.fixture(scope="session")
def sample_db() -> RetrievalDatabase:
    return make_sample_database(rows=1500, seed=3)


@pytest.fixture(scope="session")
def sample_assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    paths = write_sample_assets(tmp_path_factory.mktemp("assets"), rows=1200, seed=0)
    return paths.checkpoint, paths.database
