"""root_net (cuboid proposal net): project root (or all) heatmaps into the fixed root space, V2V -> 1 ch."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from selfpose3d.config.schema import Config
from selfpose3d.models.projection import ProjectionLayer, grid_points
from selfpose3d.models.proposals import get_proposals
from selfpose3d.models.v2v import V2VNet

ROOT_CACHE_KEY = "root_space"


class RootNet(nn.Module):
    """Root volume over ``cfg.model.root_space`` from multi-view heatmaps.

    Input channels: 1 (``model.root_input == "root"``: heatmap of ``model.root_joint`` only, SelfPose3d)
    or J ("all", VoxelPose). The sampling grid of the (fixed) space is cached per camera set.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        m = cfg.model
        self.space = m.root_space
        self.root_joint = m.root_joint
        self.root_input = m.root_input
        self.in_channels = 1 if m.root_input == "root" else m.num_joints
        self.max_proposals = m.max_proposals
        self.nms_kernel = m.nms_kernel
        self.threshold = m.proposal_threshold
        self.projection = ProjectionLayer(cfg.dataset.image_size, cfg.dataset.heatmap_size)
        self.register_buffer("points", grid_points(self.space.center_mm, self.space.size_mm, self.space.voxels),
                             persistent=False)
        self.v2v = V2VNet(self.in_channels, 1, m.v2v_width)

    def select_input(self, heatmaps: Tensor) -> Tensor:
        """All-joint heatmaps (B, V, J, h, w) -> root_net input (B, V, Cin, h, w)."""
        if self.root_input == "root":
            return heatmaps[:, :, self.root_joint : self.root_joint + 1]
        return heatmaps

    def input_volume(self, root_heatmaps: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """Root heatmaps (B, V, Cin, h, w) -> projected, view-averaged volume (B, Cin, X, Y, Z) in [0, 1]."""
        if root_heatmaps.dim() != 5 or root_heatmaps.shape[2] != self.in_channels:
            raise ValueError(f"root_net: expected heatmaps (B, V, {self.in_channels}, h, w) for "
                             f"model.root_input={self.root_input!r}, got {tuple(root_heatmaps.shape)}")
        volume = self.projection(root_heatmaps, batch, self.points, cache_key=ROOT_CACHE_KEY)
        return volume.view(volume.shape[0], self.in_channels, *self.space.voxels)

    def volume_from_heatmaps(self, root_heatmaps: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """Root heatmaps (B, V, Cin, h, w) + batch cameras/affines -> root volume (B, X, Y, Z) (V2V output)."""
        return self.v2v(self.input_volume(root_heatmaps, batch)).squeeze(1)

    def forward(self, heatmaps: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """All-joint heatmaps (B, V, J, h, w) -> root volume (B, X, Y, Z)."""
        return self.volume_from_heatmaps(self.select_input(heatmaps), batch)

    def proposals(self, root_volume: Tensor) -> Tensor:
        """Root volume (B, X, Y, Z) -> proposals (B, K, 5) [x, y, z mm, score, valid] (NMS + top-K)."""
        return get_proposals(root_volume, self.space.center_mm, self.space.size_mm, self.max_proposals,
                             self.nms_kernel, self.threshold)
