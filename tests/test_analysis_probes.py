"""The paper's linear-probe protocol and the baseline encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from range_dist.analysis.probes import (
    ProbeEncoder,
    baseline_encoders,
    cartesian3d_features,
    direct_features,
    fit_probe,
    geoclip_available,
    probe_task,
    results_markdown,
    run_probes,
    satclip_encoder,
    split_train_test,
    wrap_features,
    write_results_csv,
)
from range_dist.analysis.tasks import Task, checkerboard_task
from range_dist.encoders.satclip import SatCLIPLocationEncoder
from range_dist.errors import ConfigError


def _task(x: np.ndarray, y: np.ndarray, kind: str = "classification") -> tuple[Task, ProbeEncoder]:
    """A task whose 'locations' are row indices, and an encoder that returns the synthetic features."""
    index = np.stack([np.arange(len(x), dtype=np.float64), np.zeros(len(x))], axis=1)
    return Task("synthetic", kind, index, y), ProbeEncoder("features", lambda p: x[p[:, 0].astype(int)])


def test_separable_task_scores_100_and_random_labels_score_chance() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 5))
    x[:, 0] += np.where(x[:, 0] > 0, 0.5, -0.5)  # a margin
    result = probe_task(*_task(x, (x[:, 0] > 0).astype(int)))
    assert result.metric == "accuracy" and result.score == 1.0
    assert (result.n_train, result.n_test, result.n_classes) == (1200, 300, 2)
    random = probe_task(*_task(x, rng.integers(0, 4, size=1500)))
    assert abs(random.score - 0.25) < 0.07 and abs(random.majority - 0.25) < 0.07


def test_regression_r2() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 4))
    result = probe_task(*_task(x, 3 * x[:, 0] - 2 * x[:, 1] + 0.01 * rng.normal(size=1000), "regression"))
    assert result.metric == "r2" and result.score > 0.999 and result.n_classes == 0
    noise = probe_task(*_task(x, rng.normal(size=1000), "regression"))
    assert noise.score < 0.05


def test_protocol_is_the_papers() -> None:
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import MinMaxScaler

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 6)), rng.integers(0, 3, size=400)
    x[:, 1] += y
    a, b, ya, yb = split_train_test(x, y)
    ea, eb, eya, eyb = train_test_split(x, y, test_size=0.2, random_state=42)
    np.testing.assert_array_equal(a, ea)
    np.testing.assert_array_equal(yb, eyb)
    scaler = MinMaxScaler().fit(ea)
    clf = RidgeClassifierCV(alphas=(0.1, 1, 10), cv=10).fit(scaler.transform(ea), eya)
    score, alpha = fit_probe(a, ya, b, yb)
    assert score == clf.score(scaler.transform(eb), eyb) and alpha == clf.alpha_


def test_baseline_features() -> None:
    pts = np.array([[90.0, 0.0], [-180.0, 45.0]])
    np.testing.assert_array_equal(direct_features(pts), pts)
    np.testing.assert_allclose(cartesian3d_features(pts), [[0, 1, 0], [-np.sqrt(0.5), 0, np.sqrt(0.5)]], atol=1e-12)
    # SatCLIP wrap: (cos lon, sin lon, cos lat, sin lat)
    np.testing.assert_allclose(wrap_features(pts), [[0, 1, 1, 0], [-1, 0, np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-12)


def test_satclip_and_checkerboard_probe(location_encoder: SatCLIPLocationEncoder) -> None:
    enc = satclip_encoder(location_encoder)
    feats = enc.encode(np.array([[0.0, 0.0], [10.0, 20.0]]))
    assert feats.shape == (2, 256)
    task = checkerboard_task(k=16, n_train=600, n_test=300)
    results = run_probes([task], [enc, *baseline_encoders(["cartesian3d"])])
    assert [r.encoder for r in results] == ["satclip", "cartesian3d"]
    assert all(r.n_train == 600 and r.n_test == 300 for r in results)
    assert results[0].score > 0.3  # 16 coarse cells: far above chance (1/16) even for an untrained SIREN


def test_nan_features_are_dropped_and_counted() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    x[:10] = np.nan
    result = probe_task(*_task(x, (x[:, 0] > 0).astype(int)))
    assert result.dropped == 10 and result.n_train + result.n_test == 290


def test_tables_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 2))
    result = probe_task(*_task(x, (x[:, 0] > 0).astype(int)))
    table = results_markdown([result])
    assert table.splitlines()[0].startswith("| task | encoder | metric | score |")
    assert "| synthetic | features | accuracy |" in table
    frame = pd.read_csv(write_results_csv([result], tmp_path / "r.csv"))
    assert frame.loc[0, "score"] == pytest.approx(result.score)
    with pytest.raises(ConfigError, match="unknown baseline 'sincos'"):
        baseline_encoders(["sincos"])
    with pytest.raises(ConfigError, match="the satclip baseline needs a SatCLIP checkpoint: pass --satclip CKPT"):
        baseline_encoders(["satclip"])
    with pytest.raises(ConfigError, match="single class"):
        fit_probe(x[:50], np.zeros(50), x[50:], np.zeros(150))
    if not geoclip_available():
        skipped: list[str] = []
        assert baseline_encoders(["geoclip", "wrap"], skipped=skipped)[0].name == "wrap"
        assert skipped == ["geoclip: skipped, the optional `geoclip` package is not installed"]
        with pytest.raises(ConfigError, match="pip install geoclip"):
            baseline_encoders(["geoclip"])
