"""Callback hooks so the platform (Ray Train, MLflow) can observe training without the engine knowing it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selfpose3d.engine.trainer import Trainer


@dataclass
class EpochEnd:
    """What a callback receives after every epoch (every rank calls it, same number of times).

    stage: "backbone_2d" | "root_net" | "pose_net" | "finetune"; stage_epoch: 0-based inside the stage;
    global_epoch: 0-based over all stages; metrics: losses (train/...) and, after evaluation,
    AP/MPJPE (eval/...); is_last: True after the final epoch of the whole schedule.
    """

    stage: str
    stage_epoch: int
    global_epoch: int
    metrics: dict[str, float]
    is_last: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class: override what you need. `trainer` gives access to save_checkpoint, the model, cfg."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch (after any resume)."""

    def on_step(self, trainer: Trainer, stage: str, step: int, total: int, losses: dict[str, float]) -> None:
        """Called after every optimisation step (for progress bars)."""

    def on_epoch_end(self, trainer: Trainer, event: EpochEnd) -> None:
        """Called after every epoch, on every rank."""

    def on_train_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """Called once after the last epoch with the final metrics."""
