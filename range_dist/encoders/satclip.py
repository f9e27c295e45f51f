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

from range_dist.encoders.sh_compiled import Factorised
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
        return self.activation(nn.functional.linear(x, self.weight, self.bias))

    def activation(self, out: torch.Tensor) -> torch.Tensor:
        """``sin(w0 * out)``, or ``out`` for the last layer; in place unless an autograd graph holds ``out``."""
        if self.is_last:
            return out
        if out.requires_grad:  # a caller's autograd graph (e.g. gradients in the weights) needs sin's input
            return torch.sin(self.w0 * out)
        # in place: the same operations and bits as ``sin(w0 * out)``, without two more (N, dim_out) buffers
        return out.mul_(self.w0).sin_()


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
        lonlat = lonlat.to(device=self.nnet.last_layer.weight.device, dtype=torch.float64)
        first: SirenLayer | None = self.nnet.layers[0] if len(self.nnet.layers) else None  # type: ignore[assignment]
        # autograd (a caller's gradients in the location or the weights) takes the dense path: the factorised
        # product writes into preallocated blocks, which autograd does not follow
        graph = torch.is_grad_enabled() and (lonlat.requires_grad or any(p.requires_grad for p in self.parameters()))
        dense = first is None or first.weight.dtype != torch.float64 or graph
        parts = None if dense else self.posenc.factorised(lonlat)
        if parts is None or first is None:
            features = self.posenc(lonlat)
            return self.nnet(features.to(self.nnet.last_layer.weight.dtype))
        # points sharing latitudes (grid tiles, lattices): the first layer from the harmonics' factors
        hidden = first.activation(factorised_linear(parts, first.weight, first.bias))
        # the other layers in row blocks: each block's activations come back from the heap already mapped,
        # where a whole call's (67 MB apiece at 16,384 points and width 512, above glibc's largest mmap
        # threshold, 32 MB) were fresh pages each time; the rows are independent, so the bits are the same
        out = torch.empty((hidden.shape[0], self.config.embed_dim), dtype=hidden.dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], MLP_BLOCK_ROWS):
            x = hidden[start : start + MLP_BLOCK_ROWS]
            for layer in self.nnet.layers[1:]:
                x = layer(x)
            out[start : start + MLP_BLOCK_ROWS] = self.nnet.last_layer(x)
        return out


#: Rows per block of the SIREN's layers after the first (:meth:`SatCLIPLocationEncoder.forward`): 16 MB of
#: float64 activations at width 512. A 0.1° tile's SatCLIP calls (65k points in calls of 16,384, L = 40, width
#: 512) page-faulted 2.0-2.1 GB in 1.6-2.2 s with whole-call layers and the activation out of place, 0.5 GB in
#: 1.15-1.3 s with these blocks and in place; the same bits.
MLP_BLOCK_ROWS = 4096


#: Bytes of the per-latitude partial products that :func:`factorised_linear` holds at once.
FACTORISED_BLOCK_BYTES = 32 * 2**20


def factorised_linear(parts: Factorised, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``features @ weight.T + bias`` for features given as a latitude part times a longitude part.

    A feature ``k`` of point ``p`` is ``lat[a, k] * lon[o, group[k]]`` (``a``, ``o``: the point's latitude and
    longitude rows), so ``Σ_k W[:, k] * feature = Σ_g lon[o, g] * C[a, g]`` with ``C[a, g] = Σ_{k in g} W[:, k]
    * lat[a, k]``: the (F = L²)-wide product per point becomes a G-wide one (G = 2L - 1 longitude columns,
    79 against 1600 at L = 40) plus F-wide work once per latitude. Equal to the dense product within float64
    rounding (the terms are summed in another order); why by hand: no library contracts a separable
    feature table.

    Args:
        parts: the features of N points (:meth:`SphericalHarmonics.factorised`).
        weight: (H, F) float64.
        bias: (H,) float64.

    Returns:
        (N, H) float64.
    """
    lat, lon, group = parts.lat, parts.lon, parts.group
    hidden, columns = weight.shape[0], lon.shape[1]
    by_group = torch.argsort(group, stable=True)  # each longitude column's features, contiguous
    ends = torch.cumsum(torch.bincount(group, minlength=columns), 0).tolist()
    weight_sorted = weight.index_select(1, by_group)
    order = torch.argsort(parts.lat_index, stable=True)  # the points by latitude
    counts = torch.bincount(parts.lat_index, minlength=lat.shape[0]).tolist()
    lon_rows = lon.index_select(0, parts.lon_index.index_select(0, order))  # (N, G), in latitude order
    out_sorted = torch.empty((order.shape[0], hidden), dtype=weight.dtype, device=weight.device)
    per_block = max(1, FACTORISED_BLOCK_BYTES // (columns * hidden * weight.element_size()))
    start = 0
    for first in range(0, lat.shape[0], per_block):
        rows = lat[first : first + per_block].index_select(1, by_group)
        partial = torch.empty((rows.shape[0], columns, hidden), dtype=weight.dtype, device=weight.device)
        for g in range(columns):  # C[a, g] = Σ_{k in g} W[:, k] * lat[a, k]
            low = ends[g - 1] if g else 0
            torch.mm(rows[:, low : ends[g]], weight_sorted[:, low : ends[g]].t(), out=partial[:, g])
        for a in range(rows.shape[0]):  # the points of latitude a: Σ_g lon[o, g] * C[a, g] + bias
            stop = start + counts[first + a]
            if stop > start:
                torch.addmm(bias, lon_rows[start:stop], partial[a], out=out_sorted[start:stop])
            start = stop
    if bool((order[1:] > order[:-1]).all()):  # already in latitude order (a tile's rows): no copy back
        return out_sorted
    out = torch.empty_like(out_sorted)
    out[order] = out_sorted
    return out
