"""SatCLIP's location encoder: spherical harmonics followed by a SIREN (pure torch, float64).

Parameter names follow upstream (``nnet.layers.{i}.weight``, ``nnet.last_layer.weight``) so that
the ``model.location.*`` part of a released checkpoint loads with a plain ``load_state_dict``.
Why not timm/other libraries: no maintained library implements SatCLIP's SIREN variant, and the
module is ten lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from range_dist.encoders.spherical_harmonics import HarmonicsMode, SphericalHarmonics


@dataclass(frozen=True)
class SatCLIPLocationConfig:
    """Architecture of a SatCLIP location encoder, as in the checkpoint's hyper-parameters.

    Attributes:
        legendre_polys: L, number of Legendre degrees; the SIREN input width is L².
        capacity: hidden width of the SIREN.
        num_hidden_layers: number of sine layers before the linear output layer.
        embed_dim: output width (256 in the released models).
        harmonics: how the spherical harmonics are computed (``published`` reproduces upstream).
        w0_initial: frequency of the first sine layer (30 upstream).
        w0: frequency of the other sine layers (1 upstream).
    """

    legendre_polys: int = 40
    capacity: int = 512
    num_hidden_layers: int = 2
    embed_dim: int = 256
    harmonics: HarmonicsMode = "published"
    w0_initial: float = 30.0
    w0: float = 1.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class SirenLayer(nn.Module):
    """``activation(x @ W.T + b)`` with activation ``sin(w0 * .)``, or identity for the last layer."""

    def __init__(self, dim_in: int, dim_out: int, w0: float = 1.0, is_last: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in))
        self.bias = nn.Parameter(torch.empty(dim_out))
        self.w0 = w0
        self.is_last = is_last
        bound = (1.0 / dim_in) if w0 > 1.0 else (6.0 / dim_in) ** 0.5 / w0  # SIREN initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight, self.bias)
        return out if self.is_last else torch.sin(self.w0 * out)


class SirenNet(nn.Module):
    """Sine layers then a linear output layer (upstream's ``SirenNet`` in evaluation mode)."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, num_layers: int, w0: float, w0_initial: float):
        super().__init__()
        self.layers = nn.ModuleList(
            SirenLayer(dim_in if i == 0 else dim_hidden, dim_hidden, w0_initial if i == 0 else w0)
            for i in range(num_layers)
        )
        self.last_layer = SirenLayer(dim_hidden, dim_out, w0, is_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.last_layer(x)


class SatCLIPLocationEncoder(nn.Module):
    """(N, 2) float64 (lon, lat) degrees -> (N, embed_dim) float64 SatCLIP location embeddings."""

    def __init__(self, config: SatCLIPLocationConfig) -> None:
        super().__init__()
        self.config = config
        #: the label of an untrained sample checkpoint (range_dist.assets), else None; set by the loader
        self.sample_label: str | None = None
        self.posenc = SphericalHarmonics(config.legendre_polys, config.harmonics)
        self.nnet = SirenNet(
            config.legendre_polys**2,
            config.capacity,
            config.embed_dim,
            config.num_hidden_layers,
            config.w0,
            config.w0_initial,
        )
        self.double()
        self.eval()
        self.requires_grad_(False)  # an inference model: no autograd graphs for callers

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        features = self.posenc(lonlat.to(device=self.nnet.last_layer.weight.device, dtype=torch.float64))
        return self.nnet(features.to(self.nnet.last_layer.weight.dtype))
