"""Engine: schedule, checkpoints (atomic, weights_only, corrupt files), NaN detection, resume, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import micro_overrides

from selfpose3d.config import load_config
from selfpose3d.engine.callbacks import Callback, EpochEnd
from selfpose3d.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from selfpose3d.engine.trainer import NonFiniteLossError, Trainer


class Recorder(Callback):
    """Collects epoch events and step losses."""

    def __init__(self) -> None:
        self.events: list[EpochEnd] = []
        self.steps: list[tuple[str, int, dict[str, float]]] = []

    def on_step(self, trainer, stage, step, total, losses) -> None:  # noqa: ANN001
        self.steps.append((stage, step, losses))

    def on_epoch_end(self, trainer, event) -> None:  # noqa: ANN001
        self.events.append(event)


def _cfg(root: Path, **extra: object):
    return load_config("tiny", micro_overrides(root, **extra))


def test_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    state = {"w": torch.arange(4.0)}
    path = save_checkpoint(tmp_path / "ck" / "a.pt", cfg=cfg, model=state, progress={"global_epoch": 3})
    assert [p.name for p in path.parent.iterdir()] == ["a.pt"]  # no temp file left behind
    payload = load_checkpoint(path)
    assert payload["config"] == cfg and torch.equal(payload["model"]["w"], state["w"])
    assert payload["progress"]["global_epoch"] == 3
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": state}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not an sp3d checkpoint"):
        load_checkpoint(foreign)


def test_schedule_follows_config(synthetic_tiny_root: Path) -> None:
    cfg = _cfg(synthetic_tiny_root, **{"train.pose_net.epochs": 2, "train.finetune.epochs": 1})
    plan = Trainer(cfg).schedule()
    assert [s for s, _, _ in plan] == ["backbone_2d", "root_net", "pose_net", "pose_net", "finetune"]
    assert [g for _, _, g in plan] == list(range(5))


def test_fit_reports_every_epoch_and_resumes(synthetic_tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(synthetic_tiny_root)
    saved: dict[int, Path] = {}

    class Saver(Recorder):
        def on_epoch_end(self, trainer, event) -> None:  # noqa: ANN001
            super().on_epoch_end(trainer, event)
            saved[event.global_epoch] = trainer.save_checkpoint(tmp_path / f"epoch{event.global_epoch}.pt")

    rec = Saver()
    final = Trainer(cfg, [rec]).fit()
    assert [e.stage for e in rec.events] == ["backbone_2d", "root_net", "pose_net"]
    assert rec.events[-1].is_last and not rec.events[0].is_last
    assert "eval/ap25" in final and "eval/root_ap100" in final and math.isfinite(final["train/total"])
    assert all(math.isfinite(v) for v in final.values())  # inf MPJPE (nothing matched) is left out
    assert len([s for s in rec.steps if s[0] == "backbone_2d"]) == 2  # max_iters_per_epoch

    resumed = Recorder()
    trainer = Trainer(cfg, [resumed], resume_from=saved[0])
    assert trainer.position["global_epoch"] == 0 and len(trainer.history) == 1
    trainer.fit()
    assert [e.global_epoch for e in resumed.events] == [1, 2]  # epoch 0 is not trained again
    assert len(trainer.history) == 3


def test_same_seed_same_losses(synthetic_tiny_root: Path) -> None:
    cfg = _cfg(synthetic_tiny_root, **{"train.root_net.epochs": 0, "train.pose_net.epochs": 0})
    runs = []
    for _ in range(2):
        rec = Recorder()
        Trainer(cfg, [rec]).fit()
        runs.append([s[2]["total"] for s in rec.steps])
    assert runs[0] == runs[1]


def test_nan_loss_stops_with_clear_error(synthetic_tiny_root: Path) -> None:
    cfg = _cfg(synthetic_tiny_root)
    trainer = Trainer(cfg)
    with torch.no_grad():
        next(trainer.model.heatmap_net.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"stage backbone_2d, epoch 0, step 0: l_2d"):
        trainer.fit()
