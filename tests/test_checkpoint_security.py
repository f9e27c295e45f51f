"""Checkpoints load as weights only: a pickle that runs code is refused unless trusted explicitly."""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from range_dist.assets import SAMPLE_LABEL, write_sample_assets
from range_dist.encoders.checkpoints import (
    SAFE_GLOBALS,
    load_satclip_location_encoder,
    satclip_hyper_parameters,
    save_location_safetensors,
    save_satclip_checkpoint,
)
from range_dist.encoders.image import (
    SatMAEConfig,
    SatMAEEncoder,
    build_satmae,
    load_image_encoder,
    load_satmae_encoder,
    save_satmae_checkpoint,
)
from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.errors import CheckpointError

SATMAE = "satmae-vitl16-fmow-rgb"


class _TouchViaSystem:
    """Unpickles as ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _TouchViaPath:
    """Unpickles as ``pathlib.Path.touch(MARKER)`` (pickled through ``getattr``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


PAYLOADS = {"os.system": (_TouchViaSystem, "posix.system"), "Path.touch": (_TouchViaPath, "getattr")}


def _location() -> SatCLIPLocationEncoder:
    torch.manual_seed(0)
    return SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=4, capacity=8))


def _small_satmae() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_satmae(SatMAEConfig(embed_dim=64, depth=1, num_heads=1)).eval()


def _malicious_satclip(tmp_path: Path, payload: Any) -> Path:
    """A valid SatCLIP Lightning checkpoint with the payload hidden among the callback states."""
    path = tmp_path / "evil-satclip.ckpt"
    save_satclip_checkpoint(_location(), path, extra={"callbacks": {"ModelCheckpoint": {"x": payload}}})
    return path


def _malicious_satmae(tmp_path: Path, payload: Any) -> Path:
    """A valid SatMAE .pth whose 'args' is the payload."""
    path = tmp_path / "evil-satmae.pth"
    state = {k: v.contiguous() for k, v in _small_satmae().state_dict().items()}
    torch.save({"model": state, "epoch": 799, "args": payload}, path)
    return path


LOADERS: dict[str, tuple[Callable[[Path, Any], Path], Callable[..., object]]] = {
    "satclip-location": (_malicious_satclip, lambda p, **kw: load_satclip_location_encoder(p, **kw)),
    "satclip-image": (_malicious_satclip, lambda p, **kw: load_image_encoder("satclip-vit16", p, **kw)),
    "satmae-image": (_malicious_satmae, lambda p, **kw: load_image_encoder(SATMAE, p, **kw)),
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_code_running_checkpoint_is_refused(tmp_path: Path, payload: str, loader: str) -> None:
    marker = tmp_path / "PWNED"
    cls, refused = PAYLOADS[payload]
    write, load = LOADERS[loader]
    path = write(tmp_path, cls(marker))
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "--trust-checkpoint" in message and refused in message
    assert "only if you know where this file comes from" in message
    assert not marker.exists()  # the payload never ran


@pytest.mark.parametrize("loader", ["satclip-location", "satmae-image"])
def test_trust_is_the_only_door(tmp_path: Path, loader: str, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "PWNED"
    write, load = LOADERS[loader]
    path = write(tmp_path, _TouchViaPath(marker))
    with pytest.raises(CheckpointError):
        load(path, trust=False)
    assert not marker.exists()
    with caplog.at_level(logging.WARNING, logger="range_dist.encoders.checkpoints"):
        load(path, trust=True)  # the full pickle: the payload runs, as the flag warns
    assert marker.exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "full pickle" in warnings[0]


def test_trust_on_a_safe_file_is_no_full_pickle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "plain.ckpt"
    save_satclip_checkpoint(_location(), path)
    with caplog.at_level(logging.WARNING, logger="range_dist.encoders.checkpoints"):
        load_satclip_location_encoder(path, trust=True)
    assert not caplog.records


def _lightning_extras(encoder: SatCLIPLocationEncoder, tmp_path: Path) -> dict[str, Any]:
    """The rest of a Lightning 2.x checkpoint (LightningCLI + ModelCheckpoint + AdamW, as SatCLIP's main.py)."""
    hparams = satclip_hyper_parameters(encoder.config)
    hparams["air_temp_data_path"] = tmp_path / "air_temp.csv"  # a path-valued hyper-parameter
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-4, weight_decay=0.01)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    best = str(tmp_path / "checkpoints" / "epoch=499-step=1000.ckpt")
    return {
        "epoch": 499,
        "global_step": 1000,
        "pytorch-lightning_version": "2.1.0",
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": {"data_dir": "/data/s2-100k", "batch_size": 8, "num_workers": 6,
                                        "crop_size": 256, "val_random_split_fraction": 0.1,
                                        "transform": "pretrained", "mode": "both"},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0}": {
            "monitor": "val_loss", "best_model_score": torch.tensor(1.5), "best_model_path": best,
            "current_score": torch.tensor(1.6), "dirpath": str(tmp_path / "checkpoints"),
            "best_k_models": {best: torch.tensor(1.5)}, "kth_best_model_path": best,
            "kth_value": torch.tensor(1.5), "last_model_path": ""}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 500, "completed": 499}},
                               "epoch_loop.state_dict": {"_batches_that_stepped": 1000}}},
    }


