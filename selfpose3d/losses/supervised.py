"""Fully supervised VoxelPose baseline losses from 3D ground truth (the paper's comparison row)."""

from __future__ import annotations

import torch

from selfpose3d.config.schema import Config, SpaceConfig
from selfpose3d.losses.heatmap2d import heatmap_mse
from selfpose3d.losses.joints import zero_like_graph
from selfpose3d.losses.render import render_poses
from selfpose3d.losses.roots import gaussian_volume_target


def gt_person_mask(batch: dict) -> torch.Tensor:
    """(B, M) bool: GT person slot m is a real person (m < gt_count)."""
    m = batch["gt_3d"].shape[1]
    count = batch["gt_count"].to(batch["gt_3d"].device)
    return torch.arange(m, device=count.device) < count[:, None]


def gt_heatmaps(batch: dict, image_size: tuple[int, int], heatmap_size: tuple[int, int],
                sigma: float) -> torch.Tensor:
    """GT heatmaps (B, V, J, h, w) rendered from projected GT 3D joints (visible joints of real persons).

    batch: gt_3d (B, M, J, 3) mm, gt_vis (B, M, J), gt_count (B,), cameras and affine; sigma in heatmap px.
    """
    weights = batch["gt_vis"].to(torch.bool) & gt_person_mask(batch)[..., None]
    heatmaps, _ = render_poses(batch["gt_3d"].float(), weights, batch, image_size, heatmap_size, sigma)
    return heatmaps


def supervised_heatmap_loss(pred: torch.Tensor, batch: dict, cfg: Config) -> torch.Tensor:
    """2D MSE of predicted heatmaps (B, V, J, h, w) to `gt_heatmaps` (sizes and sigma from cfg.dataset)."""
    target = gt_heatmaps(batch, cfg.dataset.image_size, cfg.dataset.heatmap_size, cfg.dataset.heatmap_sigma_px)
    return heatmap_mse(pred, target.to(pred))


def gt_root_target(batch: dict, grid: torch.Tensor | SpaceConfig, sigma_mm: float, root_joint: int) -> torch.Tensor:
    """3D Gaussian target (B, X, Y, Z) at the GT mid-hip (joint ``root_joint``) of every real person."""
    mask = gt_person_mask(batch) & batch["gt_vis"][..., root_joint].to(torch.bool)
    return gaussian_volume_target(batch["gt_3d"][:, :, root_joint].float(), mask, grid, sigma_mm)


def supervised_root_loss(volume: torch.Tensor, batch: dict, cfg: Config,
                         grid: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of root_net's volume (B, X, Y, Z) to the GT mid-hip Gaussian target over ``cfg.model.root_space``
    (grid: its voxel centres (X, Y, Z, 3) mm, default the space's linspace grid)."""
    target = gt_root_target(batch, cfg.model.root_space if grid is None else grid,
                            cfg.loss.root_target_sigma_mm, cfg.model.root_joint)
    if volume.shape != target.shape:
        raise ValueError(f"supervised_root_loss: volume shape {tuple(volume.shape)} != target {tuple(target.shape)}")
    return ((volume - target.to(volume)) ** 2).mean()


def match_proposals_to_gt(roots_mm: torch.Tensor, batch: dict, root_joint: int, radius_mm: float) -> torch.Tensor:
    """Index (B, K) long of the nearest real GT person's root within ``radius_mm`` of each proposal root
    (B, K, 3) mm, or -1. Several proposals may match the same person (as in VoxelPose)."""
    gt_roots = batch["gt_3d"][:, :, root_joint].to(roots_mm)  # (B, M, 3)
    dist = torch.cdist(roots_mm.detach(), gt_roots)  # (B, K, M)
    dist = dist.masked_fill(~gt_person_mask(batch).to(roots_mm.device)[:, None], float("inf"))
    if dist.shape[-1] == 0:
        return torch.full(roots_mm.shape[:2], -1, dtype=torch.long, device=roots_mm.device)
    best, index = dist.min(dim=-1)
    return torch.where(best <= radius_mm, index, torch.full_like(index, -1))


def supervised_pose_loss(poses: torch.Tensor, proposals: torch.Tensor, batch: dict, root_joint: int,
                         radius_mm: float, proposal_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 (mm) between predicted poses (B, K, J, 3) and their matched GT over visible GT joints.

    proposals: (B, K, 5) [x, y, z, score, valid]; each proposal is matched to the nearest GT root within
    ``radius_mm``; proposal_mask: optional (B, K) bool restricting which proposals are trained (default:
    all matched ones, as VoxelPose does in training). Returns 0 (with grad) if nothing matches.
    """
    index = match_proposals_to_gt(proposals[..., :3], batch, root_joint, radius_mm)
    matched = index >= 0
    if proposal_mask is not None:
        matched = matched & proposal_mask.to(matched.device)
    if not bool(matched.any()):
        return zero_like_graph(poses)
    bi, ki = torch.nonzero(matched, as_tuple=True)
    gt = batch["gt_3d"].to(poses)[bi, index[bi, ki]]  # (N, J, 3)
    vis = batch["gt_vis"].to(poses.device)[bi, index[bi, ki]].to(poses.dtype)  # (N, J)
    if float(vis.sum()) == 0:
        return zero_like_graph(poses)
    err = (poses[bi, ki] - gt).abs().mean(-1)  # (N, J)
    return (err * vis).sum() / vis.sum()


def supervised_losses(outputs: dict, batch: dict, cfg: Config) -> dict[str, torch.Tensor]:
    """VoxelPose baseline terms from model outputs (keys heatmaps, root_volume, proposals, poses; any may
    be missing). Returns {"l_2d", "l_root", "l_pose"} for the present outputs plus "total" (sum, with
    ``cfg.loss.heatmap_2d_weight`` on l_2d)."""
    terms: dict[str, torch.Tensor] = {}
    if "heatmaps" in outputs:
        terms["l_2d"] = supervised_heatmap_loss(outputs["heatmaps"], batch, cfg)
    if "root_volume" in outputs:
        terms["l_root"] = supervised_root_loss(outputs["root_volume"], batch, cfg)
    if "poses" in outputs and "proposals" in outputs:
        terms["l_pose"] = supervised_pose_loss(outputs["poses"], outputs["proposals"], batch,
                                               cfg.model.root_joint, cfg.loss.supervised_match_mm)
    if not terms:
        raise ValueError("supervised_losses: outputs has none of heatmaps, root_volume, poses+proposals")
    total = sum(v * (cfg.loss.heatmap_2d_weight if k == "l_2d" else 1.0) for k, v in terms.items())
    terms["total"] = total
    return terms
