"""Linear probes with the RANGE paper's protocol, and the baseline location encoders.

Protocol (docs/method.md §Evaluation protocol), scikit-learn:

* 80/20 train/test split with ``train_test_split(test_size=0.2, random_state=42)`` unless the task
  brings its own test set (the checkerboard);
* ``MinMaxScaler`` fitted on the training features only, applied to both;
* classification: ``RidgeClassifierCV(alphas=(0.1, 1, 10), cv=10)``, score = test accuracy;
* regression: ``RidgeCV(alphas=(0.1, 1, 10), cv=3)``, score = test R².

Encoders map (N, 2) (lon, lat) degrees to (N, D) features:

* ``direct``: (lon, lat) in degrees as is (SatCLIP's ``direct`` positional encoding);
* ``cartesian3d``: the unit vector (cos lat cos lon, cos lat sin lon, sin lat) (SatCLIP ``cartesian3d``);
* ``wrap``: (cos lon, sin lon, cos lat, sin lat) (SatCLIP ``wrap``, after Mac Aodha et al.);
* ``satclip``: the SatCLIP location embedding alone (256-d, not normalised);
* ``range``: RANGE / RANGE+ embeddings from a :class:`~range_dist.retrieval.encoder.RangeEncoder` at one β;
* ``cube``: RANGE embeddings sampled from a cube at one β (nearest or bilinear);
* ``geoclip``: GeoCLIP's pretrained location encoder (512-d, input (lat, lon)), only when the
  optional ``geoclip`` package is installed.

Rows whose features are not finite (points on NaN cells of a land-only cube) are left out of
that encoder's probe; the result records how many.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from range_dist.errors import ConfigError
from range_dist.geo.coords import lonlat_to_xyz

if TYPE_CHECKING:
    import torch

    from range_dist.analysis.tasks import Task
    from range_dist.retrieval.encoder import RangeEncoder

ALPHAS = (0.1, 1.0, 10.0)
CLASSIFICATION_FOLDS = 10
REGRESSION_FOLDS = 3
TEST_SIZE = 0.2
SPLIT_SEED = 42
BASELINES = ("direct", "cartesian3d", "wrap", "satclip", "geoclip")

EncodeFn = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.floating]]


@dataclass(frozen=True)
class ProbeEncoder:
    """A named location encoder for probing.

    Attributes:
        name: label in result tables (e.g. ``wrap``, ``range+ beta=0.5``).
        encode: (N, 2) float64 (lon, lat) degrees -> (N, D) features.
    """

    name: str
    encode: EncodeFn


@dataclass(frozen=True)
class ProbeResult:
    """One probe: a task, an encoder, a score.

    Attributes:
        task: task name.
        encoder: encoder name.
        metric: ``accuracy`` (classification) or ``r2`` (regression).
        score: test score (accuracy in [0, 1] or R²).
        majority: classification: test accuracy of always predicting the most frequent training
            class (the "chance" level); regression: NaN.
        alpha: ridge penalty chosen by cross-validation.
        dim: feature width.
        n_train: training points used.
        n_test: test points used.
        n_classes: classes in the training set (0 for regression).
        dropped: points left out because their features were not finite.
        seconds: wall time of encoding + fitting.
    """

    task: str
    encoder: str
    metric: str
    score: float
    majority: float
    alpha: float
    dim: int
    n_train: int
    n_test: int
    n_classes: int
    dropped: int
    seconds: float


def split_train_test(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], ...]:
    """The paper's 80/20 split: ``train_test_split(x, y, test_size=0.2, random_state=42)``.

    Returns:
        (x_train, x_test, y_train, y_test).
    """
    from sklearn.model_selection import train_test_split

    return tuple(train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED))


def fit_probe(
    x_train: npt.NDArray[np.floating], y_train: npt.NDArray[Any], x_test: npt.NDArray[np.floating],
    y_test: npt.NDArray[Any], kind: str = "classification",
) -> tuple[float, float]:
    """Fit the paper's linear probe on train and score it on test.

    Args:
        x_train: (N, D) training features.
        y_train: (N,) labels (classification) or targets (regression).
        x_test: (M, D) test features.
        y_test: (M,) labels / targets.
        kind: ``classification`` (RidgeClassifierCV, cv=10, accuracy) or ``regression``
            (RidgeCV, cv=3, R²).

    Returns:
        (score, chosen alpha).

    Raises:
        ConfigError: unknown kind, too few points, or a single class.
    """
    from sklearn.linear_model import RidgeClassifierCV, RidgeCV
    from sklearn.preprocessing import MinMaxScaler

    if kind not in ("classification", "regression"):
        raise ConfigError(f"kind={kind!r}: use 'classification' or 'regression'")
    folds = CLASSIFICATION_FOLDS if kind == "classification" else REGRESSION_FOLDS
    if len(x_train) < folds or len(x_test) < 1:
        raise ConfigError(
            f"{len(x_train)} training and {len(x_test)} test points: the probe needs at least {folds} training "
            "points and one test point; use a larger task size"
        )
    if kind == "classification" and len(np.unique(y_train)) < 2:
        raise ConfigError("the training labels hold a single class; a classification probe needs at least two")
    scaler = MinMaxScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    if kind == "classification":
        import warnings

        clf = RidgeClassifierCV(alphas=ALPHAS, cv=folds)
        with warnings.catch_warnings():
            # "The least populated class in y has only n members, which is less than n_splits=10."
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            clf.fit(a, y_train)
        return float(clf.score(b, y_test)), float(clf.alpha_)
    reg = RidgeCV(alphas=ALPHAS, cv=folds).fit(a, y_train)
    return float(reg.score(b, y_test)), float(reg.alpha_)


def _majority(y_train: npt.NDArray[Any], y_test: npt.NDArray[Any]) -> float:
    values, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(y_test == values[np.argmax(counts)]))


def probe_task(task: Task, encoder: ProbeEncoder) -> ProbeResult:
    """Encode a task's points and run the paper's probe.

    Args:
        task: the task (points, labels, optional explicit test set).
        encoder: the location encoder.

    Returns:
        The :class:`ProbeResult`.
    """
    start = time.perf_counter()
    if task.test_lonlat is None or task.test_labels is None:
        feats = np.asarray(encoder.encode(task.lonlat), dtype=np.float64)
        x_train, x_test, y_train, y_test = split_train_test(feats, task.labels)
    else:
        x_train = np.asarray(encoder.encode(task.lonlat), dtype=np.float64)
        x_test = np.asarray(encoder.encode(task.test_lonlat), dtype=np.float64)
        y_train, y_test = task.labels, task.test_labels
    keep_train, keep_test = np.isfinite(x_train).all(axis=1), np.isfinite(x_test).all(axis=1)
    dropped = int((~keep_train).sum() + (~keep_test).sum())
    x_train, y_train, x_test, y_test = x_train[keep_train], y_train[keep_train], x_test[keep_test], y_test[keep_test]
    score, alpha = fit_probe(x_train, y_train, x_test, y_test, task.kind)
    classification = task.kind == "classification"
    return ProbeResult(
        task=task.name, encoder=encoder.name, metric="accuracy" if classification else "r2", score=score,
        majority=_majority(y_train, y_test) if classification else float("nan"), alpha=alpha,
        dim=int(x_train.shape[1]), n_train=len(x_train), n_test=len(x_test),
        n_classes=len(np.unique(y_train)) if classification else 0, dropped=dropped,
        seconds=time.perf_counter() - start,
    )


def run_probes(tasks: Sequence[Task], encoders: Sequence[ProbeEncoder],
               on_result: Callable[[ProbeResult], None] | None = None) -> list[ProbeResult]:
    """Every encoder on every task (task-major order)."""
    results = []
    for task in tasks:
        for encoder in encoders:
            result = probe_task(task, encoder)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


# ---------------------------------------------------------------------------- encoders
def direct_features(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(N, 2) (lon, lat) degrees, unchanged (SatCLIP ``direct``)."""
    return np.asarray(lonlat, dtype=np.float64).copy()


