"""SelfPose3dModel: heatmap_net_2d + attn_net_2d + root_net + pose_net (VoxelPose-style pipeline)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from selfpose3d.config.schema import Config
from selfpose3d.models.pose_net import PoseNet
from selfpose3d.models.pose_resnet import PoseResNet
from selfpose3d.models.root_net import RootNet

STAGE_MODULES = {
    "backbone_2d": ("heatmap_net",),
    "root_net": ("root_net",),
    "pose_net": ("pose_net", "attn_net"),
    "finetune": ("heatmap_net", "attn_net", "root_net", "pose_net"),
}


class ModelConfigError(ValueError):
    """The model / dataset config describes an inconsistent network (message names the keys)."""


def _check_config(cfg: Config) -> None:
    """Heatmaps must be image_size / 32 * 2^deconv_layers; voxel grids divisible by 4 (V2V pooling)."""
    factor = 2 ** cfg.model.deconv_layers / 32
    expected = tuple(int(s * factor) for s in cfg.dataset.image_size)
    if any(s % 32 for s in cfg.dataset.image_size) or expected != tuple(cfg.dataset.heatmap_size):
        raise ModelConfigError(
            f"dataset.heatmap_size={tuple(cfg.dataset.heatmap_size)}: expected {expected} = dataset.image_size "
            f"{tuple(cfg.dataset.image_size)} (multiple of 32) / 32 * 2^model.deconv_layers")
    for key, voxels in (("model.root_space.voxels", cfg.model.root_space.voxels),
                        ("model.pose_cube_voxels", cfg.model.pose_cube_voxels)):
        if any(v % 4 for v in voxels):
            raise ModelConfigError(f"{key}={tuple(voxels)}: every axis must be divisible by 4 (V2V pooling)")
    if not 0 <= cfg.model.root_joint < cfg.model.num_joints:
        raise ModelConfigError(f"model.root_joint={cfg.model.root_joint}: expected 0..{cfg.model.num_joints - 1}")


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class SelfPose3dModel(nn.Module):
    """The full network. Batch format and outputs: docs/architecture.md."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        _check_config(cfg)
        m = cfg.model
        self.cfg = cfg
        self.heatmap_net = PoseResNet(m.backbone, m.num_joints, m.deconv_layers, m.deconv_channels,
                                      pretrained=m.pretrained_backbone)
        if m.attn_backbone == "shared":
            self.attn_net = PoseResNet(m.backbone, m.num_joints, m.deconv_layers, m.deconv_channels,
                                       trunk=self.heatmap_net.trunk, sigmoid=True)
        else:
            self.attn_net = PoseResNet(m.attn_backbone, m.num_joints, m.deconv_layers, m.deconv_channels,
                                       sigmoid=True)
        self.root_net = RootNet(cfg)
        self.pose_net = PoseNet(cfg)
        self.stage: str | None = None

    @property
    def shares_trunk(self) -> bool:
        """True if attn_net reuses heatmap_net's ResNet trunk (``model.attn_backbone == "shared"``)."""
        return self.attn_net.trunk is self.heatmap_net.trunk

    def forward_2d(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, V, 3, H, W) -> heatmaps (B, V, J, h, w), attention (B, V, J, h, w) in (0, 1)."""
        B, V = images.shape[:2]
        flat = images.flatten(0, 1)
        if self.shares_trunk:
            features = self.heatmap_net.trunk(flat)
            heatmaps = self.heatmap_net.head(features)
            attention = torch.sigmoid(self.attn_net.head(features))
        else:
            heatmaps, attention = self.heatmap_net(flat), self.attn_net(flat)
        return heatmaps.unflatten(0, (B, V)), attention.unflatten(0, (B, V))

    def propose(self, heatmaps: Tensor, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """heatmaps (B, V, J, h, w) -> root_volume (B, X, Y, Z), proposals (B, K, 5) [x, y, z mm, score, valid]."""
        root_volume = self.root_net(heatmaps, batch)
        return root_volume, self.root_net.proposals(root_volume)

    def estimate(self, heatmaps: Tensor, batch: Mapping[str, Tensor], roots_mm: Tensor) -> Tensor:
        """heatmaps (B, V, J, h, w), roots (B, K, 3) mm -> poses (B, K, J, 3) mm (every root is used)."""
        return self.pose_net(heatmaps, batch, roots_mm)

    def forward(self, batch: Mapping[str, Tensor], all_proposals: bool = False) -> dict[str, Tensor]:
        """batch (docs/architecture.md) -> dict(heatmaps, attention, root_volume, proposals, poses).

        Proposals are sorted by score, so the valid ones come first; poses are estimated for the first
        max-over-batch-of-valid-count proposals (all K with ``all_proposals``) and are zeros beyond.
        Use ``proposals[..., 4]`` as the mask of real poses.
        """
        heatmaps, attention = self.forward_2d(batch["images"])
        root_volume, proposals = self.propose(heatmaps, batch)
        B, K = proposals.shape[:2]
        n = K if all_proposals else int(proposals[..., 4].sum(dim=1).max().item()) if B else 0
        poses = heatmaps.new_zeros(B, K, self.cfg.model.num_joints, 3)
        if n > 0:
            poses[:, :n] = self.estimate(heatmaps, batch, proposals[:, :n, :3])
        return {"heatmaps": heatmaps, "attention": attention, "root_volume": root_volume,
                "proposals": proposals, "poses": poses}

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        """Trainable parameters of a stage (deduplicated): backbone_2d -> heatmap_net; root_net -> root_net;
        pose_net -> pose_net + attn_net; finetune -> everything."""
        if stage not in STAGE_MODULES:
            raise ValueError(f"stage: expected one of {', '.join(STAGE_MODULES)}, got {stage!r}")
        return _unique(p for name in STAGE_MODULES[stage] for p in getattr(self, name).parameters())

    def set_stage(self, stage: str | None) -> None:
        """Remember the training stage. While in training mode, sub-nets outside the stage are kept in eval
        mode (frozen BatchNorm statistics, as VoxelPose does for its backbone). None: all sub-nets train."""
        if stage is not None and stage not in STAGE_MODULES:
            raise ValueError(f"stage: expected one of {', '.join(STAGE_MODULES)}, got {stage!r}")
        self.stage = stage
        self.train(self.training)

    def train(self, mode: bool = True) -> SelfPose3dModel:
        """nn.Module.train, then the stage rule of `set_stage` (trained sub-nets win for a shared trunk)."""
        super().train(mode)
        if mode and self.stage is not None:
            active = STAGE_MODULES[self.stage]
            for name in STAGE_MODULES["finetune"]:
                if name not in active:
                    getattr(self, name).eval()
            for name in active:
                getattr(self, name).train()
        return self
