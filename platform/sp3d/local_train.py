"""In-process training without Ray (`sp3d train --local`): same checkpoint layout and MLflow logging.

The run lives in ``<storage>/<run_name>/checkpoint/`` (``model.pt`` + ``sp3d_run.json``, rewritten
atomically after every epoch); starting again with the same name and storage resumes from it and
reuses the MLflow run recorded there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfpose3d.config import Config
from selfpose3d.engine.callbacks import Callback, EpochEnd
from selfpose3d.engine.trainer import Trainer
from selfpose3d.fileio import atomic_output
from sp3d.progress import RichProgress
from sp3d.run_tracking import MlflowTracking, fit_tracked, summary_metrics
from sp3d.settings import Settings, load_settings
from sp3d.storage import StorageError
from sp3d.train_loop import CHECKPOINT_FILE, DEFAULT_EXPERIMENT, RUN_INFO_FILE, RunExistsError, TrainingResult

CHECKPOINT_DIR = "checkpoint"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path, suffix="", mode=None) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1))


class LocalCheckpoint(Callback):
    """After each epoch write ``model.pt`` and ``sp3d_run.json`` (MLflow run id, summary metrics) to ``directory``."""

    def __init__(self, directory: Path, tracker: MlflowTracking | None = None) -> None:
        self.directory, self.tracker = directory, tracker

    def on_epoch_end(self, trainer: Trainer, event: EpochEnd) -> None:
        """Save the engine checkpoint, then the run info (both atomic)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.directory / CHECKPOINT_FILE)
        info = {"mlflow_run_id": self.tracker.run_id if self.tracker else None,
                "global_epoch": event.global_epoch, "metrics": summary_metrics(trainer.history)}
        _write_json(self.directory / RUN_INFO_FILE, info)


def run_local(cfg: Config, *, run_name: str, storage: str | Path, experiment: str = DEFAULT_EXPERIMENT,
              resume: bool = True, track: bool = True, settings: Settings | None = None,
              progress: RichProgress | None = None, device: str | None = None) -> TrainingResult:
    """Train ``cfg`` in this process; returns a `TrainingResult` like `sp3d.train_loop.run_training`.

    storage: a local directory (``s3://`` is refused: use Ray mode for remote storage); the run resumes
    from ``<storage>/<run_name>/checkpoint`` when present (``resume=False`` raises `RunExistsError`).
    track: log to MLflow with ``settings``; progress: a `RichProgress` (None = default one).
    """
    if "://" in str(storage):
        raise StorageError(f"{storage}: --local trains in this process and keeps checkpoints in a local dir")
    run_dir = Path(storage).expanduser().resolve() / run_name
    ckpt_dir = run_dir / CHECKPOINT_DIR
    existing = ckpt_dir / CHECKPOINT_FILE
    if existing.is_file() and not resume:
        raise RunExistsError(f"{run_dir} already exists: pick another run name or resume it")
    settings = settings or load_settings()
    tracker = None
    if track:
        info = json.loads((ckpt_dir / RUN_INFO_FILE).read_text()) if (ckpt_dir / RUN_INFO_FILE).is_file() else {}
        tracker = MlflowTracking(experiment, run_name, run_id=info.get("mlflow_run_id"), settings=settings,
                                 tags={"sp3d.run_name": run_name, "sp3d.storage": str(run_dir), "sp3d.workers": 1})
    callbacks: list[Callback] = [LocalCheckpoint(ckpt_dir, tracker)]
    callbacks += [tracker] if tracker else []
    callbacks.append(progress or RichProgress())
    trainer = Trainer(cfg, callbacks, resume_from=existing if existing.is_file() else None, device=device)
    fit_tracked(trainer, tracker)
    return TrainingResult(run_name=run_name, experiment=experiment, storage=str(run_dir),
                          checkpoint=str(ckpt_dir) if existing.is_file() else None,
                          metrics=summary_metrics(trainer.history),
                          mlflow_run_id=tracker.run_id if tracker else None,
                          tracking_uri=settings.tracking_uri if track else None)