def cartesian3d_features(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(N, 3) unit vectors (cos lat cos lon, cos lat sin lon, sin lat) (SatCLIP ``cartesian3d``)."""
    return lonlat_to_xyz(np.asarray(lonlat, dtype=np.float64))


def wrap_features(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(N, 4) (cos lon, sin lon, cos lat, sin lat), lon/lat in radians (SatCLIP ``wrap``)."""
    rad = np.radians(np.asarray(lonlat, dtype=np.float64))
    return np.stack([np.cos(rad[:, 0]), np.sin(rad[:, 0]), np.cos(rad[:, 1]), np.sin(rad[:, 1])], axis=1)


def satclip_encoder(location_encoder: torch.nn.Module | str | Path, name: str = "satclip",
                    batch: int = 16384) -> ProbeEncoder:
    """The SatCLIP location embedding alone (raw SIREN output, (N, 256) for the released weights).

    Args:
        location_encoder: a loaded location encoder or a checkpoint path (.ckpt / .safetensors).
        name: label in tables.
        batch: points per forward pass.
    """
    import torch

    from range_dist.encoders.checkpoints import load_satclip_location_encoder

    module = (load_satclip_location_encoder(location_encoder) if isinstance(location_encoder, (str, Path))
              else location_encoder)

    def encode(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = []
        with torch.no_grad():
            for start in range(0, len(lonlat), batch):
                pts = torch.from_numpy(np.ascontiguousarray(lonlat[start : start + batch], dtype=np.float64))
                out.append(module(pts).double().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 0))

    return ProbeEncoder(name, encode)


def range_encoder(encoder: RangeEncoder, beta: float = 0.5, name: str | None = None) -> ProbeEncoder:
    """RANGE / RANGE+ embeddings ``[H_β | q̂]`` computed by a :class:`RangeEncoder` at one β."""
    label = name or (f"{encoder.variant} beta={beta:g}" if encoder.variant == "range+" else encoder.variant)
    return ProbeEncoder(label, lambda lonlat: encoder.encode(lonlat, (beta,))[0])


def cube_encoder(cube: Any, beta: float, method: str = "nearest", name: str | None = None) -> ProbeEncoder:
    """RANGE embeddings sampled from a cube (path or opened dataset) at one β."""
    from range_dist.analysis.cube import _as_dataset, sample_cube, to_numpy

    ds = _as_dataset(cube)
    label = name or f"cube beta={beta:g} ({method})"
    return ProbeEncoder(label, lambda lonlat: to_numpy(sample_cube(ds, lonlat, betas=beta, method=method))[0])


def geoclip_available() -> bool:
    """Whether the optional ``geoclip`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("geoclip") is not None


def geoclip_encoder(name: str = "geoclip", batch: int = 8192) -> ProbeEncoder:
    """GeoCLIP's pretrained location encoder (512-d; GeoCLIP takes (lat, lon), swapped here).

    Raises:
        ConfigError: the optional ``geoclip`` package is not installed.
    """
    if not geoclip_available():
        raise ConfigError("the geoclip baseline needs the optional `geoclip` package (pip install geoclip)")
    import torch
    from geoclip import LocationEncoder

    model = LocationEncoder().eval()  # loads the weights shipped inside the package

    def encode(lonlat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = []
        with torch.no_grad():
            for start in range(0, len(lonlat), batch):
                latlon = torch.from_numpy(np.ascontiguousarray(lonlat[start : start + batch, ::-1], dtype=np.float32))
                out.append(model(latlon).double().numpy())
        return np.concatenate(out)

    return ProbeEncoder(name, encode)


def baseline_encoders(names: Sequence[str], satclip: torch.nn.Module | str | Path | None = None,
                      skipped: list[str] | None = None) -> list[ProbeEncoder]:
    """Baseline encoders by name.

    Args:
        names: any of ``direct``, ``cartesian3d``, ``wrap``, ``satclip``, ``geoclip``.
        satclip: SatCLIP location encoder or checkpoint (needed for ``satclip``).
        skipped: if given, receives one note per baseline that could not be built (geoclip not
            installed) instead of raising.

    Raises:
        ConfigError: an unknown name, ``satclip`` without a checkpoint, or ``geoclip`` missing
            (when ``skipped`` is None).
    """
    out: list[ProbeEncoder] = []
    for name in names:
        if name == "direct":
            out.append(ProbeEncoder("direct", direct_features))
        elif name == "cartesian3d":
            out.append(ProbeEncoder("cartesian3d", cartesian3d_features))
        elif name == "wrap":
            out.append(ProbeEncoder("wrap", wrap_features))
        elif name == "satclip":
            if satclip is None:
                raise ConfigError("the satclip baseline needs a SatCLIP checkpoint: pass --satclip CKPT")
            out.append(satclip_encoder(satclip))
        elif name == "geoclip":
            if not geoclip_available() and skipped is not None:
                skipped.append("geoclip: skipped, the optional `geoclip` package is not installed")
                continue
            out.append(geoclip_encoder())
        else:
            raise ConfigError(f"unknown baseline {name!r}; use any of {', '.join(BASELINES)}")
    return out


# ---------------------------------------------------------------------------- tables
def results_markdown(results: Sequence[ProbeResult]) -> str:
    """A markdown table: task, encoder, metric, score (%, or R²), majority-class level, α, dim, sizes."""
    lines = ["| task | encoder | metric | score | majority | alpha | dim | train | test | classes | dropped |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        score = f"{100 * r.score:.1f} %" if r.metric == "accuracy" else f"{r.score:.3f}"
        majority = f"{100 * r.majority:.1f} %" if r.metric == "accuracy" else "-"
        lines.append(f"| {r.task} | {r.encoder} | {r.metric} | {score} | {majority} | {r.alpha:g} | {r.dim} | "
                     f"{r.n_train} | {r.n_test} | {r.n_classes} | {r.dropped} |")
    return "\n".join(lines)


def write_results_csv(results: Sequence[ProbeResult], path: str | Path) -> Path:
    """One row per probe, the :class:`ProbeResult` fields as columns."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([asdict(r) for r in results]).to_csv(path, index=False)
    return path