def test_published_lightning_layout_loads_without_trust(tmp_path: Path) -> None:
    encoder = _location()
    path = tmp_path / "satclip-vit16-l40.ckpt"
    save_satclip_checkpoint(encoder, path, extra=_lightning_extras(encoder, tmp_path))
    loaded = load_satclip_location_encoder(path)
    assert loaded.config == encoder.config and loaded.sample_label is None
    assert SAFE_GLOBALS  # the allow-list is scoped to the load, not registered process-wide
    registered = torch.serialization.get_safe_globals()
    assert not any(g in registered for g in SAFE_GLOBALS)


def test_satmae_pth_with_namespace_args_loads_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "satmae.pth"
    save_satmae_checkpoint(_small_satmae(), path)
    raw = torch.load(path, weights_only=False)
    assert isinstance(raw["args"], argparse.Namespace)  # as upstream's util/misc.py save_model
    for encoder in (load_satmae_encoder(path), load_image_encoder(SATMAE, path)):
        assert isinstance(encoder, SatMAEEncoder)
        blocks = encoder.model.blocks
        assert isinstance(blocks, torch.nn.Sequential) and len(blocks) == 1


def _broken_files(tmp_path: Path) -> list[Path]:
    good = tmp_path / "good.ckpt"
    save_satclip_checkpoint(_location(), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.ckpt"
    text.write_text("this is a text file, not a checkpoint\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_text("not safetensors either")
    return [truncated, text, empty, bad_st]


@pytest.mark.parametrize("loader", ["location", "satclip-image", "satmae"])
@pytest.mark.parametrize("trust", [False, True])
def test_unreadable_file_is_a_named_error(tmp_path: Path, loader: str, trust: bool) -> None:
    load: dict[str, Callable[..., object]] = {
        "location": load_satclip_location_encoder,
        "satclip-image": lambda p, **kw: load_image_encoder("satclip-vit16", p, **kw),
        "satmae": lambda p, **kw: load_image_encoder(SATMAE, p, **kw),
    }
    for path in _broken_files(tmp_path):
        with pytest.raises(CheckpointError, match="could not be read") as info:  # trust changes nothing here
            load[loader](path, trust=trust)
        assert str(path) in str(info.value)


def test_sample_label_marks_sample_checkpoints_only(tmp_path: Path) -> None:
    paths = write_sample_assets(tmp_path / "sample", rows=20, legendre_polys=4, capacity=8)
    assert load_satclip_location_encoder(paths.checkpoint).sample_label == SAMPLE_LABEL
    plain = tmp_path / "plain.ckpt"
    save_satclip_checkpoint(_location(), plain)
    assert load_satclip_location_encoder(plain).sample_label is None
    st = tmp_path / "loc.safetensors"
    save_location_safetensors(_location(), st)
    assert load_satclip_location_encoder(st).sample_label is None
    assert SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=2, capacity=4)).sample_label is None
