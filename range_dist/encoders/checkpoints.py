"""Read and write SatCLIP location-encoder checkpoints in the published formats (I/O edge).

Formats:
* Lightning ``.ckpt`` (``satclip-vit16-l40.ckpt``, ``satclip-resnet50-l10.ckpt``, ...): a pickled
  dict with ``hyper_parameters`` and ``state_dict``; only ``model.location.*`` is read, so the
  image backbone is never built and nothing is downloaded.
* location-only ``.safetensors``: the SIREN weights, with optional string metadata holding the
  hyper-parameters (``legendre_polys``, ...); missing ones are inferred from tensor shapes.

Every torch file (here and in :mod:`range_dist.encoders.image`) is read by :func:`load_torch_file`:
``torch.load(weights_only=True)`` plus the few plain data types of :data:`SAFE_GLOBALS`. A file that
needs anything else is refused with a :class:`CheckpointError`; only ``trust=True``
(``--trust-checkpoint``) loads it as a full pickle, which can run arbitrary code. There is no
silent fallback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import pathlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from range_dist.encoders.spherical_harmonics import HARMONICS_MODES, HarmonicsMode
from range_dist.errors import CheckpointError

_LOG = logging.getLogger(__name__)

_LOCATION_PREFIXES = ("model.location.", "location.", "")
# upstream's names for how the harmonics were computed -> ours
_HARMONICS_BY_UPSTREAM_NAME: dict[str, HarmonicsMode] = {"analytic": "published", "closed-form": "closed-form"}
#: The marker :func:`save_satclip_checkpoint` callers put into sample checkpoints (range_dist.assets).
SAMPLE_MARKER = "range_dist_sample"
#: How the label under :data:`SAMPLE_MARKER` starts for checkpoints that ``range-dist demo`` fitted on its
#: generated world (range_dist.demo.train): trained, but on a synthetic world, not the published model.
DEMO_TRAINED_LABEL = "demo-trained on a synthetic world"

#: Globals ``torch.load(weights_only=True)`` may rebuild besides torch's own defaults (tensors,
#: dtypes, ``collections.OrderedDict`` -- the ``state_dict`` type --, dict/list/tuple/str/numbers).
#: Only plain data holders whose unpickling calls nothing but their own constructor.
#: Deliberately absent: numpy reconstructors (neither published layout holds numpy objects),
#: OmegaConf containers (Hydra; SatCLIP trains with LightningCLI and stores a plain dict) and
#: ``lightning.pytorch.cli.instantiate_module`` (a callable Lightning >= 2.3 puts into hparams).
SAFE_GLOBALS: tuple[type, ...] = (
    # SatMAE / MAE ``.pth`` files keep the training arguments as ``'args': argparse.Namespace``
    # (util/misc.py save_model); Lightning 1.x modules also saved hparams given as a Namespace.
    # Rebuilt with ``__new__`` and a ``__dict__`` update: an attribute bag, no code.
    argparse.Namespace,
    # path-valued settings (hparams such as ``*_data_path``, Lightning callback ``dirpath``)
    # pickle as ``PosixPath(*parts)``: a constructor of strings that touches no file.
    pathlib.PosixPath,
    pathlib.PurePosixPath,
)
TRUST_HINT = "pass --trust-checkpoint only if you know where this file comes from"
# What a trusted full-pickle load raises on a file it cannot read: a truncated zip (RuntimeError), an
# empty or cut pickle (EOFError), an unreadable path (OSError), a pickle it cannot parse
# (UnpicklingError), a class the pickle names that is not importable here (ModuleNotFoundError,
# AttributeError) or text it cannot decode (UnicodeDecodeError, a ValueError)
_UNREADABLE_FULL_PICKLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ImportError, AttributeError,
                           ValueError)
# How the weights-only unpickler says it refused a global (as opposed to bytes it cannot parse)
_REFUSAL_MARKERS = ("unsupported global", "unrecognized function", "can only create new object", "can only build")
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")


def load_torch_file(path: Path, *, trust: bool = False, what: str = "checkpoint") -> Any:
    """``torch.load`` a file safely: ``weights_only=True`` with :data:`SAFE_GLOBALS` allowed.

    Args:
        path: the file.
        trust: if the file needs other globals (arbitrary pickle), load it as a full pickle anyway
            (``--trust-checkpoint``); a warning naming the file is logged.
        what: what the file is, for messages (``SatCLIP checkpoint``, ``SatMAE checkpoint``).

    Raises:
        CheckpointError: the file is truncated / not a torch file, or needs a global outside the
            allow-list and ``trust`` is False (the message names the file, the refused global and
            ``--trust-checkpoint``).
    """
    try:
        with _allow_safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _weights_only_reason(str(exc))
        if not any(marker in reason.lower() for marker in _REFUSAL_MARKERS):
            raise _unreadable(path, what, exc, reason) from exc  # not a pickle at all
        found = _REFUSED_GLOBAL.search(reason)
        refused, refusal = (found.group(1) if found else reason), exc
    # A truncated zip (RuntimeError), an empty or cut pickle (EOFError), an unreadable path (OSError),
    # or bytes the weights-only parser trips over (IndexError, KeyError, ...): that parser calls only
    # allow-listed code, so whatever it raises means "not a loadable torch file".
    except Exception as exc:
        raise _unreadable(path, what, exc, f"{type(exc).__name__}: {exc}") from exc
    if not trust:
        raise CheckpointError(
            f"{what} {path} was not loaded: it needs {refused}, which is not on the allow-list of plain data "
            "types that are safe to unpickle, and loading it as a full pickle can run arbitrary code. "
            f"Re-save it as safetensors, or {TRUST_HINT}."
        ) from refusal
    _LOG.warning("%s: loading %s as a full pickle (--trust-checkpoint); it needs %s", path, what, refused)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except _UNREADABLE_FULL_PICKLE as exc:
        raise _unreadable(path, what, exc, f"{type(exc).__name__}: {exc}") from exc


def _allow_safe_globals() -> contextlib.AbstractContextManager[Any]:
    """:data:`SAFE_GLOBALS` for the duration of one load (torch >= 2.5). Older torch has no scoped
    allow-list: files that need one of them are then refused (fails closed), as any other global."""
    scoped = getattr(torch.serialization, "safe_globals", None)
    return scoped(list(SAFE_GLOBALS)) if scoped is not None else contextlib.nullcontext()


def _weights_only_reason(message: str) -> str:
    """The line of torch's long weights-only message that says what went wrong."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if any(marker in line.lower() for marker in _REFUSAL_MARKERS):
            return line.split(" Please use ")[0]
    label = "WeightsUnpickler error:"
    for i, line in enumerate(lines):  # "... WeightsUnpickler error: <reason>", the reason maybe on the next line
        if label in line:
            tail = line.split(label, 1)[1].strip()
            return tail or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[-1] if lines else "UnpicklingError"


