"""Image encoders: published checkpoint layouts round-trip, preprocessing on known arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from range_dist.encoders.checkpoints import save_satclip_checkpoint
from range_dist.encoders.image import (
    IMAGE_ENCODERS,
    SatMAEConfig,
    build_satclip_visual,
    build_satmae,
    load_image_encoder,
    load_satclip_image_encoder,
    load_satmae_encoder,
    render_rgb,
    satclip_input,
    satmae_input,
    save_satmae_checkpoint,
    sincos_pos_embed,
)
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.errors import CheckpointError, ConfigError

torch.set_num_threads(2)


def _chips(n: int = 2, size: int = 232, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 0.5, (n, 12, size, size)).astype(np.float32)


def test_satclip_input_inserts_zero_b10_and_crops() -> None:
    refl = np.arange(12, dtype=np.float32)[None, :, None, None] * np.ones((1, 12, 256, 256), np.float32)
    refl[0, :, 16, 16] = -1  # top-left of the 224 crop
    x = satclip_input(refl)
    assert x.shape == (1, 13, 224, 224)
    assert (x[0, 10] == 0).all()
    assert x[0, 9, 5, 5] == 9 and x[0, 11, 5, 5] == 10 and x[0, 12, 5, 5] == 11
    assert x[0, 0, 0, 0] == -1


def test_rgb_rendering_and_imagenet_normalisation() -> None:
    refl = np.zeros((1, 12, 224, 224), np.float32)
    refl[0, 3], refl[0, 2], refl[0, 1] = 0.15, 0.3, 0.6  # B04 -> R, B03 -> G, B02 -> B
    rgb = render_rgb(refl)
    assert rgb[0, 0, 0, 0] == pytest.approx(round(0.5 * 255) / 255)
    assert rgb[0, 1, 0, 0] == 1.0 and rgb[0, 2, 0, 0] == 1.0  # clipped
    x = satmae_input(rgb)
    assert x[0, 2, 0, 0] == pytest.approx((1.0 - 0.406) / 0.225, rel=1e-6)


@pytest.mark.parametrize(("name", "layers"), [("satclip-vit16", "moco_vit16"), ("satclip-resnet18", "moco_resnet18"),
                                              ("satclip-resnet50", "moco_resnet50")])
def test_satclip_image_encoder_round_trip(tmp_path: Path, name: str, layers: str) -> None:
    torch.manual_seed(0)
    visual = build_satclip_visual(IMAGE_ENCODERS[name].architecture).eval()
    location = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=32, embed_dim=256))
    path = tmp_path / "satclip.ckpt"
    save_satclip_checkpoint(location, path, visual_state=visual.state_dict(), vision_layers=layers)
    encoder = load_image_encoder(name, path)
    chips = _chips(1 if name != "satclip-resnet18" else 2)
    with torch.no_grad():
        expected = visual(torch.from_numpy(satclip_input(chips))).numpy()
    np.testing.assert_array_equal(encoder.encode(chips), expected)
    assert expected.shape[1] == 256
    other = "satclip-resnet18" if name != "satclip-resnet18" else "satclip-vit16"
    with pytest.raises(CheckpointError, match=f"not {other}"):
        load_image_encoder(other, path)


def test_satclip_image_encoder_needs_visual_keys(tmp_path: Path) -> None:
    location = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=32, embed_dim=256))
    path = tmp_path / "loc.ckpt"
    save_satclip_checkpoint(location, path)
    with pytest.raises(CheckpointError, match=r"no 'model.visual.\*' keys"):
        load_satclip_image_encoder(path)
    with pytest.raises(ConfigError, match="not known"):
        load_image_encoder("satclip-vit99", path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_satmae_small_config_round_trip(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    model = build_satmae(SatMAEConfig(embed_dim=128, depth=2, num_heads=2)).eval()
    with torch.no_grad():
        model.pos_embed.copy_(torch.from_numpy(sincos_pos_embed(128, 14))[None])
    path = tmp_path / f"satmae{suffix}"
    save_satmae_checkpoint(model, path)
    encoder = load_satmae_encoder(path)
    assert len(encoder.model.blocks) == 2
    chips = _chips(2)
    x = torch.from_numpy(satmae_input(render_rgb(chips)))
    with torch.no_grad():
        tokens = model.forward_features(x)
    expected = tokens[:, 1:].mean(1).numpy()
    np.testing.assert_array_equal(encoder.encode(chips), expected)


def test_satmae_missing_key_is_named(tmp_path: Path) -> None:
    model = build_satmae(SatMAEConfig(embed_dim=64, depth=1, num_heads=1))
    state = {k: v for k, v in model.state_dict().items() if k != "norm.weight"}
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"norm\.weight"):
        load_satmae_encoder(tmp_path / "bad.pth")


def test_satmae_vit_large_checkpoint_loads(tmp_path: Path) -> None:
    """The real ViT-L/16 architecture (24 blocks, 1024-d, 16 heads) from a .pth, on one chip."""
    torch.manual_seed(2)
    model = build_satmae().eval()
    assert sum(p.numel() for p in model.parameters()) > 300_000_000
    path = tmp_path / "satmae-vitl.pth"
    save_satmae_checkpoint(model, path)
    encoder = load_satmae_encoder(path)
    assert len(encoder.model.blocks) == 24 and encoder.model.embed_dim == 1024
    assert encoder.model.blocks[0].attn.num_heads == 16
    chips = _chips(1, 224)
    with torch.no_grad():
        expected = model.forward_features(torch.from_numpy(satmae_input(render_rgb(chips))))[:, 1:].mean(1).numpy()
    out = encoder.encode(chips)
    assert out.shape == (1, 1024)
    np.testing.assert_array_equal(out, expected)
