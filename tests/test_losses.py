"""Tests for selfpose3d/losses: rendering + projection gradients, attention losses, Hungarian L1,
synthetic-root / consistency losses, supervised baseline, empty inputs, and a key-evidence optimisation
showing the reprojection-heatmap loss alone recovers 3D poses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfpose3d.config.schema import Config, SpaceConfig
from selfpose3d.geometry.cameras import Camera, project_points, stack_cameras
from selfpose3d.geometry.transforms import apply_affine, resize_affine
from selfpose3d.losses import (
    attention_heatmap_loss,
    attention_regulariser,
    gaussian_volume_target,
    gt_heatmaps,
    joint_l1_loss,
    project_to_heatmap,
    pseudo_heatmaps,
    render_heatmaps,
    render_root_heatmaps,
    root_consistency_loss,
    sample_synthetic_roots,
    self_supervised_pose_loss,
    space_grid,
    supervised_pose_loss,
    supervised_root_loss,
    synthetic_root_loss,
)

RES = (1920, 1080)


def num(value) -> float:
    """Python float of a (possibly graph-attached) scalar tensor or number."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)

DIST = np.array([-0.08, 0.02, 0.001, -0.001, 0.0])


def look_at(name: str, position: np.ndarray, target=(0.0, 0.0, 1000.0), focal: float = 1400.0,
            dist: np.ndarray | None = None) -> Camera:
    """OpenCV camera at ``position`` (mm) looking at ``target``, world z up."""
    forward = np.asarray(target, float) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    K = np.array([[focal, 0, RES[0] / 2], [0, focal, RES[1] / 2], [0, 0, 1]])
    return Camera(name=name, K=K, R=R, t=-R @ position, dist=np.zeros(5) if dist is None else dist,
                  resolution=RES)


def ring_cameras(n: int, radius: float = 4500.0, height: float = 2200.0, dist: np.ndarray | None = None):
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.3
    return [look_at(f"c{i}", np.array([radius * np.cos(a), radius * np.sin(a), height]), dist=dist)
            for i, a in enumerate(angles)]


def make_batch(cameras, image_size, rotations=None, scales=None, dtype=torch.float32) -> dict:
    """A B=1 batch dict (cameras + affine) with optional per-view augmentation."""
    v = len(cameras)
    rotations = rotations or [0.0] * v
    scales = scales or [1.0] * v
    cams = stack_cameras(cameras, dtype=dtype)
    affine = np.stack([resize_affine(c.resolution, image_size, r, s)
                       for c, r, s in zip(cameras, rotations, scales, strict=True)])
    batch = {k: cams[k][None] for k in ("K", "R", "t", "dist")}
    batch["affine"] = torch.tensor(affine, dtype=dtype)[None]
    return batch


def add_pseudo(batch: dict, cameras, poses_mm: np.ndarray, conf: np.ndarray | None = None) -> dict:
    """Exact pseudo labels: poses (P, J, 3) projected to original pixels with conf (P, J) (default 1)."""
    pix = np.stack([project_points(poses_mm, c) for c in cameras])  # (V, P, J, 2)
    conf = np.ones(poses_mm.shape[:2]) if conf is None else conf
    conf = np.broadcast_to(conf, pix.shape[:3])
    pseudo = np.concatenate([pix, conf[..., None]], axis=-1)
    batch["pseudo_2d"] = torch.tensor(pseudo, dtype=torch.float32)[None]
    batch["pseudo_count"] = torch.full((1, len(cameras)), poses_mm.shape[0], dtype=torch.long)
    return batch


def skeleton(center_xy=(0.0, 0.0), yaw: float = 0.0) -> np.ndarray:
    """A standing Panoptic-15 skeleton (15, 3) mm at ``center_xy`` facing ``yaw`` radians."""
    local = np.array([
        [0, 0, 1500], [0, 60, 1650], [0, 0, 950], [-200, 0, 1480], [-260, 20, 1200], [-290, 60, 950],
        [-110, 0, 950], [-120, 30, 500], [-120, 0, 80], [200, 0, 1480], [260, 20, 1200], [290, 60, 950],
        [110, 0, 950], [120, 30, 500], [120, 0, 80]], dtype=float)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ rot.T + np.array([center_xy[0], center_xy[1], 0.0])


