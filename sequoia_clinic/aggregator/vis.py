"""The SEQUOIA ViS aggregator: a linear-cost SummaryMixing transformer over the 100 cluster tokens.

Written from the equations (SEQUOIA paper and sequoia-pub src/tformer_lin.py); module and parameter names reproduce the
published checkpoints ``gevaertlab/sequoia-<cancer>-<fold>`` exactly, so their ``model.safetensors`` loads
with ``strict=True`` (1,013 tensors, 53,762,388 parameters at the published config). For each head:

    local   l_i = GELU(LN_f(W_f h_i + b_f))
    summary s   = GELU(LN_s(mean_i(W_s h_i + b_s)))          (one vector shared by every token)
    output  o_i = GELU(W_c [l_i ; s] + b_c)

A block concatenates the heads, projects back to the input width and adds the residual, then applies a
pre-norm feed-forward (hidden width = input width) with a residual. The model adds a learned positional
embedding per cluster row, runs ``depth`` blocks, mean-pools the tokens and applies LayerNorm + Linear.
There is no output activation (predictions can be negative). GELU is exact; LayerNorm eps is 1e-5.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from sequoia_clinic.aggregator.configs import VisConfig


class SummaryMixing(nn.Module):
    """One SummaryMixing head (attribute names as in the published checkpoints)."""

    def __init__(self, input_dim: int, dimensions_f: int, dimensions_s: int, dimensions_c: int) -> None:
        super().__init__()
        self.local_norm = nn.LayerNorm(dimensions_f)
        self.summary_norm = nn.LayerNorm(dimensions_s)
        self.s = nn.Linear(input_dim, dimensions_s)
        self.f = nn.Linear(input_dim, dimensions_f)
        self.c = nn.Linear(dimensions_s + dimensions_f, dimensions_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, D)
        local = nn.functional.gelu(self.local_norm(self.f(x)))
        summary = nn.functional.gelu(self.summary_norm(self.s(x).mean(dim=1)))  # (B, S)
        summary = summary.unsqueeze(1).expand(-1, x.shape[1], -1)
        return nn.functional.gelu(self.c(torch.cat([local, summary], dim=-1)))


class MultiHeadSummary(nn.Module):
    def __init__(self, nheads: int, input_dim: int, dim_f: int, dim_s: int, dim_c: int) -> None:
        super().__init__()
        self.mixers = nn.ModuleList([SummaryMixing(input_dim, dim_f, dim_s, dim_c) for _ in range(nheads)])
        self.projection = nn.Linear(nheads * dim_c, input_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(torch.cat([mixer(x) for mixer in self.mixers], dim=-1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SummaryTransformer(nn.Module):
    def __init__(self, config: VisConfig) -> None:
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    MultiHeadSummary(c.nheads, c.input_dim, c.dimensions_f, c.dimensions_s, c.dimensions_c),
                    FeedForward(c.input_dim, c.input_dim),
                ]
            )
            for _ in range(c.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            mixer, feed_forward = cast(nn.ModuleList, layer)
            x = mixer(x) + x
            x = feed_forward(x) + x
        return x


class ViS(nn.Module):
    """SEQUOIA's ViS: (B, num_clusters, input_dim) cluster features → (B, num_outputs) expression."""

    def __init__(self, config: VisConfig) -> None:
        super().__init__()
        self.config = config
        self.pos_emb1D = nn.Parameter(torch.empty(config.num_clusters, config.input_dim))
        if not self.pos_emb1D.is_meta:  # the values torch.randn would give; a meta tensor is never drawn
            nn.init.normal_(self.pos_emb1D)  # (normal_ on meta imports sympy: 0.5-2 s of every run)
        self.transformer = SummaryTransformer(config)
        self.linear_head = nn.Sequential(
            nn.LayerNorm(config.input_dim), nn.Linear(config.input_dim, config.num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.config.num_clusters, self.config.input_dim)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"ViS expects (B, {expected[0]}, {expected[1]}) input, got {tuple(x.shape)}")
        x = self.transformer(x + self.pos_emb1D)
        return self.linear_head(x.mean(dim=1))


def build_vis(config: VisConfig, meta: bool = False) -> ViS:
    """A ViS in eval mode; on the meta device (no memory, no init) when ``meta``, for strict loading."""
    if meta:
        with torch.device("meta"):
            return ViS(config).eval()
    return ViS(config).eval()