def _unreadable(path: Path, what: str, exc: BaseException, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{what} {path} could not be read as a torch file ({type(exc).__name__}: {reason}). Expected a "
        "Lightning .ckpt, a .pth or a .safetensors file; re-download it if it is truncated."
    )


@dataclass(frozen=True)
class _Checkpoint:
    state: dict[str, torch.Tensor]
    hparams: dict[str, Any]
    sample_label: str | None


def _read_checkpoint(path: Path, *, trust: bool = False) -> _Checkpoint:
    """State dict, hyper-parameters and sample marker of a .ckpt/.pt/.pth or .safetensors file."""
    if not path.exists():
        raise CheckpointError(
            f"SatCLIP checkpoint {path} does not exist. Download the published one with "
            "`range-dist fetch-assets` or write a sample with `range-dist sample-assets DIR`."
        )
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path, "SatCLIP checkpoint")
        label = metadata.pop(SAMPLE_MARKER, None)
        return _Checkpoint(state, dict(metadata), label)
    raw = load_torch_file(path, trust=trust, what="SatCLIP checkpoint")
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected a dict with 'state_dict', got {type(raw).__name__}")
    state = raw.get("state_dict", raw)
    hparams = raw.get("hyper_parameters", {}) or {}
    if not isinstance(state, Mapping) or not isinstance(hparams, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' and 'hyper_parameters' must be dicts, got "
                              f"{type(state).__name__} and {type(hparams).__name__}")
    label = raw.get(SAMPLE_MARKER)
    return _Checkpoint(dict(state), dict(hparams), None if label is None else str(label))


def read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file.

    Raises:
        CheckpointError: not a readable safetensors file (named).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict)
            metadata = dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{what} {path} could not be read as safetensors ({type(exc).__name__}: {exc}); "
                              "re-download it if it is truncated") from exc
    return state, metadata


