"""HL-Gauss values ("Stop Regressing", Farebrother et al. 2024): each member's Q as a
categorical over fixed bins, trained by cross-entropy against a Gaussian-smoothed target.

Bins. Eq. 14 pays −1 per step, 0 at a success and −C_fail at a failure, so every return
lies in [−(C_fail + 1/(1 − γ)), 0]: at most 1/(1 − γ) from the steps, C_fail from one
failure. The bins span that range (`support_bounds`); it is loose by up to γ^T/(1 − γ) for a
time limit T (the reachable minimum needs T of the acting party, which collection varies),
and a target outside it is clipped to the edge bin.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def support_bounds(c_fail: float, gamma: float) -> tuple[float, float]:
    """(v_min, v_max) of every return under Eq. 14: (−(C_fail + 1/(1 − γ)), 0)."""
    return -(c_fail + 1.0 / (1.0 - gamma)), 0.0


class HLGauss(nn.Module):
    """Fixed bins over [v_min, v_max]: logits (..., O) -> Q (...), and targets y -> probs."""

    edges: Tensor
    centers: Tensor

    def __init__(self, num_bins: int, v_min: float, v_max: float, sigma_bins: float) -> None:
        """`sigma_bins`: the smoothing Gaussian's std in bin widths (the paper's 0.75)."""
        super().__init__()
        if not v_min < v_max:
            raise ValueError(f"HL-Gauss bins need v_min < v_max, got {v_min} and {v_max}")
        edges = torch.linspace(v_min, v_max, num_bins + 1)
        self.register_buffer("edges", edges)
        self.register_buffer("centers", (edges[1:] + edges[:-1]) / 2)
        self.sigma_bins = sigma_bins

    @property
    def sigma(self) -> float:
        """The smoothing std in return units (from the bins, which a checkpoint restores)."""
        return self.sigma_bins * float(self.edges[1] - self.edges[0])

    @property
    def num_bins(self) -> int:
        return int(self.centers.numel())

    def value(self, logits: Tensor) -> Tensor:
        """Q = Σ_i softmax(logits)_i · centre_i: (..., O) -> (...)."""
        return (logits.softmax(-1) * self.centers).sum(-1)

    def target_probs(self, y: Tensor) -> Tensor:
        """The bin probabilities of N(y, σ²) restricted to the support: (...) -> (..., O),
        p_i = (Φ((e_{i+1} − y)/σ) − Φ((e_i − y)/σ)) / (Φ((e_O − y)/σ) − Φ((e_0 − y)/σ))."""
        y = y.clamp(float(self.edges[0]), float(self.edges[-1]))[..., None]
        cdf = torch.special.ndtr((self.edges - y) / self.sigma)
        return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])

    def cross_entropy(self, logits: Tensor, y: Tensor) -> Tensor:
        """−Σ_i p_i(y) log softmax(logits)_i, per element: (..., O), (...) -> (...)."""
        return -(self.target_probs(y.detach()) * logits.log_softmax(-1)).sum(-1)

    def extra_repr(self) -> str:
        lo = float(self.edges[0])
        hi = float(self.edges[-1])
        return f"bins={self.num_bins}, range=[{lo:g}, {hi:g}], sigma={self.sigma:.3g}"
