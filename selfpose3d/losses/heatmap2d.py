"""2D heatmap regression loss (keeps heatmap_net_2d trained on pseudo / GT heatmaps)."""

from __future__ import annotations

import torch


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, joint_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between heatmaps.

    pred, target: (B, V, J, h, w); joint_weight: optional (B, V, J) per-heatmap weight (e.g. visibility).
    Returns a scalar (mean over every pixel of every heatmap). The target carries no gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"heatmap_mse: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    sq = (pred - target.detach().to(pred)) ** 2
    if joint_weight is not None:
        sq = sq * joint_weight.to(pred)[..., None, None]
    return sq.mean()
