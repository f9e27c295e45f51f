"""The demo's encoders, fitted on its generated world (no download): keys and locations that mean something.

Random-weight encoders see every chip alike, so RANGE's softmax over keys weighs every row the same
and the retrieved part carries nothing. The demo therefore fits, for a fixed number of full-batch
Adam steps on CPU float32 (seeded, deterministic for a given thread count):

* the SatCLIP location encoder (L = 10 spherical harmonics, SIREN of width 256: the published
  ``satclip-resnet18-l10`` layout) and
* the last layer (``fc``, 512 -> 256) of the SatCLIP ResNet-18 image encoder (13 bands; the rest of
  the ResNet keeps its random weights: a fixed random-feature extractor),

with SatCLIP's symmetric CLIP loss (InfoNCE both ways, learnable logit scale) on the pairs
(location, chip at that location) of the demo's own locations. The chips are made in memory by the
same generator that writes the COGs (:func:`range_dist.testing.world.chip_dn`: the very pixels the
database build reads over HTTP), and go through the pipeline's radiometry and SatCLIP input step.

The value encoder stays random: a SatMAE ViT-L/16-layout model with 1 of its 24 blocks (same
width, heads, patch size and 1024-d output: the smallest model in the published layout), a
random-feature embedding of the chip's RGB rendering.

The retrieval itself (τ, β, softmax over all rows) is untouched: only the encoders differ.
Checkpoints are written in the published formats (SatCLIP Lightning ``.ckpt`` with
``model.location.*`` and ``model.visual.*``; SatMAE safetensors), labelled
:data:`~range_dist.encoders.checkpoints.DEMO_TRAINED_LABEL`, so the normal loaders and the
build / grid jobs read them as they would the published ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from range_dist.testing.world import DemoWorld

KEY_CHECKPOINT = "demo-satclip-resnet18-l10.ckpt"
VALUE_CHECKPOINT = "demo-satmae-vitl16-depth{depth}-random.safetensors"
TRAINING_RECORD = "training.json"
KEY_ENCODER = "satclip-resnet18"
KEY_ARCHITECTURE = "resnet18"
VISION_LAYERS = "moco_resnet18"


@dataclass(frozen=True)
class TrainSettings:
    """How the demo fits its encoders.

    Attributes:
        steps: full-batch Adam steps.
        lr: Adam learning rate (location encoder, key head and logit scale).
        weight_decay: AdamW weight decay (SatCLIP's 0.01).
        legendre_polys: L of the location encoder (10: the published L10 models).
        capacity: SIREN width (256 in the published L10 models).
        satmae_depth: blocks of the random SatMAE value model (24 = the full ViT-L/16).
        chip_size: chip side (px) the database build reads (256).
        radiometry: the build's radiometry mode (``faithful``), applied to the training chips too.
        seed: weights, batch order and the value model.
    """

    steps: int = 400
    lr: float = 1e-3
    weight_decay: float = 0.01
    legendre_polys: int = 10
    capacity: int = 256
    satmae_depth: int = 1
    chip_size: int = 256
    radiometry: str = "faithful"
    seed: int = 0


@dataclass(frozen=True)
class TrainReport:
    """What the fit did (written next to the checkpoints as ``training.json``)."""

    pairs: int
    steps: int
    first_loss: float
    final_loss: float
    chance_loss: float
    train_top1: float
    logit_scale: float
    seconds_chips: float
    seconds_fit: float
    signature: str

    def summary(self) -> str:
        return (f"fitted on {self.pairs} (location, chip) pairs, {self.steps} steps: CLIP loss "
                f"{self.first_loss:.2f} -> {self.final_loss:.2f} (chance {self.chance_loss:.2f}), "
                f"location->chip top-1 {self.train_top1:.0%}; chips {self.seconds_chips:.1f} s, "
                f"fit {self.seconds_fit:.1f} s")


def training_signature(world: DemoWorld, settings: TrainSettings) -> str:
    """A digest of everything the checkpoints depend on (world, locations, settings, format)."""
    record = {"world": world.describe(), "lonlat": np.round(world.lonlat, 9).tolist(), "settings": asdict(settings),
              "format": 1}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def chip_reflectance(world: DemoWorld, index: int, settings: TrainSettings) -> npt.NDArray[np.float32]:
    """(12, s, s) float32 reflectance of location ``index``'s chip, as the build's radiometry makes it."""
    from range_dist.chips.radiometry import scene_offset, to_reflectance
    from range_dist.testing.world import chip_dn

    spec = world.scenes[index]
    lon, lat = world.lonlat[index]
    dn, _ = chip_dn(spec, float(lon), float(lat), settings.chip_size)
    return to_reflectance(dn, scene_offset(settings.radiometry, spec.baseline, False))


def backbone_features(world: DemoWorld, backbone: Any, settings: TrainSettings, batch: int = 16) -> Any:
    """(N, 512) float32 tensor: the frozen ResNet-18 features (before ``fc``) of every location's chip."""
    import torch

    from range_dist.encoders.image import satclip_input

    out = []
    with torch.no_grad():
        for start in range(0, len(world.ids), batch):
            refl = np.stack([chip_reflectance(world, i, settings)
                             for i in range(start, min(start + batch, len(world.ids)))])
            out.append(backbone(torch.from_numpy(satclip_input(refl))))
    return torch.cat(out)


def fit_encoders(world: DemoWorld, settings: TrainSettings, log: Callable[[str], None] = lambda s: None) -> tuple[
        Any, Any, TrainReport]:
    """Fit the location encoder and the key head contrastively (see the module docstring).

    Returns:
        (trained :class:`~range_dist.encoders.satclip.SatCLIPLocationEncoder` (float64, eval),
        the timm ResNet-18 with its fitted ``fc`` (eval), the :class:`TrainReport`).
    """
    import torch
    import torch.nn.functional as F

    from range_dist.encoders.image import build_satclip_visual
    from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder

    torch.manual_seed(settings.seed)
    location = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=settings.legendre_polys,
                                                            capacity=settings.capacity, embed_dim=256))
    visual: Any = build_satclip_visual(KEY_ARCHITECTURE).eval()  # timm ResNet (get_classifier / reset_classifier)
    head = visual.get_classifier()
    visual.reset_classifier(0)  # the backbone alone: (N, 512) pooled features
    start = time.perf_counter()
    feats = backbone_features(world, visual, settings)
    seconds_chips = time.perf_counter() - start
    log(f"{len(feats)} chips through the frozen ResNet-18 backbone in {seconds_chips:.1f} s")

    # the harmonics are fixed: compute them once; fit the SIREN (float32 copy) and the head
    harmonics = location.posenc(torch.from_numpy(world.lonlat)).float()
    siren = location.nnet.float().requires_grad_(True).train()
    head = head.float().requires_grad_(True).train()
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*siren.parameters(), *head.parameters(), logit_scale]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    target = torch.arange(len(feats))
    losses: list[float] = []
    start = time.perf_counter()
    threads = torch.get_num_threads()
    # one thread: these ops are tiny, so threads only add synchronisation (10x slower on a busy 2-core machine),
    # and the result is then the same whatever the machine's core count
    torch.set_num_threads(1)
    try:
        losses = _fit_loop(siren, head, logit_scale, optimizer, harmonics, feats, settings.steps, log)
    finally:
        torch.set_num_threads(threads)
    seconds_fit = time.perf_counter() - start
    with torch.no_grad():
        q = F.normalize(siren(harmonics), dim=1)
        k = F.normalize(head(feats), dim=1)
        top1 = float(((q @ k.T).argmax(dim=1) == target).float().mean())
    siren.requires_grad_(False).eval()
    head.requires_grad_(False).eval()
    location.nnet = siren.double()
    visual.fc = head  # back on the backbone: (N, 13, 224, 224) -> (N, 256) keys
    report = TrainReport(pairs=len(feats), steps=settings.steps, first_loss=losses[0] if losses else float("nan"),
                         final_loss=losses[-1] if losses else float("nan"), chance_loss=math.log(len(feats)),
                         train_top1=top1, logit_scale=float(logit_scale.detach().exp()), seconds_chips=seconds_chips,
                         seconds_fit=seconds_fit, signature=training_signature(world, settings))
    return location.eval(), visual.eval(), report


