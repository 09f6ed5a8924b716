"""Stage-wise training (backbone_2d -> root_net -> pose_net -> finetune) and evaluation.

Plain PyTorch. Works unchanged under torch.distributed (DDP over a `StageObjective` module, a
DistributedSampler per loader); knows nothing of Ray or MLflow — the platform observes it through
`Callback`s and drives checkpoint save/resume through `save_checkpoint` / `resume_from`.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from selfpose3d.config import Config
from selfpose3d.data.dataset import build_dataset, collate_samples
from selfpose3d.data.pseudo_labels import label_mode_for_epoch
from selfpose3d.engine.callbacks import Callback, EpochEnd
from selfpose3d.engine.checkpoint import load_checkpoint, save_checkpoint
from selfpose3d.engine.evaluate import evaluate_model
from selfpose3d.engine.objective import StageObjective, prepare_stage, to_device
from selfpose3d.models import SelfPose3dModel

STAGES = ("backbone_2d", "root_net", "pose_net", "finetune")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the message names the stage, epoch, step and loss term."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for a deterministic run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """"auto" -> cuda if available else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Runs the whole schedule of `cfg.train` on `cfg.dataset`.

    callbacks: observers (progress, tracking, Ray reporting). resume_from: a checkpoint path; training
    continues after the epoch it recorded. device: overrides cfg.train.device.
    """

    def __init__(self, cfg: Config, callbacks: list[Callback] | None = None,
                 resume_from: str | Path | None = None, device: str | torch.device | None = None) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks or [])
        self.rank, self.world_size = _world()
        self.device = torch.device(device) if device is not None else pick_device(cfg.train.device)
        seed_everything(cfg.train.seed + self.rank)
        self.model = SelfPose3dModel(cfg).to(self.device)
        self.history: list[dict[str, Any]] = []
        self.position = {"stage": STAGES[0], "stage_epoch": -1, "global_epoch": -1}
        self.optimizer: torch.optim.Optimizer | None = None
        self._resume_optimizer: dict[str, Any] | None = None
        self.train_set = build_dataset(cfg, "train")
        self.test_set = build_dataset(cfg, "test", copies=False)
        if resume_from is not None:
            self._restore(resume_from)

    # ---- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> Path:
        """Write model + optimizer + schedule position + metric history to `path` (atomic)."""
        return save_checkpoint(path, cfg=self.cfg, model=self.model.state_dict(),
                               optimizer=self.optimizer.state_dict() if self.optimizer else None,
                               progress=dict(self.position), history=self.history)

    def _restore(self, path: str | Path) -> None:
        payload = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(payload["model"])
        self.position = dict(payload["progress"])
        self.history = list(payload["history"])
        self._resume_optimizer = payload["optimizer"]

    # ---- schedule ----------------------------------------------------------------------------------
    def schedule(self) -> list[tuple[str, int, int]]:
        """All (stage, stage_epoch, global_epoch) of the run, in order."""
        out, g = [], 0
        for stage in STAGES:
            for e in range(getattr(self.cfg.train, stage).epochs):
                out.append((stage, e, g))
                g += 1
        return out

    def fit(self) -> dict[str, float]:
        """Train every remaining epoch, evaluating after pose-producing epochs. Returns final metrics."""
        for cb in self.callbacks:
            cb.on_train_start(self)
        plan = [p for p in self.schedule() if p[2] > self.position["global_epoch"]]
        final: dict[str, float] = dict(self.history[-1]) if self.history else {}
        for i, (stage, stage_epoch, global_epoch) in enumerate(plan):
            metrics = self._run_epoch(stage, stage_epoch, global_epoch)
            final = metrics
            is_last = i == len(plan) - 1
            event = EpochEnd(stage, stage_epoch, global_epoch, metrics, is_last=is_last)
            for cb in self.callbacks:
                cb.on_epoch_end(self, event)
        for cb in self.callbacks:
            cb.on_train_end(self, final)
        return final

    def _optimizer_for(self, stage: str, stage_epoch: int) -> torch.optim.Optimizer:
        stage_cfg = getattr(self.cfg.train, stage)
        params = self.model.stage_parameters(stage)
        opt = torch.optim.Adam(params, lr=stage_cfg.lr)
        if self._resume_optimizer is not None and stage_epoch > 0:
            try:
                opt.load_state_dict(self._resume_optimizer)
            except ValueError:
                pass  # optimizer of another stage: start fresh
        self._resume_optimizer = None
        return opt

    def _lr(self, stage: str, stage_epoch: int) -> float:
        stage_cfg = getattr(self.cfg.train, stage)
        drops = sum(stage_epoch >= s for s in stage_cfg.lr_steps)
        return stage_cfg.lr * stage_cfg.lr_factor**drops

    def _loader(self, stage_epoch: int) -> DataLoader:
        sampler = None
        if self.world_size > 1:
            sampler = DistributedSampler(self.train_set, num_replicas=self.world_size, rank=self.rank,
                                         shuffle=True, seed=self.cfg.train.seed, drop_last=True)
            sampler.set_epoch(stage_epoch)
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 1000 + stage_epoch)
        return DataLoader(self.train_set, batch_size=self.cfg.train.batch_size, shuffle=sampler is None,
                          sampler=sampler, generator=gen, collate_fn=collate_samples,
                          num_workers=self.cfg.train.loader_workers, drop_last=True)

    def _run_epoch(self, stage: str, stage_epoch: int, global_epoch: int) -> dict[str, float]:
        if self.optimizer is None or self.position.get("stage") != stage or stage_epoch == 0:
            self.optimizer = self._optimizer_for(stage, stage_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(stage, stage_epoch)
        mode = label_mode_for_epoch(self.cfg, stage, stage_epoch)
        self.train_set.label_mode = mode
        objective = StageObjective(self.model, self.cfg, stage, stage_epoch)
        runner: torch.nn.Module = objective
        if self.world_size > 1:
            runner = torch.nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
        prepare_stage(self.model, stage)
        loader = self._loader(stage_epoch)
        total = len(loader)
        if self.cfg.train.max_iters_per_epoch:
            total = min(total, self.cfg.train.max_iters_per_epoch)
        sums: dict[str, float] = {}
        for step, batch in enumerate(loader):
            if step >= total:
                break
            losses = runner(to_device(batch, self.device))
            loss = losses["total"]
            if not torch.isfinite(loss):
                bad = [k for k, v in losses.items() if not torch.isfinite(v)]
                raise NonFiniteLossError(f"non-finite loss in stage {stage}, epoch {stage_epoch}, step {step}: "
                                         f"{', '.join(bad)} = {[float(losses[k].detach()) for k in bad]}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.stage_parameters(stage), self.cfg.train.grad_clip)
            self.optimizer.step()
            values = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            for cb in self.callbacks:
                cb.on_step(self, stage, step, total, values)
        metrics = {f"train/{k}": v / max(total, 1) for k, v in sums.items()}
        metrics.update({"lr": self._lr(stage, stage_epoch), "label_mode_hard": float(mode == "hard")})
        if stage in ("root_net", "pose_net", "finetune") and self.rank == 0:
            metrics.update({f"eval/{k}": v for k, v in self.evaluate().items() if _is_number(v)})
        self.position = {"stage": stage, "stage_epoch": stage_epoch, "global_epoch": global_epoch}
        self.history.append({"stage": stage, "stage_epoch": stage_epoch, "global_epoch": global_epoch,
                             **metrics})
        return metrics

    def evaluate(self, dataset: Any = None) -> dict[str, Any]:
        """Evaluate the current model on the test split (or `dataset`): AP@25..150, MPJPE, recall, root AP."""
        return evaluate_model(self.model, dataset if dataset is not None else self.test_set, self.cfg,
                              self.device)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
