"""SatCLIP location-encoder checkpoints: published layouts round trip, bad ones are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from range_dist import load_satclip_location_encoder
from range_dist.encoders.checkpoints import save_location_safetensors, save_satclip_checkpoint
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.errors import CheckpointError
from tests.helpers import random_points

PTS = torch.from_numpy(random_points(50, seed=2))


@pytest.fixture(scope="module")
def l40() -> SatCLIPLocationEncoder:
    torch.manual_seed(4)
    return SatCLIPLocationEncoder(SatCLIPLocationConfig())  # the released L40 architecture


def test_released_architecture_size(l40: SatCLIPLocationEncoder) -> None:
    assert sum(p.numel() for p in l40.parameters()) == 1_213_696  # 1.21 M as published
    out = l40(PTS)
    assert out.shape == (len(PTS), 256) and out.dtype == torch.float64


def test_lightning_checkpoint_round_trip(tmp_path: Path, l40: SatCLIPLocationEncoder) -> None:
    path = tmp_path / "satclip-vit16-l40.ckpt"
    visual = {"head.weight": torch.zeros(256, 384), "patch_embed.proj.weight": torch.zeros(384, 13, 16, 16)}
    save_satclip_checkpoint(l40, path, visual_state=visual)
    raw = torch.load(path, weights_only=True)
    assert "model.location.nnet.layers.0.weight" in raw["state_dict"]
    assert "model.nnet.last_layer.bias" in raw["state_dict"]  # duplicated as upstream
    assert "model.visual.head.weight" in raw["state_dict"]
    assert raw["hyper_parameters"]["legendre_polys"] == 40
    loaded = load_satclip_location_encoder(path)
    assert loaded.config.legendre_polys == 40 and loaded.config.harmonics == "published"
    # weights are stored as float32 (as released), so compare to the float32-rounded original
    ref = SatCLIPLocationEncoder(l40.config)
    ref.load_state_dict({k: v.float().double() for k, v in l40.state_dict().items()})
    torch.testing.assert_close(loaded(PTS), ref(PTS), rtol=0, atol=0)


def test_safetensors_round_trip_with_and_without_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=32, num_hidden_layers=3))
    path = tmp_path / "loc.safetensors"
    save_location_safetensors(enc, path)
    loaded = load_satclip_location_encoder(path)
    assert loaded.config.num_hidden_layers == 3 and loaded.config.capacity == 32
    torch.testing.assert_close(loaded(PTS), enc(PTS), rtol=1e-6, atol=1e-6)
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({k.removeprefix("nnet."): v.float().contiguous() for k, v in enc.state_dict().items()}, str(bare))
    inferred = load_satclip_location_encoder(bare)
    assert inferred.config.legendre_polys == 10 and inferred.config.num_hidden_layers == 3


def test_closed_form_checkpoint_uses_its_own_convention(tmp_path: Path) -> None:
    enc = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=5, capacity=16, harmonics="closed-form"))
    path = tmp_path / "cf.ckpt"
    save_satclip_checkpoint(enc, path)
    assert load_satclip_location_encoder(path).config.harmonics == "closed-form"
    assert load_satclip_location_encoder(path, harmonics="exact").config.harmonics == "exact"


def _write(path: Path, state: dict[str, torch.Tensor], hparams: dict[str, object]) -> Path:
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path


def _state(enc: SatCLIPLocationEncoder) -> dict[str, torch.Tensor]:
    return {f"model.location.{k}": v.float() for k, v in enc.state_dict().items()}


def test_missing_key_is_named(tmp_path: Path) -> None:
    enc = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=4, capacity=8))
    state = _state(enc)
    del state["model.location.nnet.layers.1.bias"]
    path = _write(tmp_path / "a.ckpt", state, {"legendre_polys": 4, "num_hidden_layers": 2})
    with pytest.raises(CheckpointError, match=r"missing key 'model\.location\.nnet\.layers\.1\.bias'.*\(8,\)"):
        load_satclip_location_encoder(path)


def test_misshaped_key_is_named_with_shapes(tmp_path: Path) -> None:
    enc = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=4, capacity=8))
    state = _state(enc)
    state["model.location.nnet.layers.1.weight"] = torch.zeros(8, 9)
    path = _write(tmp_path / "b.ckpt", state, {"legendre_polys": 4})
    with pytest.raises(CheckpointError, match=r"nnet\.layers\.1\.weight' has shape \(8, 9\), expected \(8, 8\)"):
        load_satclip_location_encoder(path)


def test_legendre_mismatch_with_first_layer(tmp_path: Path) -> None:
    enc = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=8))
    path = _write(tmp_path / "c.ckpt", _state(enc), {"legendre_polys": 40})
    with pytest.raises(CheckpointError, match=r"legendre_polys=40 implies 1600 .* shape \(8, 100\)"):
        load_satclip_location_encoder(path)


def test_not_a_satclip_checkpoint_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.ckpt", {"backbone.conv.weight": torch.zeros(1)}, {})
    with pytest.raises(CheckpointError, match="no SatCLIP location-encoder weights found"):
        load_satclip_location_encoder(path)
    with pytest.raises(CheckpointError, match=r"does not exist.*fetch-assets"):
        load_satclip_location_encoder(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt could not be read"):  # no full-pickle retry
        load_satclip_location_encoder(garbage)


def test_outputs_deterministic_and_finite_everywhere(l40: SatCLIPLocationEncoder) -> None:
    pts = torch.tensor([[0, 90], [0, -90], [180, 0], [-180, 0]], dtype=torch.float64)
    out = l40(pts)
    assert torch.isfinite(out).all()
    np.testing.assert_array_equal(out.numpy(), l40(pts).numpy())
