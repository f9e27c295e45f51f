"""SatCLIP's first SIREN layer from the harmonics' latitude and longitude factors (grid tiles, lattices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from range_dist.encoders.satclip import SatCLIPLocationConfig, SatCLIPLocationEncoder
from tests.helpers import random_points


def _tile(rows: int, cols: int, step: float, west: float, north: float) -> torch.Tensor:
    lat, lon = np.meshgrid(north - step * np.arange(rows), west + step * np.arange(cols), indexing="ij")
    return torch.from_numpy(np.stack([lon.ravel(), lat.ravel()], axis=1))


@pytest.mark.parametrize("where", [(-179.95, 89.95), (10.05, 25.55), (170.05, -60.05)])
def test_grid_points_give_the_dense_result_within_float64_rounding(where: tuple[float, float]) -> None:
    torch.manual_seed(0)
    encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=40, capacity=48))
    pts = _tile(24, 64, 0.1, *where)
    assert encoder.posenc.factorised(pts) is not None  # the grid path is taken
    dense = encoder.nnet(encoder.posenc(pts))
    ours = encoder(pts)
    assert float(((ours - dense).norm(dim=1) / dense.norm(dim=1)).max()) < 1e-12
    # a land mask keeps some cells of each row: the rows still share latitudes
    kept = pts[torch.arange(len(pts)) % 3 != 0]
    assert float(((encoder(kept) - encoder.nnet(encoder.posenc(kept))).abs()).max()) < 1e-12


def test_calls_of_several_row_blocks_in_either_latitude_order_give_the_dense_result(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from range_dist.encoders import satclip

    monkeypatch.setattr(satclip, "MLP_BLOCK_ROWS", 500)  # 1,536 points: four blocks, the last one partial
    torch.manual_seed(0)
    encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=20, capacity=32, num_hidden_layers=3))
    north_first = _tile(24, 64, 0.1, 10.05, 25.55)
    south_first = north_first.reshape(24, 64, 2).flip(0).reshape(-1, 2)  # already in latitude order: no copy back
    for pts in (north_first, south_first):
        dense = encoder.nnet(encoder.posenc(pts))
        assert float(((encoder(pts) - dense).norm(dim=1) / dense.norm(dim=1)).max()) < 1e-12
    flipped = encoder(north_first).reshape(24, 64, -1).flip(0).reshape(24 * 64, -1)
    assert float((encoder(south_first) - flipped).abs().max()) < 1e-12


def test_gradients_in_the_weights_take_the_dense_path() -> None:
    torch.manual_seed(0)
    encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=16))
    pts = _tile(8, 32, 1.0, 0.5, 40.5)
    factorised = encoder(pts)  # inference: the factorised product, activations in place
    encoder.requires_grad_(True)  # e.g. attribution: autograd needs sin's input and no out= products
    embedded = encoder(pts)
    embedded.sum().backward()
    assert encoder.nnet.layers[1].weight.grad is not None and bool(encoder.nnet.layers[1].weight.grad.abs().sum() > 0)
    assert float((embedded.detach() - factorised).abs().max()) < 1e-12


def test_scattered_points_and_other_harmonics_modes_take_the_dense_path() -> None:
    torch.manual_seed(0)
    encoder = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=16))
    scattered = torch.from_numpy(random_points(300, seed=2))
    assert encoder.posenc.factorised(scattered) is None
    assert torch.equal(encoder(scattered), encoder.nnet(encoder.posenc(scattered)))
    exact = SatCLIPLocationEncoder(SatCLIPLocationConfig(legendre_polys=10, capacity=16, harmonics="exact"))
    assert exact.posenc.factorised(_tile(8, 32, 1.0, 0.5, 40.5)) is None
