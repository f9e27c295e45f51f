"""Image encoders that make the database rows: SatCLIP image encoder (KEYS) and SatMAE (VALUES).

* SatCLIP image encoder: a timm ``vit_small_patch16_224``, ``resnet18`` or ``resnet50`` with
  ``in_chans=13`` and a head to 256, read from ``model.visual.*`` of the published Lightning
  checkpoint. Input: 13 bands B01..B12 (L2A has no B10: a zero band at index 10), reflectance
  (DN / 10000 after the radiometry step), centre crop 224, no mean/std.
* SatMAE ViT-L/16 fMoW-RGB (non-temporal MAE pretrain) as a timm ``VisionTransformer`` read from a
  ``.pth`` holding ``{'model': state_dict}`` or a safetensors file (decoder keys ignored). Input:
  the project's RGB rendering (:func:`render_rgb`), ImageNet normalisation, centre crop 224.
  Embedding: mean of the 196 patch tokens after the final LayerNorm (CLS excluded), 1024-d.

The registry (:data:`IMAGE_ENCODERS`) carries bands, input size, dimension and normalisation;
the same description is written into the database so a mismatched encoder fails fast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from range_dist.encoders.checkpoints import _read_checkpoint, load_torch_file, read_safetensors
from range_dist.errors import CheckpointError, ConfigError

SATCLIP_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                                  "B11", "B12")
RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: RGB rendering: reflectance 0..RGB_MAX_REFLECTANCE maps linearly to 0..255, clipped, 8-bit.
RGB_MAX_REFLECTANCE = 0.3
RGB_RENDERING = (f"B04,B03,B02 reflectance / {RGB_MAX_REFLECTANCE} clipped to [0, 1], quantised to 8 bits "
                 "(round(x*255)/255), as a true-colour JPEG-like image")


@dataclass(frozen=True)
class ImageEncoderSpec:
    """A registered image encoder.

    Attributes:
        name: registry name (``--key-encoder`` / ``--value-encoder``).
        role: ``key`` (SatCLIP, matches the location encoder) or ``value`` (SatMAE).
        architecture: timm architecture name.
        bands: input bands, in order.
        input_size: side of the centre crop fed to the model (pixels).
        dim: embedding width.
        normalisation: how pixels become model input.
        checkpoint: the published checkpoint layout it loads.
    """

    name: str
    role: Literal["key", "value"]
    architecture: str
    bands: tuple[str, ...]
    input_size: int
    dim: int
    normalisation: str
    checkpoint: str

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["bands"] = list(self.bands)
        return out


_SATCLIP_NORM = "reflectance (DN - offset) / 10000, zero band B10 inserted, centre crop 224, no mean/std"
_SATCLIP_CKPT = "SatCLIP Lightning .ckpt, model.visual.* (timm)"
IMAGE_ENCODERS: dict[str, ImageEncoderSpec] = {
    spec.name: spec
    for spec in (
        ImageEncoderSpec("satclip-vit16", "key", "vit_small_patch16_224", SATCLIP_BANDS, 224, 256, _SATCLIP_NORM,
                         _SATCLIP_CKPT),
        ImageEncoderSpec("satclip-resnet18", "key", "resnet18", SATCLIP_BANDS, 224, 256, _SATCLIP_NORM, _SATCLIP_CKPT),
        ImageEncoderSpec("satclip-resnet50", "key", "resnet50", SATCLIP_BANDS, 224, 256, _SATCLIP_NORM, _SATCLIP_CKPT),
        ImageEncoderSpec("satmae-vitl16-fmow-rgb", "value", "vit_large_patch16 (SatMAE MAE encoder)", RGB_BANDS, 224,
                         1024, f"{RGB_RENDERING}; ImageNet mean/std; centre crop 224; mean of patch tokens after "
                         "the final LayerNorm", ".pth {'model': state_dict} or .safetensors (timm keys)"),
    )
}
_VISION_LAYERS = {"moco_vit16": "satclip-vit16", "moco_resnet18": "satclip-resnet18",
                  "moco_resnet50": "satclip-resnet50"}


def get_spec(name: str) -> ImageEncoderSpec:
    """The registry entry ``name``.

    Raises:
        ConfigError: unknown name (the known ones are listed).
    """
    if name not in IMAGE_ENCODERS:
        raise ConfigError(f"image encoder {name!r} is not known; choose one of {sorted(IMAGE_ENCODERS)}")
    return IMAGE_ENCODERS[name]


# ---------------------------------------------------------------------------- preprocessing (pure)
def centre_crop(arr: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    """Centre crop of the last two axes to ``size`` (upstream's torchvision CenterCrop rounding)."""
    h, w = arr.shape[-2:]
    if h < size or w < size:
        raise ConfigError(f"chip of {h}x{w} px is smaller than the encoder input {size}px; use --chip-size >= {size}")
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return arr[..., top : top + size, left : left + size]


def satclip_input(reflectance: npt.NDArray[np.float32], size: int = 224) -> npt.NDArray[np.float32]:
    """(N, 12, H, W) L2A reflectance -> (N, 13, size, size) SatCLIP input (zero B10 at index 10)."""
    refl = np.asarray(reflectance, dtype=np.float32)
    zeros = np.zeros_like(refl[:, :1])
    stacked = np.concatenate([refl[:, :10], zeros, refl[:, 10:]], axis=1)
    return np.ascontiguousarray(centre_crop(stacked, size))


def render_rgb(reflectance: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(N, 12, H, W) L2A reflectance -> (N, 3, H, W) RGB in [0, 1] (see :data:`RGB_RENDERING`)."""
    rgb = np.asarray(reflectance, dtype=np.float32)[:, [3, 2, 1]]
    scaled = np.clip(rgb / RGB_MAX_REFLECTANCE, 0.0, 1.0)
    return (np.round(scaled * 255.0) / 255.0).astype(np.float32)


def satmae_input(rgb: npt.NDArray[np.float32], size: int = 224) -> npt.NDArray[np.float32]:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 3, size, size) ImageNet-normalised centre crop."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[None, :, None, None]
    return np.ascontiguousarray((centre_crop(np.asarray(rgb, np.float32), size) - mean) / std)


# ---------------------------------------------------------------------------- SatCLIP image encoder
def build_satclip_visual(architecture: str, embed_dim: int = 256, in_chans: int = 13) -> nn.Module:
    """The timm model SatCLIP wraps (random weights; no download)."""
    import timm

    return timm.create_model(architecture, pretrained=False, in_chans=in_chans, num_classes=embed_dim)


class SatCLIPImageEncoder(nn.Module):
    """SatCLIP's image encoder: reflectance chips -> (N, 256) KEY embeddings."""

    def __init__(self, spec: ImageEncoderSpec, visual: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    @torch.no_grad()
    def encode(self, reflectance: npt.NDArray[np.float32], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """(N, 12, H, W) reflectance -> (N, dim) float32."""
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(reflectance), batch_size):
            x = torch.from_numpy(satclip_input(reflectance[start : start + batch_size], self.spec.input_size))
            out.append(self(x.to(device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.spec.dim), np.float32)


def load_satclip_image_encoder(path: str | Path, device: str | torch.device = "cpu", *,
                               trust: bool = False) -> SatCLIPImageEncoder:
    """Load the SatCLIP image encoder from ``model.visual.*`` of a Lightning checkpoint.

    The architecture comes from the ``vision_layers`` hyper-parameter (``moco_vit16`` ->
    ``vit_small_patch16_224``, ``moco_resnet18``, ``moco_resnet50``). ``trust``: load a file that
    needs arbitrary pickle (``--trust-checkpoint``), see :func:`~range_dist.encoders.checkpoints.load_torch_file`.

    Raises:
        CheckpointError: missing, unreadable or untrusted file, no ``model.visual.*`` keys, unknown
            ``vision_layers`` or keys / shapes that do not match the architecture (named).
    """
    path = Path(path)
    checkpoint = _read_checkpoint(path, trust=trust)
    state, hparams = checkpoint.state, checkpoint.hparams
    visual = {k[len("model.visual."):]: v for k, v in state.items() if k.startswith("model.visual.")}
    if not visual:
        raise CheckpointError(f"{path}: no 'model.visual.*' keys; the SatCLIP image encoder needs the full Lightning "
                              "checkpoint (e.g. satclip-vit16-l40.ckpt), not a location-only file")
    layers = str(hparams.get("vision_layers", "moco_vit16"))
    if layers not in _VISION_LAYERS:
        raise CheckpointError(f"{path}: vision_layers={layers!r} is not supported; "
                              f"expected one of {sorted(_VISION_LAYERS)}")
    spec = IMAGE_ENCODERS[_VISION_LAYERS[layers]]
    in_chans = int(hparams.get("in_channels", 13))
    if in_chans != 13:
        raise CheckpointError(f"{path}: in_channels={in_chans}; the SatCLIP image encoder takes 13 Sentinel-2 bands")
    model = build_satclip_visual(spec.architecture, int(hparams.get("embed_dim", spec.dim)), in_chans)
    _load_strict(model, visual, path, "model.visual.")
    encoder = SatCLIPImageEncoder(spec, model).eval()
    return encoder.to(device)


# ---------------------------------------------------------------------------- SatMAE
@dataclass(frozen=True)
class SatMAEConfig:
    """SatMAE encoder shape (ViT-L/16 by default; smaller shapes only for tests)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 16
    img_size: int = 224
    in_chans: int = 3


def build_satmae(config: SatMAEConfig = SatMAEConfig()) -> nn.Module:
    """A timm VisionTransformer with SatMAE's encoder layout (qkv bias, LayerNorm eps 1e-6, MLP ×4)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=config.img_size, patch_size=config.patch_size, in_chans=config.in_chans,
                             embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
                             mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0)


def sincos_pos_embed(embed_dim: int, grid_size: int, cls_token: bool = True) -> npt.NDArray[np.float32]:
    """MAE's fixed 2-D sin-cos position table, with a zero row for CLS: (1 + grid², dim)."""
    def one_d(dim: int, pos: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_w, grid_h = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))
    emb = np.concatenate([one_d(embed_dim // 2, grid_w), one_d(embed_dim // 2, grid_h)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return emb.astype(np.float32)


class SatMAEEncoder(nn.Module):
    """SatMAE's encoder: RGB chips -> (N, 1024) VALUE embeddings (mean patch token after the final norm)."""

    def __init__(self, model: nn.Module, spec: ImageEncoderSpec = IMAGE_ENCODERS["satmae-vitl16-fmow-rgb"]) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)  # type: ignore[operator]  # (N, 1 + P, D) after the final norm
        return tokens[:, 1:].mean(dim=1)

    @torch.no_grad()
    def encode(self, reflectance: npt.NDArray[np.float32], batch_size: int = 16) -> npt.NDArray[np.float32]:
        """(N, 12, H, W) reflectance -> (N, dim) float32 through :func:`render_rgb`."""
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(reflectance), batch_size):
            rgb = render_rgb(reflectance[start : start + batch_size])
            x = torch.from_numpy(satmae_input(rgb, self.spec.input_size))
            out.append(self(x.to(device)).float().cpu().numpy())
        dim = int(self.model.embed_dim)  # type: ignore[arg-type]
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def _read_satmae_state(path: Path, *, trust: bool = False) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"SatMAE checkpoint {path} does not exist (the fMoW-RGB ViT-L/16 pretrain .pth)")
    if path.suffix == ".safetensors":
        return read_safetensors(path, "SatMAE checkpoint")[0]
    raw = load_torch_file(path, trust=trust, what="SatMAE checkpoint")
    if isinstance(raw, Mapping) and "model" in raw:
        raw = raw["model"]
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected {{'model': state_dict}}, got {type(raw).__name__}")
    return dict(raw)


def load_satmae_encoder(path: str | Path, device: str | torch.device = "cpu", *, trust: bool = False) -> SatMAEEncoder:
    """Load SatMAE's encoder from ``.pth`` (``{'model': state_dict}``) or safetensors.

    The shape (width, depth) is read from the tensors (heads = width / 64, as ViT-L/16); decoder
    keys (``decoder_*``, ``mask_token``) are ignored. ``trust``: load a file that needs arbitrary
    pickle (``--trust-checkpoint``), see :func:`~range_dist.encoders.checkpoints.load_torch_file`.

    Raises:
        CheckpointError: missing, unreadable or untrusted file, missing or mis-shaped keys (named
            with shapes).
    """
    path = Path(path)
    state = _read_satmae_state(path, trust=trust)
    state = {k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token"))}
    if "patch_embed.proj.weight" not in state:
        raise CheckpointError(f"{path}: missing 'patch_embed.proj.weight'; not a SatMAE/MAE ViT checkpoint "
                              f"(keys e.g. {list(state)[:4]})")
    proj = state["patch_embed.proj.weight"]
    dim, in_chans, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    n_patches = int(state["pos_embed"].shape[1]) - 1 if "pos_embed" in state else (224 // patch) ** 2
    config = SatMAEConfig(embed_dim=dim, depth=depth, num_heads=max(1, dim // 64), patch_size=patch,
                          img_size=math.isqrt(n_patches) * patch, in_chans=in_chans)
    model = build_satmae(config)
    _load_strict(model, state, path, "")
    return SatMAEEncoder(model).eval().to(device)


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, prefix: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {[prefix + k for k in missing[:4]]} (expected shape "
                              f"{tuple(expected[missing[0]].shape)} for the first)")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: key {prefix + key!r} has shape {tuple(state[key].shape)}, expected "
                                  f"{tuple(tensor.shape)}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key(s) {[prefix + k for k in unexpected[:4]]} for this architecture")
    model.load_state_dict({k: v.float() for k, v in state.items()})


def save_satmae_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write a SatMAE-layout checkpoint: ``.pth`` ``{'model': state_dict, 'epoch': ..., 'args': Namespace}`` (as
    upstream's ``util/misc.py save_model``) or ``.safetensors``."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        dim = int(state["cls_token"].shape[-1])
        state["mask_token"] = torch.zeros(1, 1, 512)  # decoder keys the loader must ignore
        state["decoder_embed.weight"] = torch.zeros(512, dim)
        args = argparse.Namespace(model="mae_vit_large_patch16", model_type=None, input_size=224, patch_size=16,
                                  mask_ratio=0.75, dataset_type="rgb", output_dir="./output_dir", epochs=800)
        torch.save({"model": state, "epoch": 799, "args": args}, path)


def load_image_encoder(name: str, path: str | Path, device: str | torch.device = "cpu", *,
                       trust: bool = False) -> nn.Module:
    """Load a registered encoder by name, checking the checkpoint gives that architecture.

    ``trust``: load a file that needs arbitrary pickle (``--trust-checkpoint``); without it such a
    file is refused.

    Raises:
        ConfigError: unknown name. CheckpointError: unreadable or untrusted file, or the checkpoint
            is another architecture.
    """
    spec = get_spec(name)
    if spec.role == "value":
        return load_satmae_encoder(path, device, trust=trust)
    encoder = load_satclip_image_encoder(path, device, trust=trust)
    if encoder.spec.name != name:
        raise CheckpointError(f"{path}: the checkpoint holds {encoder.spec.name} ({encoder.spec.architecture}), "
                              f"not {name}; pass --key-encoder {encoder.spec.name}")
    return encoder
