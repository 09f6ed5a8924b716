"""Evidence that pose_net learns from the self-supervised pose loss (paper Eq. 11) alone.

Oracle setting: GT roots and ORACLE 2D heatmaps (rendered from GT 3D with `losses.render`) feed the
real V2V pose_net of the tiny preset; pseudo labels are the GT projections. Only the self-supervised
loss (t1 <-> t2 cross-copy reprojection, A = 1) trains it; no 3D label enters the loss. MPJPE of the
identity copy t3 on the same frames must fall well below its starting value.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from selfpose3d.config import Config, load_config
from selfpose3d.data.dataset import build_dataset, collate_samples
from selfpose3d.geometry.cameras import project_points_torch
from selfpose3d.losses.attention import self_supervised_pose_loss
from selfpose3d.losses.render import render_poses
from selfpose3d.losses.supervised import gt_person_mask
from selfpose3d.models.pose_net import PoseNet

COPIES = ("t1", "t2", "t3")
STEPS = 40
LR = 2e-3


def oracle_labels(batch: dict, cfg: Config) -> torch.Tensor:
    """Replace batch["pseudo_2d"] / ["pseudo_count"] (in place) by the GT projections (original px, conf =
    GT visibility) and return oracle heatmaps (B, V, J, h, w) rendered from GT 3D in the copy's pixels."""
    d = cfg.dataset
    gt, vis = batch["gt_3d"], batch["gt_vis"] & gt_person_mask(batch)[..., None]
    b, m, j, _ = gt.shape
    v = batch["K"].shape[1]
    flat = gt.reshape(b, 1, m * j, 3).expand(b, v, m * j, 3)
    pixels = project_points_torch(flat, batch["K"], batch["R"], batch["t"], batch["dist"]).reshape(b, v, m, j, 2)
    conf = vis[:, None, ..., None].expand(b, v, m, j, 1).float()
    batch["pseudo_2d"] = torch.cat([pixels, conf], dim=-1)
    batch["pseudo_count"] = batch["gt_count"][:, None].expand(b, v).clone()
    heatmaps, _ = render_poses(gt, vis, batch, d.image_size, d.heatmap_size, d.heatmap_sigma_px)
    return heatmaps


def mpjpe_mm(poses: torch.Tensor, batch: dict) -> float:
    """Mean per-joint error (mm) of poses (B, M, J, 3) predicted at the GT roots, over visible GT joints."""
    vis = (batch["gt_vis"] & gt_person_mask(batch)[..., None]).float()
    err = (poses - batch["gt_3d"]).norm(dim=-1)
    return float((err * vis).sum() / vis.sum())


def oracle_frames(root: Path, count: int, **overrides: object) -> tuple[Config, dict, dict]:
    """Tiny config on ``root`` (plus ``overrides``), ``count`` training frames spread over the sequences as
    one batch of t1/t2/t3 copies with oracle pseudo labels, and the oracle heatmaps per copy."""
    cfg = load_config("tiny", {"dataset.root": str(root), "loss.mode": "self_supervised", **overrides})
    dataset = build_dataset(cfg, "train")
    torch.manual_seed(0)  # the copies' random affines
    step = max(1, len(dataset) // count)
    batch = collate_samples([dataset[i] for i in range(0, step * count, step)])
    heatmaps = {name: oracle_labels(batch[name], cfg) for name in COPIES}
    return cfg, batch, heatmaps


@pytest.mark.slow
def test_self_supervised_loss_alone_trains_pose_net_with_oracle_heatmaps(synthetic_tiny_root: Path) -> None:
    """Real V2V pose_net (tiny shapes with 16^3 cubes: 2.5x faster than the preset's 24^3, same result),
    GT roots, oracle heatmaps: Eq. 11 alone (identity attention) drives the t3 MPJPE of the training frames
    below half its starting value."""
    cfg, batch, heatmaps = oracle_frames(synthetic_tiny_root, count=3, **{"model.pose_cube_voxels": [16, 16, 16]})
    t1, t2, t3 = (batch[name] for name in COPIES)
    torch.manual_seed(0)
    net = PoseNet(cfg)
    roots = t3["gt_3d"][:, :, cfg.model.root_joint]
    valid = gt_person_mask(t3)
    attention = torch.ones_like(heatmaps["t1"])

    def evaluate() -> float:
        net.eval()
        with torch.no_grad():
            error = mpjpe_mm(net(heatmaps["t3"], t3, roots), t3)
        net.train()
        return error

    initial = evaluate()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    start = time.time()
    for _ in range(STEPS):
        poses = (net(heatmaps["t1"], t1, roots), net(heatmaps["t2"], t2, roots))
        losses = self_supervised_pose_loss(poses, (valid, valid), (t1, t2), (attention, attention),
                                           (heatmaps["t1"], heatmaps["t2"]), cfg, epoch=0)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    final = evaluate()
    print(f"oracle pose_net: MPJPE {initial:.1f} mm -> {final:.1f} mm in {STEPS} steps ({time.time() - start:.1f} s)")
    assert initial > 200.0  # untrained soft-argmax sits near the root: joints are far off
    assert final < 0.5 * initial


def test_pose_stage_sends_only_valid_proposals_through_pose_net(synthetic_tiny_root: Path) -> None:
    """Self-supervised pose stage: like SelfPose3d, pose_net sees only the (score-sorted) valid proposals,
    so below-threshold cubes neither train it nor enter its BatchNorm statistics."""
    from conftest import micro_overrides

    from selfpose3d.engine.objective import StageObjective, prepare_stage
    from selfpose3d.models import SelfPose3dModel

    cfg = load_config("tiny", micro_overrides(synthetic_tiny_root))
    torch.manual_seed(0)
    batch = collate_samples([build_dataset(cfg, "train")[0]])
    model = SelfPose3dModel(cfg)
    prepare_stage(model, "pose_net")
    seen: list[torch.Size] = []
    estimate = model.estimate

    def spy(heatmaps: torch.Tensor, sample: dict, roots: torch.Tensor) -> torch.Tensor:
        seen.append(roots.shape)
        return estimate(heatmaps, sample, roots)

    def propose(heatmaps: torch.Tensor, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        proposals = torch.zeros(1, cfg.model.max_proposals, 5)
        proposals[0, :, :3] = sample["gt_3d"][0, 0, cfg.model.root_joint]
        proposals[0, :, 3] = torch.linspace(0.9, 0.1, cfg.model.max_proposals)
        proposals[0, :valid_count, 4] = 1.0
        return torch.zeros(1, *cfg.model.root_space.voxels), proposals

    model.estimate, model.propose = spy, propose
    for valid_count in (2, 0):
        seen.clear()
        losses = StageObjective(model, cfg, "pose_net", 0)(batch)
        losses["total"].backward()
        assert seen == [torch.Size([1, valid_count, 3])] * 2  # t1 and t2
        assert float(losses["valid_proposals"]) == valid_count and torch.isfinite(losses["total"])
