"""Self-supervised pose losses of SelfPose3d (paper Eq. 11): L = L_H^attn + lambda * L_J^attn + sigma * l_attn.

3D poses predicted from copy t1 are projected (differentiable, with distortion) into copy t2's pixel
space, rendered as Gaussian heatmaps and compared to t2's pseudo heatmaps under t2's attention maps,
and vice versa; the two directions are averaged.
"""

from __future__ import annotations

import torch

from selfpose3d.config.schema import Config
from selfpose3d.losses.joints import joint_l1_loss
from selfpose3d.losses.render import pseudo_heatmaps, pseudo_in_heatmap_px, render_poses

Pair = tuple[torch.Tensor, torch.Tensor]


def attention_heatmap_loss(attention: torch.Tensor, rendered: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """L_H^attn = mean(A * (H_rendered - H_pseudo)^2); all (B, V, J, h, w). Returns a scalar."""
    if not attention.shape == rendered.shape == pseudo.shape:
        raise ValueError(f"attention_heatmap_loss: shapes differ: attention {tuple(attention.shape)}, "
                         f"rendered {tuple(rendered.shape)}, pseudo {tuple(pseudo.shape)}")
    return (attention * (rendered - pseudo.detach().to(rendered)) ** 2).mean()


def attention_regulariser(attention: torch.Tensor) -> torch.Tensor:
    """l_attn = MSE(A, 1) over attention maps (B, V, J, h, w). Returns a scalar."""
    return ((attention - 1.0) ** 2).mean()


def cross_view_terms(poses: torch.Tensor, valid: torch.Tensor, target_batch: dict, attention: torch.Tensor,
                     pseudo: torch.Tensor, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_H^attn, L_J) for poses predicted on one copy, evaluated in another copy's pixel space.

    poses: (B, K, J, 3) mm; valid: (B, K) bool proposals; target_batch: the other copy's batch (cameras,
    affine, pseudo_2d, pseudo_count); attention, pseudo: (B, V, J, h, w) of the other copy.
    Sizes and sigma come from ``cfg.dataset``. L_J is normalised by the heatmap size (= by image size).
    """
    image_size, heatmap_size = cfg.dataset.image_size, cfg.dataset.heatmap_size
    rendered, pixels = render_poses(poses, valid, target_batch, image_size, heatmap_size,
                                    cfg.dataset.heatmap_sigma_px)
    l_h = attention_heatmap_loss(attention, rendered, pseudo)
    pseudo_px = pseudo_in_heatmap_px(target_batch, image_size, heatmap_size).to(poses.device)
    l_j = joint_l1_loss(pixels, valid, pseudo_px, target_batch["pseudo_count"], heatmap_size)
    return l_h, l_j


def self_supervised_pose_loss(poses: Pair, valid: Pair, batches: tuple[dict, dict], attention: Pair,
                              pseudo: Pair | None, cfg: Config, epoch: int) -> dict[str, torch.Tensor]:
    """Paper Eq. 11 on the two augmented copies (t1, t2), symmetrised.

    poses: (poses_t1, poses_t2) each (B, K, J, 3) mm; valid: each (B, K) bool (valid proposals);
    batches: (batch_t1, batch_t2); attention: (A_t1, A_t2) each (B, V, J, h, w) in [0, 1] predicted on
    that copy's images; pseudo: (H_t1, H_t2) pseudo heatmaps (B, V, J, h, w) or None to render them from
    the batches. ``cfg.loss`` gives joint_lambda, attn_sigma, joint_lambda_start_epoch; lambda is 0 while
    ``epoch < joint_lambda_start_epoch``. Returns {"l_h_attn", "l_attn", "l_j_attn", "total"} (scalars;
    the three terms unweighted, total = l_h_attn + lambda * l_j_attn + sigma * l_attn).
    """
    if pseudo is None:
        pseudo = tuple(pseudo_heatmaps(b, cfg.dataset.image_size, cfg.dataset.heatmap_size,
                                       cfg.dataset.heatmap_sigma_px).to(a)
                       for b, a in zip(batches, attention, strict=True))
    h12, j12 = cross_view_terms(poses[0], valid[0], batches[1], attention[1], pseudo[1], cfg)
    h21, j21 = cross_view_terms(poses[1], valid[1], batches[0], attention[0], pseudo[0], cfg)
    l_h = (h12 + h21) / 2
    l_j = (j12 + j21) / 2
    l_attn = (attention_regulariser(attention[0]) + attention_regulariser(attention[1])) / 2
    lam = cfg.loss.joint_lambda if epoch >= cfg.loss.joint_lambda_start_epoch else 0.0
    total = l_h + lam * l_j + cfg.loss.attn_sigma * l_attn
    return {"l_h_attn": l_h, "l_attn": l_attn, "l_j_attn": l_j, "total": total}