def _location_state(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The location-encoder tensors, keyed as our module names them (``nnet.layers.0.weight``...)."""
    for prefix in _LOCATION_PREFIXES:
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix + "nnet.")}
        if found:
            return found
    if any(k.startswith("layers.") for k in state):  # bare SIREN weights
        return {"nnet." + k: v for k, v in state.items() if k.startswith(("layers.", "last_layer."))}
    sample = ", ".join(list(state)[:5])
    raise CheckpointError(
        f"{path}: no SatCLIP location-encoder weights found (looked for keys 'model.location.nnet.*', "
        f"'location.nnet.*', 'nnet.*' or 'layers.*'; the file has e.g. {sample}). Is this a SatCLIP "
        "checkpoint?"
    )


def _int_param(hparams: Mapping[str, Any], key: str, inferred: int, path: Path) -> int:
    if key not in hparams:
        return inferred
    try:
        return int(hparams[key])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: hyper-parameter {key}={hparams[key]!r} is not an integer") from exc


def _config_from(
    location: Mapping[str, torch.Tensor], hparams: Mapping[str, Any], path: Path, harmonics: HarmonicsMode | None
) -> SatCLIPLocationConfig:
    first_key, last_key = "nnet.layers.0.weight", "nnet.last_layer.weight"
    for key in (first_key, last_key):
        if key not in location:
            raise CheckpointError(f"{path}: missing key 'model.location.{key}' (SIREN layer weights)")
    first, last = location[first_key], location[last_key]
    num_layers = sum(1 for k in location if k.startswith("nnet.layers.") and k.endswith(".weight"))
    inferred_l = math.isqrt(first.shape[1])
    legendre = _int_param(hparams, "legendre_polys", inferred_l, path)
    if legendre * legendre != first.shape[1]:
        raise CheckpointError(
            f"{path}: legendre_polys={legendre} implies {legendre * legendre} spherical-harmonic "
            f"inputs, but 'model.location.{first_key}' has shape {tuple(first.shape)} "
            f"({first.shape[1]} inputs). The checkpoint is inconsistent or not a SatCLIP L{legendre} model."
        )
    le_type = hparams.get("le_type", "sphericalharmonics")
    pe_type = hparams.get("pe_type", "siren")
    if le_type != "sphericalharmonics" or pe_type != "siren":
        raise CheckpointError(
            f"{path}: le_type={le_type!r}, pe_type={pe_type!r}; only spherical harmonics + SIREN "
            "location encoders (all released SatCLIP models) are supported."
        )
    if harmonics is None:
        upstream = str(hparams.get("harmonics_calculation", "analytic"))
        if upstream not in _HARMONICS_BY_UPSTREAM_NAME and upstream not in HARMONICS_MODES:
            raise CheckpointError(
                f"{path}: harmonics_calculation={upstream!r} is not supported; supported: analytic, closed-form"
            )
        harmonics = _HARMONICS_BY_UPSTREAM_NAME.get(upstream, upstream)  # type: ignore[assignment,arg-type]
    return SatCLIPLocationConfig(
        legendre_polys=legendre,
        capacity=_int_param(hparams, "capacity", first.shape[0], path),
        num_hidden_layers=_int_param(hparams, "num_hidden_layers", num_layers, path),
        embed_dim=_int_param(hparams, "embed_dim", last.shape[0], path),
        harmonics=harmonics,  # type: ignore[arg-type]
    )


def load_satclip_location_encoder(
    path: str | Path,
    harmonics: HarmonicsMode | None = None,
    device: str | torch.device = "cpu",
    *,
    trust: bool = False,
) -> SatCLIPLocationEncoder:
    """Load SatCLIP's location encoder from a published checkpoint, without the image backbone.

    Args:
        path: Lightning ``.ckpt`` (e.g. ``satclip-vit16-l40.ckpt``) or location-only ``.safetensors``.
        harmonics: ``published`` (reproduce upstream), ``exact`` or ``closed-form``; default: what the
            checkpoint was trained with (``analytic`` upstream = ``published``).
        device: torch device for the module.
        trust: load a file that needs arbitrary pickle (``--trust-checkpoint``); see :func:`load_torch_file`.

    Returns:
        An evaluation-mode float64 module; ``forward`` maps (N, 2) (lon, lat) degrees to (N, embed_dim).
        Its ``sample_label`` is the label of an untrained sample checkpoint (range_dist.assets), else None.

    Raises:
        CheckpointError: missing, unreadable or untrusted file (one that needs arbitrary pickle
            without ``trust``), missing or mis-shaped keys (named, with shapes), or an L that does
            not match the first layer.
    """
    path = Path(path)
    checkpoint = _read_checkpoint(path, trust=trust)
    location = _location_state(checkpoint.state, path)
    config = _config_from(location, checkpoint.hparams, path, harmonics)
    encoder = SatCLIPLocationEncoder(config)
    expected = encoder.state_dict()
    for key, tensor in expected.items():
        if key not in location:
            raise CheckpointError(
                f"{path}: missing key 'model.location.{key}' (expected shape {tuple(tensor.shape)}) "
                f"for {config.num_hidden_layers} hidden layers of width {config.capacity}"
            )
        if tuple(location[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: key 'model.location.{key}' has shape {tuple(location[key].shape)}, expected "
                f"{tuple(tensor.shape)} (legendre_polys={config.legendre_polys}, capacity={config.capacity}, "
                f"embed_dim={config.embed_dim})"
            )
    unexpected = sorted(set(location) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{path}: unexpected location-encoder keys {unexpected[:4]}; num_hidden_layers="
            f"{config.num_hidden_layers} in the hyper-parameters may not match the weights"
        )
    encoder.load_state_dict({k: v.to(torch.float64) for k, v in location.items()})
    encoder.sample_label = checkpoint.sample_label
    return encoder.to(device)


def satclip_hyper_parameters(config: SatCLIPLocationConfig, vision_layers: str = "moco_vit16") -> dict[str, Any]:
    """Hyper-parameters as a released SatCLIP Lightning checkpoint stores them."""
    return {
        "embed_dim": config.embed_dim,
        "image_resolution": 224,
        "vision_layers": vision_layers,
        "vision_width": 768,
        "vision_patch_size": 32,
        "in_channels": 13,
        "le_type": "sphericalharmonics",
        "pe_type": "siren",
        "frequency_num": 16,
        "max_radius": 260,
        "min_radius": 1,
        "legendre_polys": config.legendre_polys,
        "harmonics_calculation": {"published": "analytic"}.get(config.harmonics, config.harmonics),
        "sh_embedding_dims": 32,
        "learning_rate": 1e-4,
        "weight_decay": 0.01,
        "num_hidden_layers": config.num_hidden_layers,
        "capacity": config.capacity,
        "eval_downstream": False,
        "air_temp_data_path": None,
        "election_data_path": None,
    }


def save_satclip_checkpoint(
    encoder: SatCLIPLocationEncoder,
    path: str | Path,
    *,
    visual_state: Mapping[str, torch.Tensor] | None = None,
    vision_layers: str = "moco_vit16",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a Lightning checkpoint in the published SatCLIP layout.

    The location weights go under ``model.location.nnet.*`` and, as upstream, again under
    ``model.nnet.*``; ``visual_state`` (image encoder tensors, without prefix) under ``model.visual.*``.
    """
    state: dict[str, torch.Tensor] = {}
    for key, tensor in encoder.state_dict().items():
        state[f"model.location.{key}"] = tensor.detach().to(torch.float32).cpu().clone()
        state[f"model.{key}"] = state[f"model.location.{key}"]
    for key, tensor in (visual_state or {}).items():
        state[f"model.visual.{key}"] = tensor.detach().cpu().clone()
    state["model.logit_scale"] = torch.tensor(math.log(1 / 0.07))
    payload: dict[str, Any] = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": state,
        "hyper_parameters": satclip_hyper_parameters(encoder.config, vision_layers),
    }
    payload.update(extra or {})
    torch.save(payload, Path(path))


def save_location_safetensors(encoder: SatCLIPLocationEncoder, path: str | Path) -> None:
    """Write the location-only safetensors form (SIREN weights + hyper-parameters as metadata)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.float32).cpu().contiguous() for k, v in encoder.state_dict().items()}
    cfg = encoder.config
    metadata = {
        "legendre_polys": str(cfg.legendre_polys),
        "capacity": str(cfg.capacity),
        "num_hidden_layers": str(cfg.num_hidden_layers),
        "embed_dim": str(cfg.embed_dim),
        "harmonics_calculation": {"published": "analytic"}.get(cfg.harmonics, cfg.harmonics),
    }
    save_file(tensors, str(path), metadata=metadata)