def tiny_cfg() -> Config:
    cfg = Config()
    cfg.dataset.image_size = (192, 128)
    cfg.dataset.heatmap_size = (48, 32)
    cfg.dataset.heatmap_sigma_px = 2.0
    cfg.model.root_space = SpaceConfig(voxels=(16, 16, 4))
    return cfg


# ---------------------------------------------------------------- rendering


def test_render_gradcheck_wrt_points_and_weights():
    gen = torch.Generator().manual_seed(0)
    pts = (torch.rand(1, 2, 3, 2, generator=gen, dtype=torch.float64) * torch.tensor([7.0, 5.0])).requires_grad_()
    weights = torch.full((1, 2, 3), 0.45, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, w: render_heatmaps(p, w, (8, 6), 1.5), (pts, weights))


def test_project_then_render_gradcheck_with_distortion():
    cams = ring_cameras(2, dist=DIST)
    batch = make_batch(cams, (48, 32), rotations=[20.0, -10.0], scales=[1.1, 0.9], dtype=torch.float64)
    pts = torch.tensor(skeleton()[[0, 2, 5]][None, None], dtype=torch.float64, requires_grad=True)  # (1,1,3,3)

    def path(points):
        pix, _ = project_to_heatmap(points, batch, (48, 32), (12, 8))
        return render_heatmaps(pix, torch.full(pix.shape[:-1], 0.3, dtype=torch.float64), (12, 8), 2.0)

    out = path(pts)
    assert out.shape == (1, 2, 3, 8, 12) and out.sum() > 0.1  # points are drawn inside the small heatmap
    assert torch.autograd.gradcheck(path, (pts,), eps=1e-3, atol=1e-5)


def test_render_peak_is_the_projected_pixel():
    cams = ring_cameras(3, dist=DIST)
    image_size, hm_size = (192, 128), (48, 32)
    batch = make_batch(cams, image_size, rotations=[0.0, 30.0, -15.0], scales=[1.0, 1.2, 0.9])
    point = np.array([[300.0, -200.0, 1100.0]])
    pix, mask = project_to_heatmap(torch.tensor(point, dtype=torch.float32)[None, None], batch, image_size, hm_size)
    assert bool(mask.all())
    hms = render_heatmaps(pix, torch.ones(pix.shape[:-1]), hm_size, 2.0)  # (1, V, 1, h, w)
    for v, cam in enumerate(cams):  # independent numpy path: project -> affine -> scale
        expected = apply_affine(project_points(point, cam), batch["affine"][0, v].double().numpy())[0]
        expected = expected * np.array(hm_size) / np.array(image_size)
        np.testing.assert_allclose(pix[0, v, 0, 0].numpy(), expected, atol=1e-3)
        row, col = divmod(int(hms[0, v, 0].argmax()), hm_size[0])
        assert (col, row) == (round(expected[0]), round(expected[1]))
        assert num(hms[0, v, 0].max()) <= 1.0


def test_pseudo_heatmaps_weight_by_conf_and_ignore_padding():
    cams = ring_cameras(2)
    batch = add_pseudo(make_batch(cams, (192, 128)), cams, np.stack([skeleton((-900, 0)), skeleton((900, 0))]))
    batch["pseudo_2d"][..., 2] = 0.5
    batch["pseudo_2d"][0, :, 0, 4, 2] = 0.0  # person 0's elbow missing
    batch["pseudo_count"][:] = 1  # person 1 is padding
    hms = pseudo_heatmaps(batch, (192, 128), (48, 32), 2.0)
    assert hms.shape == (1, 2, 15, 32, 48)
    peaks = hms[0, :, 0].amax(dim=(-1, -2))
    assert bool((peaks > 0.45).all()) and bool((peaks <= 0.5).all())  # conf 0.5, sub-pixel peak offset
    assert num(hms[0, :, 4].max()) == 0.0
    only_first = add_pseudo(make_batch(cams, (192, 128)), cams, skeleton((-900, 0))[None], conf=0.5)
    only_first["pseudo_2d"][0, :, 0, 4, 2] = 0.0
    assert torch.allclose(hms, pseudo_heatmaps(only_first, (192, 128), (48, 32), 2.0))


# ---------------------------------------------------------------- attention losses


