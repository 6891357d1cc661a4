"""The HE2RNA-style MLP baseline (Schmauch et al., Nat Commun 2020), as SEQUOIA evaluates it.

Written from the published description, not from the GPL-3.0 code. Each of the 100 cluster tokens goes
through shared 1x1 convolutions (input → 256 → 256 → genes, ReLU between), giving one score per token and
gene. Tokens whose features are all ≤ 0 are masked out. For a given k, the k highest scores per gene are
summed and divided by the number of unmasked tokens among the first k (a quirk of the reference code,
kept for weight compatibility). In evaluation the prediction is the mean over ks = {1, 2, 5, 10, 20, 50,
100}, followed by ReLU as in SEQUOIA's ``he2rna_predict``. Parameter names (``conv0``, ``conv1``, ...)
match the ``gevaertlab/he2rna-*`` checkpoints; their input is 2048-d ResNet-50 features.
"""

from __future__ import annotations

import torch
from torch import nn

from sequoia_clinic.aggregator.configs import He2rnaConfig


class HE2RNA(nn.Module):
    """(B, num_clusters, input_dim) cluster features → (B, output_dim), evaluation mode only."""

    def __init__(self, config: He2rnaConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.input_dim, *config.layers, config.output_dim]
        for i in range(len(widths) - 1):
            setattr(self, f"conv{i}", nn.Conv1d(widths[i], widths[i + 1], kernel_size=1))
        self.n_layers = len(widths) - 1

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token scores (B, genes, tokens) for channels-first input (B, input_dim, tokens)."""
        for i in range(self.n_layers):
            x = getattr(self, f"conv{i}")(x)
            if i < self.n_layers - 1:
                x = torch.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, D, N)
        mask = (x.amax(dim=1, keepdim=True) > 0).to(x.dtype)  # (B, 1, N)
        scores = self.scores(x) * mask
        prediction = torch.zeros(scores.shape[:2], dtype=scores.dtype, device=scores.device)
        for k in self.config.ks:
            k = min(k, scores.shape[2])
            top, _ = torch.topk(scores, k, dim=2, largest=True, sorted=True)
            denominator = mask[:, :, :k].sum(dim=2).clamp_min(1.0)  # clamp: no NaN for all-masked inputs
            prediction += (top * mask[:, :, :k]).sum(dim=2) / denominator / len(self.config.ks)
        return torch.relu(prediction)


def build_he2rna(config: He2rnaConfig, meta: bool = False) -> HE2RNA:
    if meta:
        with torch.device("meta"):
            return HE2RNA(config).eval()
    return HE2RNA(config).eval()
