"""Losses of SelfPose3d (paper Eq. 11) and of the fully supervised VoxelPose baseline: pure tensor functions."""

from selfpose3d.losses.attention import (
    attention_heatmap_loss,
    attention_regulariser,
    cross_view_terms,
    self_supervised_pose_loss,
)
from selfpose3d.losses.heatmap2d import heatmap_mse
from selfpose3d.losses.joints import joint_l1_loss, zero_like_graph
from selfpose3d.losses.render import (
    project_to_heatmap,
    pseudo_heatmaps,
    pseudo_in_heatmap_px,
    render_heatmaps,
    render_poses,
)
from selfpose3d.losses.roots import (
    gaussian_volume_target,
    render_root_heatmaps,
    root_consistency_loss,
    sample_synthetic_roots,
    space_grid,
    synthetic_root_loss,
)
from selfpose3d.losses.supervised import (
    gt_heatmaps,
    gt_root_target,
    match_proposals_to_gt,
    supervised_heatmap_loss,
    supervised_losses,
    supervised_pose_loss,
    supervised_root_loss,
)

__all__ = [
    "attention_heatmap_loss", "attention_regulariser", "cross_view_terms", "self_supervised_pose_loss",
    "heatmap_mse", "joint_l1_loss", "zero_like_graph", "project_to_heatmap", "pseudo_heatmaps",
    "pseudo_in_heatmap_px", "render_heatmaps", "render_poses", "gaussian_volume_target",
    "render_root_heatmaps", "root_consistency_loss", "sample_synthetic_roots", "space_grid",
    "synthetic_root_loss", "gt_heatmaps", "gt_root_target", "match_proposals_to_gt",
    "supervised_heatmap_loss", "supervised_losses", "supervised_pose_loss", "supervised_root_loss",
]
