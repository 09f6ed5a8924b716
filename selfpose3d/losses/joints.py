"""L1 joint loss between projected predicted poses and Hungarian-matched pseudo 2D poses (L_J)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

_BIG_COST = 1e6  # stands in for non-finite matching costs


def zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that stays connected to the graph of every given tensor that requires grad."""
    zero = tensors[0].new_zeros(())
    for tensor in tensors:
        if tensor.requires_grad:
            zero = zero + tensor.sum() * 0.0
    return zero


def _pairwise_l1(pred: torch.Tensor, target: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Normalised per-joint L1 (mean over x, y): pred (N, J, 2), target (M, J, 2) -> (N, M, J)."""
    return ((pred[:, None] - target[None]) / size).abs().mean(-1)


def _view_loss(pred: torch.Tensor, pseudo: torch.Tensor, size: torch.Tensor) -> torch.Tensor | None:
    """Matched L1 of one view: pred (N, J, 2) px, pseudo (M, J, 3) px + conf; None if nothing to match."""
    vis = pseudo[..., 2] > 0
    pseudo, vis = pseudo[vis.any(-1)], vis[vis.any(-1)]
    if pred.shape[0] == 0 or pseudo.shape[0] == 0:
        return None
    dist = _pairwise_l1(pred, pseudo[..., :2], size)  # (N, M, J)
    visf = vis.to(dist.dtype)[None]
    cost = (dist * visf).sum(-1) / visf.sum(-1)
    cost_np = torch.nan_to_num(cost.detach(), nan=_BIG_COST, posinf=_BIG_COST, neginf=_BIG_COST)
    rows, cols = linear_sum_assignment(cost_np.clamp(max=_BIG_COST).cpu().numpy())
    rows_t = torch.as_tensor(rows, device=dist.device)
    cols_t = torch.as_tensor(cols, device=dist.device)
    matched = dist[rows_t, cols_t] * visf[0, cols_t]
    return matched.sum() / visf[0, cols_t].sum()


def _drop_worst(view_losses: list[torch.Tensor]) -> torch.Tensor:
    """Mean of per-view losses without the largest one (kept if it is the only view)."""
    stacked = torch.stack(view_losses)
    if stacked.numel() == 1:
        return stacked[0]
    worst = int(torch.argmax(stacked.detach()))
    keep = torch.ones_like(stacked, dtype=torch.bool)
    keep[worst] = False
    return stacked[keep].mean()


def joint_l1_loss(projected: torch.Tensor, valid: torch.Tensor, pseudo_2d: torch.Tensor,
                  pseudo_count: torch.Tensor, image_size: tuple[int, int],
                  drop_worst_view: bool = True) -> torch.Tensor:
    """Hungarian-matched, visibility-masked L1 between projected predictions and pseudo 2D poses.

    projected: (B, V, K, J, 2) predicted joints in pixels; valid: (B, K) bool valid proposals;
    pseudo_2d: (B, V, P, J, 3) pseudo joints [x, y, conf] in the SAME pixel space (conf > 0 = visible);
    pseudo_count: (B, V) persons per view; image_size: (w, h) of that pixel space (normalises the L1).
    Per view, predictions and pseudo persons are matched on the detached mean L1 cost
    (scipy linear_sum_assignment); the view loss is the mean normalised L1 over matched visible
    joints. Per sample the worst view (largest loss) is dropped when more than one view has matches;
    the result is the mean over samples with any match. Returns a scalar; 0 (connected to
    ``projected``'s graph) if nothing matches.
    """
    size = torch.tensor([float(image_size[0]), float(image_size[1])], dtype=projected.dtype,
                        device=projected.device)
    b, v, p = pseudo_2d.shape[:3]
    present = torch.arange(p, device=pseudo_2d.device) < pseudo_count.to(pseudo_2d.device)[..., None]
    sample_losses = []
    for bi in range(b):
        keep = valid[bi].to(torch.bool)
        views = []
        for vi in range(v):
            loss = _view_loss(projected[bi, vi][keep], pseudo_2d[bi, vi][present[bi, vi]].to(projected), size)
            if loss is not None:
                views.append(loss)
        if views:
            sample_losses.append(_drop_worst(views) if drop_worst_view else torch.stack(views).mean())
    if not sample_losses:
        return zero_like_graph(projected)
    return torch.stack(sample_losses).mean()
