"""Shared fixtures: small encoders, databases and sample assets built by the tests themselves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import count
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
from range_dist.testing.s3 import AWS_VARS, SeaweedS3
from range_dist.util import stores

_bucket_numbers = count()


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


# ---------------------------------------------------------------- a real S3 server (object-storage tests)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3-compatible server (SeaweedFS on 127.0.0.1), one per test module.

    A missing ``weed`` binary raises here: an error of every test that uses it, never a skip.
    """
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def aws_env(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin key and the server's endpoint in the standard environment; no storage options registered."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3.env("admin").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(stores, "_REGISTERED", {})


@pytest.fixture
def bucket(s3: SeaweedS3, request: pytest.FixtureRequest) -> str:
    """A new, empty bucket for the test, named after its module (``object-store-db-1234-0``)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    name = f"{module[:30]}-{os.getpid()}-{next(_bucket_numbers)}"
    s3.create_bucket(name)
    return name
