"""Tests for selfpose3d/losses, part 2: the self-supervised pose loss (Eq. 11), empty inputs, the supervised
baseline, and a key-evidence optimisation showing the reprojection-heatmap loss alone recovers 3D poses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_helpers import DIST, add_pseudo, make_batch, num, ring_cameras, skeleton, tiny_cfg

from selfpose3d.config.schema import Config, SpaceConfig
from selfpose3d.losses import (
    gt_heatmaps,
    joint_l1_loss,
    project_to_heatmap,
    pseudo_heatmaps,
    render_root_heatmaps,
    self_supervised_pose_loss,
    space_grid,
    supervised_pose_loss,
    supervised_root_loss,
    synthetic_root_loss,
)

# ---------------------------------------------------------------- self-supervised pose loss


def _two_copies(cams, cfg, poses):
    b1 = add_pseudo(make_batch(cams, cfg.dataset.image_size, [30.0, -20.0, 10.0], [1.1, 0.9, 1.0]), cams, poses)
    b2 = add_pseudo(make_batch(cams, cfg.dataset.image_size, [-35.0, 15.0, 0.0], [0.85, 1.15, 1.0]), cams, poses)
    return b1, b2


def test_self_supervised_loss_zero_at_gt_and_lambda_schedule():
    cfg = tiny_cfg()
    cfg.loss.joint_lambda_start_epoch = 2
    cams = ring_cameras(3)
    gt = np.stack([skeleton((-900, 0)), skeleton((900, 300), 1.0)])
    b1, b2 = _two_copies(cams, cfg, gt)
    attn = torch.ones(1, 3, 15, 32, 48)
    poses = torch.tensor(gt, dtype=torch.float32)[None]
    valid = torch.ones(1, 2, dtype=torch.bool)
    at_gt = self_supervised_pose_loss((poses, poses), (valid, valid), (b1, b2), (attn, attn), None, cfg, 5)
    assert num(at_gt["l_h_attn"]) < 1e-6 and num(at_gt["l_j_attn"]) < 1e-4 and num(at_gt["l_attn"]) == 0
    moved = (poses + torch.tensor([80.0, 0.0, 0.0])).requires_grad_()
    early = self_supervised_pose_loss((moved, moved), (valid, valid), (b1, b2), (attn, attn), None, cfg, 0)
    late = self_supervised_pose_loss((moved, moved), (valid, valid), (b1, b2), (attn, attn), None, cfg, 2)
    assert num(early["l_h_attn"]) > 100 * num(at_gt["l_h_attn"]) + 1e-5 and num(early["l_j_attn"]) > 1e-3
    assert torch.allclose(early["total"], early["l_h_attn"])
    assert torch.allclose(late["total"], late["l_h_attn"] + cfg.loss.joint_lambda * late["l_j_attn"])
    late["total"].backward()
    assert num(moved.grad[..., 0].sum()) > 0  # descent moves the poses back toward -x


def test_invalid_proposals_with_garbage_do_not_leak_nan():
    cfg = tiny_cfg()
    cams = ring_cameras(3)
    gt = skeleton()[None]
    b1, b2 = _two_copies(cams, cfg, gt)
    poses = torch.tensor(np.concatenate([gt, np.full_like(gt, np.nan)]), dtype=torch.float32)[None]
    poses.requires_grad_()
    valid = torch.tensor([[True, False]])
    attn = torch.ones(1, 3, 15, 32, 48)
    out = self_supervised_pose_loss((poses, poses), (valid, valid), (b1, b2), (attn, attn), None, cfg, 5)
    out["total"].backward()
    assert all(bool(torch.isfinite(v)) for v in out.values()) and bool(torch.isfinite(poses.grad).all())
    assert num(out["l_h_attn"]) < 1e-6


def test_empty_inputs_give_finite_zero_losses_with_grad():
    cfg = tiny_cfg()
    cams = ring_cameras(2)
    b1, b2 = _two_copies(cams[:2] + [cams[0]], cfg, np.zeros((1, 15, 3)))
    for b in (b1, b2):
        b["pseudo_2d"].zero_()
        b["pseudo_count"].zero_()
    poses = torch.zeros(1, 2, 15, 3, requires_grad=True)
    attn = torch.full((1, 3, 15, 32, 48), 0.5, requires_grad=True)
    none = torch.zeros(1, 2, dtype=torch.bool)
    out = self_supervised_pose_loss((poses, poses), (none, none), (b1, b2), (attn, attn), None, cfg, 10)
    assert all(bool(torch.isfinite(v)) for v in out.values())
    assert num(out["l_h_attn"]) == 0 and num(out["l_j_attn"]) == 0
    out["total"].backward()
    assert poses.grad is not None and bool(torch.isfinite(poses.grad).all())
    # supervised baseline with no GT people
    b1["gt_3d"] = torch.zeros(1, 4, 15, 3)
    b1["gt_vis"] = torch.zeros(1, 4, 15, dtype=torch.bool)
    b1["gt_count"] = torch.zeros(1, dtype=torch.long)
    proposals = torch.zeros(1, 2, 5)
    l_pose = supervised_pose_loss(poses, proposals, b1, 2, 500.0)
    assert num(l_pose) == 0 and l_pose.requires_grad
    assert num(gt_heatmaps(b1, (192, 128), (48, 32), 2.0).abs().max()) == 0
    vol = torch.zeros(1, 16, 16, 4, requires_grad=True)
    assert num(supervised_root_loss(vol, b1, cfg)) == 0.0
    joint = joint_l1_loss(torch.zeros(1, 2, 0, 15, 2, requires_grad=True), torch.zeros(1, 0, dtype=torch.bool),
                          torch.zeros(1, 2, 0, 15, 3), torch.zeros(1, 2, dtype=torch.long), (48, 32))
    assert num(joint) == 0 and joint.requires_grad


# ---------------------------------------------------------------- supervised baseline


def test_supervised_pose_loss_matches_by_root_distance_and_masks_invisible():
    gt = torch.tensor(np.stack([skeleton((-900, 0)), skeleton((900, 0))]), dtype=torch.float32)
    batch = {"gt_3d": gt[None], "gt_vis": torch.ones(1, 2, 15, dtype=torch.bool), "gt_count": torch.tensor([2])}
    batch["gt_vis"][0, 1, 5] = False
    poses = gt[None].flip(1).clone()  # proposal 0 near GT 1, proposal 1 near GT 0
    poses[0, 0, 5] += 1000.0  # error only on an invisible joint
    poses[0, 1] += torch.tensor([0.0, 0.0, 30.0])
    poses = torch.cat([poses, poses[:, :1] + 3000.0], dim=1).requires_grad_()  # proposal 2: far away
    proposals = torch.zeros(1, 3, 5)
    proposals[..., :3] = poses.detach()[:, :, 2]
    loss = supervised_pose_loss(poses, proposals, batch, root_joint=2, radius_mm=500.0)
    expected = (30.0 / 3) * 15 / (15 + 14)  # 30 mm z error on 15 visible joints of person 0, 0 on person 1
    assert abs(num(loss) - expected) < 1e-3
    loss.backward()
    assert poses.grad[0, 2].abs().sum() == 0 and poses.grad[0, 0, 5].abs().sum() == 0


def test_gt_heatmaps_skip_invisible_joints():
    cams = ring_cameras(2)
    batch = make_batch(cams, (192, 128))
    batch["gt_3d"] = torch.tensor(skeleton(), dtype=torch.float32)[None, None]
    batch["gt_vis"] = torch.ones(1, 1, 15, dtype=torch.bool)
    batch["gt_vis"][0, 0, 7] = False
    batch["gt_count"] = torch.tensor([1])
    hms = gt_heatmaps(batch, (192, 128), (48, 32), 2.0)
    assert num(hms[0, :, 7].max()) == 0 and bool((hms[0, :, 0].amax(dim=(-1, -2)) > 0.9).all())


# ---------------------------------------------------------------- key evidence


def _fit_free_poses(batches, pseudo, cfg: Config, gt_t: torch.Tensor, steps: int) -> tuple[float, float]:
    """Adam on free 3D joints initialised ~200 mm (RMS) from GT; returns (start, end) MPJPE in mm."""
    noise = torch.randn(gt_t.shape, generator=torch.Generator().manual_seed(7)) * (200.0 / np.sqrt(3))
    poses = (gt_t + noise).requires_grad_()
    v = batches[0]["K"].shape[1]
    attn = torch.ones(1, v, 15, cfg.dataset.heatmap_size[1], cfg.dataset.heatmap_size[0])
    valid = torch.ones(1, gt_t.shape[1], dtype=torch.bool)
    opt = torch.optim.Adam([poses], lr=8.0)
    start = num((poses.detach() - gt_t).norm(dim=-1).mean())
    for _ in range(steps):
        out = self_supervised_pose_loss((poses, poses), (valid, valid), batches, (attn, attn), pseudo, cfg, 0)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    return start, num((poses.detach() - gt_t).norm(dim=-1).mean())


@pytest.mark.parametrize("labels", ["oracle", "noisy"])
def test_key_evidence_heatmap_loss_alone_recovers_3d_poses(labels: str):
    """Free 3D joints (2 people) start ~200 mm from GT; 5 distorted cameras, two augmented copies;
    pseudo heatmaps from GT ("oracle") or from GT keypoints with 4 px jitter and 10 % missing joints
    ("noisy"). Adam on the reprojection-heatmap loss only (A = 1, lambda = sigma = 0)."""
    cfg = Config()
    cfg.dataset.image_size, cfg.dataset.heatmap_size, cfg.dataset.heatmap_sigma_px = (480, 256), (120, 64), 2.0
    cfg.loss.joint_lambda, cfg.loss.attn_sigma = 0.0, 0.0
    cams = ring_cameras(5, dist=DIST)
    gt = np.stack([skeleton((-1000, 0), 0.3), skeleton((1000, 600), 2.0)])
    b1 = add_pseudo(make_batch(cams, cfg.dataset.image_size, [20.0, -30, 0, 10, 40], [1.1, 0.9, 1, 1, 1.05]), cams, gt)
    b2 = add_pseudo(make_batch(cams, cfg.dataset.image_size, [-25.0, 15, 35, 0, -10], [0.9, 1.1, 1, 1.05, 1]), cams, gt)
    if labels == "noisy":
        gen = torch.Generator().manual_seed(11)
        for b in (b1, b2):
            b["pseudo_2d"][..., :2] += 4.0 * torch.randn(b["pseudo_2d"][..., :2].shape, generator=gen)
            b["pseudo_2d"][..., 2] *= (torch.rand(b["pseudo_2d"][..., 2].shape, generator=gen) > 0.1).float()
    pseudo = tuple(pseudo_heatmaps(b, cfg.dataset.image_size, cfg.dataset.heatmap_size, 2.0) for b in (b1, b2))
    start, end = _fit_free_poses((b1, b2), pseudo, cfg, torch.tensor(gt, dtype=torch.float32)[None], 100)
    print(f"key evidence ({labels}): MPJPE {start:.1f} mm -> {end:.3f} mm")
    assert 120.0 < start and end < start / 3


def test_contract_with_models_root_net():
    """Loss-side grid / rendering agree with models/: same voxel centres, and the root_net input volume
    (projection of the rendered synthetic root heatmaps) peaks at the sampled root's voxel."""
    projection = pytest.importorskip("selfpose3d.models.projection")
    root_net_mod = pytest.importorskip("selfpose3d.models.root_net")
    cfg = tiny_cfg()
    cfg.model.root_space = SpaceConfig(voxels=(32, 32, 8))
    cfg.model.v2v_width = 4
    space = cfg.model.root_space
    assert torch.equal(space_grid(space).reshape(-1, 3), projection.grid_points(space.center_mm, space.size_mm, space.voxels))
    net = root_net_mod.RootNet(cfg)
    cams = ring_cameras(4)
    batch = make_batch(cams, cfg.dataset.image_size, [10.0, -25.0, 0.0, 30.0], [1.1, 0.9, 1.0, 1.0])
    roots = torch.tensor([[[700.0, -300.0, 900.0]]])
    heatmaps = render_root_heatmaps(roots, torch.ones(1, 1, dtype=torch.bool), batch, cfg.dataset.image_size,
                                    cfg.dataset.heatmap_size, cfg.dataset.heatmap_sigma_px, 0.0)
    with torch.no_grad():
        volume = net.input_volume(heatmaps, batch)[0, 0]
    grid = space_grid(space)
    # root_net averages over the views that see a voxel: compare among voxels seen by every view
    _, seen = project_to_heatmap(grid.reshape(1, -1, 1, 3), batch, cfg.dataset.image_size, cfg.dataset.heatmap_size)
    volume = torch.where(seen[0].all(0).reshape(volume.shape), volume, torch.zeros_like(volume))
    peak = np.array(np.unravel_index(int(volume.argmax()), volume.shape))
    nearest = np.array(np.unravel_index(int(((grid - roots[0, 0]) ** 2).sum(-1).argmin()), volume.shape))
    assert np.abs(peak - nearest).max() <= 1
    loss = synthetic_root_loss(net.volume_from_heatmaps, batch, cfg, torch.Generator().manual_seed(0))
    loss.backward()
    assert bool(torch.isfinite(loss)) and any(p.grad is not None for p in net.parameters())
