"""What each training stage optimises, as one `nn.Module` whose forward returns named losses.

Wrapping the objective (not the model) in DistributedDataParallel lets a stage call several model
methods (forward_2d, propose, estimate) and still have DDP synchronise the gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfpose3d.config import Config
from selfpose3d.losses.attention import self_supervised_pose_loss
from selfpose3d.losses.heatmap2d import heatmap_mse
from selfpose3d.losses.render import pseudo_heatmaps
from selfpose3d.losses.roots import root_consistency_loss, synthetic_root_loss
from selfpose3d.losses.supervised import supervised_losses


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to `device`; other values are returned unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def prepare_stage(model: nn.Module, stage: str) -> None:
    """Make only `stage`'s parameters trainable and put the model in training mode; sub-networks outside
    the stage stay in eval mode (frozen BatchNorm statistics, `SelfPose3dModel.set_stage`)."""
    trainable = {id(p) for p in model.stage_parameters(stage)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.set_stage(stage)
    model.train()


class StageObjective(nn.Module):
    """forward(batch) -> {"total": scalar, <named terms>} for one stage of one mode.

    batch: the collated training batch — {"t1", "t2", "t3"} copies in the self-supervised mode, one
    batch dict in the supervised mode (docs/architecture.md). stage_epoch switches lambda on.
    """

    def __init__(self, model: nn.Module, cfg: Config, stage: str, stage_epoch: int) -> None:
        super().__init__()
        self.model, self.cfg, self.stage, self.stage_epoch = model, cfg, stage, stage_epoch

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.cfg.loss.mode == "supervised":
            return self._supervised(batch)
        return getattr(self, f"_self_supervised_{'pose' if self.stage == 'finetune' else self.stage}")(batch)

    # ---- helpers -----------------------------------------------------------------------------------
    def _heatmaps(self, batch: dict[str, Any]) -> torch.Tensor:
        images = batch["images"]
        flat = self.model.heatmap_net(images.flatten(0, 1))
        return flat.unflatten(0, images.shape[:2])

    def _pseudo(self, batch: dict[str, Any], like: torch.Tensor) -> torch.Tensor:
        d = self.cfg.dataset
        return pseudo_heatmaps(batch, d.image_size, d.heatmap_size, d.heatmap_sigma_px).to(like)

    def _root_volume(self, heatmaps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.model.root_net.volume_from_heatmaps(self.model.root_net.select_input(heatmaps), batch)

    # ---- self-supervised ---------------------------------------------------------------------------
    def _self_supervised_backbone_2d(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        copy = batch["t1"]
        heatmaps = self._heatmaps(copy)
        loss = self.cfg.loss.heatmap_2d_weight * heatmap_mse(heatmaps, self._pseudo(copy, heatmaps))
        return {"l_2d": loss, "total": loss}

    def _self_supervised_root_net(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        l_syn = synthetic_root_loss(self.model.root_net.volume_from_heatmaps, batch["t3"], self.cfg)
        with torch.no_grad():
            heatmaps = [self._heatmaps(batch[k]) for k in ("t1", "t2", "t3")]
        volumes = [self._root_volume(h, batch[k]) for h, k in zip(heatmaps, ("t1", "t2", "t3"), strict=True)]
        l_cons = root_consistency_loss(*volumes, weight=self.cfg.loss.root_consistency_weight)
        return {"l_root_synthetic": l_syn, "l_root_consistency": l_cons, "total": l_syn + l_cons}

    def _self_supervised_pose_net(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        t1, t2, t3 = batch["t1"], batch["t2"], batch["t3"]
        with torch.no_grad():
            _, proposals = self.model.propose(self._heatmaps(t3), t3)
        # Proposals are sorted by score, valid first: like SelfPose3d (and `SelfPose3dModel.forward`), only
        # the first max-valid-count cubes go through pose_net, so below-threshold cubes neither cost time
        # nor enter pose_net's BatchNorm batch statistics.
        n = int((proposals[..., 4] > 0).sum(dim=1).max()) if proposals.shape[0] else 0
        roots, valid = proposals[:, :n, :3], proposals[:, :n, 4] > 0
        h1, a1 = self.model.forward_2d(t1["images"])
        h2, a2 = self.model.forward_2d(t2["images"])
        poses1 = self.model.estimate(h1, t1, roots)
        poses2 = self.model.estimate(h2, t2, roots)
        p1, p2 = self._pseudo(t1, h1), self._pseudo(t2, h2)
        terms = self_supervised_pose_loss((poses1, poses2), (valid, valid), (t1, t2), (a1, a2), (p1, p2),
                                          self.cfg, self.stage_epoch)
        if self.stage == "finetune":
            l_2d = (heatmap_mse(h1, p1) + heatmap_mse(h2, p2)) / 2
            terms["l_2d"] = l_2d
            terms["total"] = terms["total"] + self.cfg.loss.heatmap_2d_weight * l_2d
        terms["valid_proposals"] = valid.float().sum(1).mean().detach()
        return terms

    # ---- supervised baseline (VoxelPose) ------------------------------------------------------------
    def _supervised(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.stage == "backbone_2d":
            return supervised_losses({"heatmaps": self._heatmaps(batch)}, batch, self.cfg)
        train_2d = self.stage == "finetune"
        with torch.set_grad_enabled(train_2d):
            heatmaps = self._heatmaps(batch)
        if self.stage == "root_net":
            return supervised_losses({"root_volume": self._root_volume(heatmaps, batch)}, batch, self.cfg)
        root_volume, proposals = self.model.propose(heatmaps, batch)
        outputs = {"poses": self.model.estimate(heatmaps, batch, proposals[..., :3].detach()),
                   "proposals": proposals.detach()}
        if train_2d:
            outputs.update(heatmaps=heatmaps, root_volume=root_volume)
        return supervised_losses(outputs, batch, self.cfg)
