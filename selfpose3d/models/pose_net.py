"""pose_net: per proposal a cube around the root, all J heatmaps projected, V2V (J -> J), soft-argmax."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from selfpose3d.config.schema import Config
from selfpose3d.models.projection import ProjectionLayer, grid_points
from selfpose3d.models.v2v import V2VNet


def soft_argmax(volume: Tensor, points: Tensor, beta: float) -> Tensor:
    """Volumes (N, J, M) over voxel centres points (M, 3) mm -> expected positions (N, J, 3) mm under
    softmax(beta * volume) along M. Differentiable."""
    prob = torch.softmax(beta * volume, dim=-1)
    return prob @ points.to(prob.dtype)


class PoseNet(nn.Module):
    """3D joints of every proposal: heatmaps (B, V, J, h, w) + roots (B, K, 3) mm -> (B, K, J, 3) mm.

    All B*K cubes (``model.pose_cube_mm``, ``model.pose_cube_voxels``) are projected in one call and
    run through V2V as one batch. Gradients flow to the heatmaps and V2V, not to the roots.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        m = cfg.model
        self.num_joints = m.num_joints
        self.voxels = tuple(m.pose_cube_voxels)
        self.cube_mm = tuple(m.pose_cube_mm)
        self.beta = m.softargmax_beta
        self.projection = ProjectionLayer(cfg.dataset.image_size, cfg.dataset.heatmap_size, cache_size=0)
        self.register_buffer("offsets", grid_points((0.0, 0.0, 0.0), m.pose_cube_mm, self.voxels),
                             persistent=False)
        self.v2v = V2VNet(m.num_joints, m.num_joints, m.v2v_width)

    def input_volume(self, heatmaps: Tensor, batch: Mapping[str, Tensor], roots_mm: Tensor) -> Tensor:
        """Heatmaps (B, V, J, h, w), roots (B, K, 3) mm -> cube volumes (B*K, J, X, Y, Z) in [0, 1]."""
        B, K = roots_mm.shape[:2]
        volume = self.projection.cubes(heatmaps, batch, roots_mm, self.cube_mm, self.voxels)  # (B, J, K*N)
        volume = volume.view(B, self.num_joints, K, -1).transpose(1, 2)
        return volume.reshape(B * K, self.num_joints, *self.voxels)

    def forward(self, heatmaps: Tensor, batch: Mapping[str, Tensor], roots_mm: Tensor) -> Tensor:
        """Heatmaps (B, V, J, h, w), batch cameras/affines, roots (B, K, 3) mm -> joints (B, K, J, 3) mm."""
        B, K = roots_mm.shape[:2]
        if heatmaps.shape[2] != self.num_joints:
            raise ValueError(f"pose_net: expected {self.num_joints} heatmap channels (model.num_joints), "
                             f"got {tuple(heatmaps.shape)}")
        if K == 0:
            return heatmaps.new_zeros(B, 0, self.num_joints, 3)
        features = self.v2v(self.input_volume(heatmaps, batch, roots_mm))
        local = soft_argmax(features.flatten(2), self.offsets, self.beta)  # (B*K, J, 3)
        return local.view(B, K, self.num_joints, 3) + roots_mm.detach()[:, :, None, :].to(local.dtype)