def test_attention_loss_zero_when_equal_and_regulariser_pushes_a_to_one():
    gen = torch.Generator().manual_seed(1)
    h = torch.rand(1, 2, 15, 8, 12, generator=gen)
    attn = (torch.rand(h.shape, generator=gen) * 0.9).requires_grad_()
    l_h = attention_heatmap_loss(attn, h, h.clone())
    assert num(l_h.detach()) == 0.0
    (l_h + 0.1 * attention_regulariser(attn)).backward()
    assert bool((attn.grad < 0).all())  # gradient descent increases every A toward 1
    assert num(attention_regulariser(torch.ones(3))) == 0.0


def _optimise_attention(disagreement: torch.Tensor, sigma: float, steps: int = 400) -> torch.Tensor:
    logits = torch.zeros_like(disagreement, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    rendered = torch.zeros_like(disagreement)
    for _ in range(steps):
        attn = torch.sigmoid(logits)
        loss = attention_heatmap_loss(attn, rendered, disagreement.sqrt()) + sigma * attention_regulariser(attn)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(logits).detach()


def test_small_sigma_collapses_attention_where_heatmaps_disagree():
    # pseudo heatmaps of a noisy detector vs rendered ones: squared differences D spread over (0, 0.3)
    gen = torch.Generator().manual_seed(2)
    disagreement = torch.rand(1, 1, 4, 16, 16, generator=gen) * 0.3
    a_small = _optimise_attention(disagreement, 0.01)
    a_paper = _optimise_attention(disagreement, 0.1)
    # per-pixel optimum of mean(A D) + sigma mean((A-1)^2) is A* = clip(1 - D / (2 sigma), 0, 1)
    for sigma, attn in ((0.01, a_small), (0.1, a_paper)):
        closed = (1 - disagreement / (2 * sigma)).clamp(0, 1)
        assert num((attn - closed).abs().mean()) < 0.05
    assert num(a_small.mean()) < 0.5 * num(a_paper.mean())
    assert num(a_small.mean()) < 0.15  # collapse toward 0 (paper: sigma = 0.01)


# ---------------------------------------------------------------- Hungarian L1


def _joint_problem(seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    projected = torch.rand(1, 3, 3, 15, 2, generator=gen) * torch.tensor([48.0, 32.0])
    pseudo = torch.zeros(1, 3, 4, 15, 3)
    pseudo[..., :2] = torch.rand(1, 3, 4, 15, 2, generator=gen) * torch.tensor([48.0, 32.0])
    pseudo[..., 2] = (torch.rand(1, 3, 4, 15, generator=gen) > 0.2).float()
    return projected, torch.tensor([[True, True, False]]), pseudo, torch.tensor([[4, 3, 2]])


def test_joint_l1_is_permutation_invariant():
    projected, valid, pseudo, count = _joint_problem()
    base = joint_l1_loss(projected, valid, pseudo, count, (48, 32))
    shuffled = pseudo.clone()
    for v, n in enumerate(count[0].tolist()):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(v))
        shuffled[0, v, :n] = pseudo[0, v, perm]
    assert torch.allclose(base, joint_l1_loss(projected, valid, shuffled, count, (48, 32)))
    assert num(base) > 0


def test_joint_l1_drops_the_worst_view():
    gen = torch.Generator().manual_seed(4)
    projected = (torch.rand(1, 4, 2, 15, 2, generator=gen) * 30 + 5).requires_grad_()
    pseudo = torch.ones(1, 4, 2, 15, 3)
    pseudo[..., :2] = projected.detach().flip(2) + torch.tensor([4.0, 0.0])  # persons swapped, 4 px off
    count = torch.full((1, 4), 2)
    valid = torch.ones(1, 2, dtype=torch.bool)
    clean = joint_l1_loss(projected, valid, pseudo, count, (48, 32))
    assert torch.allclose(clean, torch.tensor(4.0 / 48 / 2))  # Hungarian undid the swap
    corrupted = pseudo.clone()
    corrupted[0, 2, :, :, :2] += 60.0
    loss = joint_l1_loss(projected, valid, corrupted, count, (48, 32))
    assert torch.allclose(loss, clean)
    assert num(joint_l1_loss(projected, valid, corrupted, count, (48, 32), drop_worst_view=False).detach()) > num(clean.detach())
    loss.backward()
    assert projected.grad[0, 2].abs().sum() == 0 and projected.grad[0, 0].abs().sum() > 0


# ---------------------------------------------------------------- roots


def test_sampled_roots_and_target_peak_at_the_root_voxel():
    space = SpaceConfig(voxels=(40, 40, 10))
    gen = torch.Generator().manual_seed(5)
    roots, mask = sample_synthetic_roots(4, 3, (space.center_mm, space.size_mm), (500.0, 1200.0), gen)
    assert roots.shape == (4, 3, 3) and bool(mask[:, 0].all())
    assert bool((mask.sum(1) >= 1).all()) and bool((mask.sum(1) <= 3).all())
    z = roots[..., 2][mask]
    assert bool(((z >= 500) & (z <= 1200)).all())
    assert bool((roots[..., 0][mask].abs() <= 4000).all()) and bool(((roots[..., 1][mask] + 500).abs() <= 4000).all())
    grid = space_grid(space)
    target = gaussian_volume_target(roots[:, :1], mask[:, :1], grid, 200.0)
    for b in range(4):
        peak = np.unravel_index(int(target[b].argmax()), target.shape[1:])
        nearest = np.unravel_index(int(((grid - roots[b, 0]) ** 2).sum(-1).argmin()), target.shape[1:])
        assert peak == nearest
        assert 0.5 < num(target[b].max()) <= 1.0
    assert num(gaussian_volume_target(roots, torch.zeros_like(mask), space, 200.0).abs().max()) == 0.0


def test_render_root_heatmaps_peak_at_projection():
    cams = ring_cameras(3)
    batch = make_batch(cams, (192, 128), rotations=[0.0, 25.0, -40.0])
    roots = torch.tensor([[[500.0, 300.0, 900.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    clean = render_root_heatmaps(roots, mask, batch, (192, 128), (48, 32), 2.0, 0.0)
    pix, _ = project_to_heatmap(roots[:, :1, None], batch, (192, 128), (48, 32))
    assert clean.shape == (1, 3, 1, 32, 48)
    for v in range(3):
        row, col = divmod(int(clean[0, v, 0].argmax()), 48)
        assert (col, row) == tuple(round(num(c)) for c in pix[0, v, 0, 0])
    noisy = render_root_heatmaps(roots, mask, batch, (192, 128), (48, 32), 2.0, 0.05, torch.Generator().manual_seed(0))
    assert num(noisy.min()) >= 0 and num(noisy.max()) <= 1 and num((noisy - clean).abs().mean()) > 0


def test_synthetic_root_loss_trains_volume_fn_and_checks_shapes():
    cfg = tiny_cfg()
    cams = ring_cameras(3)
    batch = make_batch(cams, cfg.dataset.image_size)
    offset = torch.zeros(1, requires_grad=True)
    seen = {}

    def volume_fn(heatmaps, batch_):
        seen["shape"] = tuple(heatmaps.shape)
        return torch.zeros(1, *cfg.model.root_space.voxels) + offset

    loss = synthetic_root_loss(volume_fn, batch, cfg, torch.Generator().manual_seed(0))
    assert seen["shape"] == (1, 3, 1, 32, 48) and num(loss.detach()) > 0
    loss.backward()
    assert num(offset.grad) < 0  # raising the volume toward the Gaussian target lowers the loss
    cfg.model.root_input = "all"
    synthetic_root_loss(volume_fn, batch, cfg, torch.Generator().manual_seed(0))
    assert seen["shape"] == (1, 3, 15, 32, 48)
    with pytest.raises(ValueError, match="root_space"):
        synthetic_root_loss(lambda h, b: torch.zeros(1, 2, 2, 2), batch, cfg)


def test_root_consistency_stops_gradient_to_identity():
    gen = torch.Generator().manual_seed(6)
    a1, a2, ident = (torch.rand(1, 4, 4, 2, generator=gen).requires_grad_() for _ in range(3))
    loss = root_consistency_loss(a1, a2, ident, weight=1.0)
    loss.backward()
    assert ident.grad is None and a1.grad.abs().sum() > 0 and a2.grad.abs().sum() > 0
    assert num(root_consistency_loss(ident, ident, ident, weight=1.0).detach()) == 0.0


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
