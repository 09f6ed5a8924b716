"""Tests for selfpose3d/losses, part 1: rendering + projection gradients, attention losses, Hungarian L1,
synthetic-root / consistency losses. Pose losses: test_pose_losses.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_helpers import DIST, add_pseudo, make_batch, num, ring_cameras, skeleton, tiny_cfg

from selfpose3d.config.schema import SpaceConfig
from selfpose3d.geometry.cameras import project_points
from selfpose3d.geometry.transforms import apply_affine
from selfpose3d.losses import (
    attention_heatmap_loss,
    attention_regulariser,
    gaussian_volume_target,
    joint_l1_loss,
    project_to_heatmap,
    pseudo_heatmaps,
    render_heatmaps,
    render_root_heatmaps,
    root_consistency_loss,
    sample_synthetic_roots,
    space_grid,
    synthetic_root_loss,
)

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
