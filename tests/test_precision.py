"""Mixed-precision retrieval (the GPU path): its error against float64, measured and bounded.

On CPU the bf16 values product is emulated (same rounded inputs, float32 sums), so the error
bound is checked here; on a CUDA machine the same test also runs on the device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from range_dist import RangeEncoder
from range_dist.database.store import RetrievalDatabase
from range_dist.encoders.satclip import SatCLIPLocationEncoder
from range_dist.retrieval.engine import DeviceDatabase, RetrievalSettings, blend, retrieve_partials
from range_dist.retrieval.fast.plan import relative_errors
from tests.helpers import random_points, reference_range

BETAS = (0.0, 0.5, 1.0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _engine(location_encoder: SatCLIPLocationEncoder, db: RetrievalDatabase, points: np.ndarray, device: str,
            precision: str) -> torch.Tensor:
    enc = RangeEncoder(location_encoder, db)  # features on CPU, then the engine on the device
    q_hat, xyz = enc.query_features(points)
    ddb = DeviceDatabase(db.keys, db.locations, db.values, device=device)
    settings = RetrievalSettings.for_variant("range+", BETAS, precision=precision)  # type: ignore[arg-type]
    stats = retrieve_partials(q_hat.to(device), xyz.to(device), ddb, settings)
    return blend(stats, q_hat.to(device), BETAS, "range+").cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_precision_error_against_float64(location_encoder: SatCLIPLocationEncoder,
                                               random_db: RetrievalDatabase, device: str) -> None:
    points = random_points(200, seed=4)
    reference = torch.from_numpy(reference_range(location_encoder, random_db, points, BETAS))
    errors = {p: float(relative_errors(_engine(location_encoder, random_db, points, device, p), reference).max())
              for p in ("fp32", "tf32", "bf16")}
    assert errors["fp32"] < 1e-5
    assert errors["tf32"] < (1e-5 if device == "cpu" else 2e-3)  # TF32 exists on CUDA only
    # bf16 weights and values, float32 sums: each rounded value is off by at most bf16's unit
    # roundoff 2^-8 (relative), and a weighted average of them by no more than that
    assert errors["bf16"] < 2.0**-8, errors
    assert errors["bf16"] > errors["fp32"]  # the bf16 path really ran


def test_cpu_encoder_always_uses_float32(location_encoder: SatCLIPLocationEncoder,
                                         random_db: RetrievalDatabase) -> None:
    enc = RangeEncoder(location_encoder, random_db, precision="bf16")
    assert enc.precision_used == "fp32" and enc.settings(BETAS).precision == "fp32"
    from range_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="precision='fp16': use one of fp32, tf32, bf16"):
        RangeEncoder(location_encoder, random_db, precision="fp16")