def _fit_loop(siren: Any, head: Any, logit_scale: Any, optimizer: Any, harmonics: Any, feats: Any, steps: int,
              log: Callable[[str], None]) -> list[float]:
    """Full-batch steps of SatCLIP's symmetric CLIP loss; returns the loss of each step."""
    import torch
    import torch.nn.functional as F

    target = torch.arange(len(feats))
    losses: list[float] = []
    for step in range(steps):
        optimizer.zero_grad()
        q = F.normalize(siren(harmonics), dim=1)
        k = F.normalize(head(feats), dim=1)
        logits = logit_scale.clamp(max=math.log(100.0)).exp() * q @ k.T
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}: CLIP loss {losses[-1]:.3f}")
    return losses


def demo_label(settings: TrainSettings, pairs: int) -> str:
    """The label every demo-trained checkpoint, database and cube carries."""
    from range_dist.encoders.checkpoints import DEMO_TRAINED_LABEL

    return (f"{DEMO_TRAINED_LABEL}: SatCLIP location encoder (L={settings.legendre_polys}) and the last layer of "
            f"a ResNet-18 key encoder (other layers random) fitted contrastively on {pairs} generated chips; "
            f"SatMAE value model random ({settings.satmae_depth} of 24 blocks); not the published models")


def write_demo_checkpoints(folder: Path, world: DemoWorld, settings: TrainSettings = TrainSettings(),
                           log: Callable[[str], None] = lambda s: None) -> tuple[Path, Path, dict[str, Any], bool]:
    """Fit and write the demo's checkpoints, or reuse them when ``training.json`` says they match.

    Returns:
        (SatCLIP Lightning .ckpt (location + ResNet-18 key encoder), SatMAE safetensors (float16 storage,
        loaded as float32), the training record, whether they were (re)written now).
    """
    import torch

    from range_dist.encoders.checkpoints import SAMPLE_MARKER, save_satclip_checkpoint
    from range_dist.encoders.image import SatMAEConfig, build_satmae, save_satmae_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    key = folder / KEY_CHECKPOINT
    value = folder / VALUE_CHECKPOINT.format(depth=settings.satmae_depth)
    record_path = folder / TRAINING_RECORD
    signature = training_signature(world, settings)
    if key.exists() and value.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("signature") == signature:
            log(f"reusing the demo-trained checkpoints in {folder} ({record['summary']})")
            return key, value, record, False
    location, visual, report = fit_encoders(world, settings, log)
    label = demo_label(settings, report.pairs)
    # float16 storage halves the key encoder's file; every loader casts to float32 (BatchNorm counters stay int)
    visual_state = {k: (v.half() if v.is_floating_point() else v) for k, v in visual.state_dict().items()}
    tmp = key.with_suffix(".tmp")
    save_satclip_checkpoint(location, tmp, visual_state=visual_state, vision_layers=VISION_LAYERS,
                            extra={SAMPLE_MARKER: label, "range_dist_demo_training": asdict(report)})
    tmp.replace(key)
    torch.manual_seed(settings.seed + 1)
    model = build_satmae(SatMAEConfig(depth=settings.satmae_depth)).half()
    tmp_value = value.with_name(value.name + ".tmp.safetensors")
    save_satmae_checkpoint(model, tmp_value)
    tmp_value.replace(value)
    record = {"signature": signature, "label": label, "summary": report.summary(), "report": asdict(report),
              "settings": asdict(settings), "world": world.describe()}
    record_path.write_text(json.dumps(record, indent=2))
    log(report.summary())
    return key, value, record, True
