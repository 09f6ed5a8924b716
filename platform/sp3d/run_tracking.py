"""`MlflowTracking`: an engine `Callback` that logs one training run to MLflow (rank 0 only).

One MLflow run per training run, reused on resume: pass ``run_id`` (kept in ``sp3d_run.json`` beside the
checkpoint), else an unfinished run of the same name (and parent, and ``sp3d.storage`` tag) is reused —
the case of a worker restart before the first checkpoint was committed. Per-epoch metrics go in with
``step = global epoch``; a step already in the run is never logged again (a restart that redoes an epoch
keeps the first values), and epochs of the resumed history that the run misses (a crash between the
checkpoint and the logging) are back-filled. Every (re)start appends its first epoch to the
``sp3d.resume_history`` tag and, on Ray, rank 0's node id to ``sp3d.node_history`` (where each attempt ran). The best (by AP, then MPJPE) and final
weights, learning curves and a 3D pose snapshot are logged as artifacts.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from selfpose3d.engine.callbacks import Callback, EpochEnd
from selfpose3d.engine.checkpoint import save_checkpoint
from selfpose3d.engine.evaluate import predict_frames
from selfpose3d.evaluation import metric_key
from sp3d import plots, tracking
from sp3d.settings import Settings

EPOCH_METRIC = "epoch"  # logged every epoch; its steps tell which epochs a run already holds
STAGE_INDEX = {"backbone_2d": 0, "root_net": 1, "pose_net": 2, "finetune": 3}
RESUME_TAG = "sp3d.resume_history"  # comma-separated first epoch of every (re)start of the run
NODE_TAG = "sp3d.node_history"  # comma-separated Ray node id of rank 0 at every (re)start (Ray runs only)
BEST_TAG, FINAL_TAG = "sp3d.best_epoch", "sp3d.final_epoch"
SNAPSHOT_FRAMES = 4  # test frames scanned for one with ground truth


def epoch_metrics(stage: str, global_epoch: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Tracker-safe numeric metrics of one epoch: the engine's ``train/...``, ``eval/...``, lr, plus
    ``epoch`` (global epoch index) and ``stage_index`` (0 backbone_2d .. 3 finetune). Non-numbers dropped."""
    out = {metric_key(k): float(v) for k, v in metrics.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({EPOCH_METRIC: float(global_epoch), "stage_index": float(STAGE_INDEX.get(stage, -1))})
    return out


def score(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """Model-selection score of a history row: (mean AP, -MPJPE); None if the epoch was not evaluated."""
    ap = row.get("eval/ap_mean")
    if not isinstance(ap, (int, float)) or not math.isfinite(ap):
        return None
    mpjpe = row.get("eval/mpjpe")
    ok = isinstance(mpjpe, (int, float)) and math.isfinite(mpjpe)
    return float(ap), -float(mpjpe) if ok else -math.inf


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """Global epoch of the best evaluated row (earliest on ties), None if nothing was evaluated."""
    scored = [(s, -int(r["global_epoch"])) for r in history if (s := score(r)) is not None]
    return -max(scored)[1] if scored else None


def summary_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """The run's headline numbers: the last epoch's numeric metrics overlaid with the latest value of
    every ``eval/...`` metric (a finetune-free schedule ends on an evaluated epoch anyway)."""
    out: dict[str, float] = {}
    for row in history:
        out.update({k: float(v) for k, v in row.items() if k.startswith("eval/") and isinstance(v, (int, float))})
    if history:
        out.update({k: float(v) for k, v in history[-1].items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def logged_steps(run_id: str) -> set[int]:
    """Epoch steps the MLflow run already holds (from the ``epoch`` metric history)."""
    return {m.step for m in MlflowClient().get_metric_history(run_id, EPOCH_METRIC)}


class MlflowTracking(Callback):
    """Log the run of a `Trainer` to MLflow from rank 0 (other ranks do nothing).

    experiment / run_name: where and what; run_id: resume exactly this run; parent_run_id: nest under a
    sweep run; settings: tracking URI + credentials (default: `sp3d.settings.load_settings()`); tags: extra
    run tags (scrubbed); node: the Ray node id this rank 0 runs on (appended to ``sp3d.node_history``).
    After `on_train_start`, ``run_id`` holds the run in use.
    """

    def __init__(self, experiment: str, run_name: str, *, run_id: str | None = None,
                 parent_run_id: str | None = None, settings: Settings | None = None,
                 tags: Mapping[str, Any] | None = None, node: str | None = None) -> None:
        self.experiment, self.run_name, self.node = experiment, run_name, node
        self.run_id, self.parent_run_id = run_id, parent_run_id
        self.settings, self.tags = settings, dict(tags or {})
        self.enabled = True
        self._logged: set[int] = set()

    # ---- run lifecycle ---------------------------------------------------------------------------
    def _run_exists(self) -> bool:
        try:
            MlflowClient().get_run(self.run_id)
        except MlflowException:
            return False
        return True

    def _same_storage(self, run_id: str) -> bool:
        """False when the run records another run storage (a different training that reused the name)."""
        ours = self.tags.get("sp3d.storage")
        theirs = MlflowClient().get_run(run_id).data.tags.get("sp3d.storage")
        return ours is None or theirs is None or str(ours) == theirs

    def _open(self) -> None:
        if self.run_id is not None and not self._run_exists():
            self.run_id = None  # e.g. resumed against another tracking server: find or create by name
        if self.run_id is None:
            experiment_id = tracking.get_or_create_experiment(self.experiment)
            candidate = tracking.find_run(experiment_id, self.run_name, self.parent_run_id)
            if candidate is not None and self._same_storage(candidate):
                self.run_id = candidate  # a restart before the first checkpoint was committed
        if self.run_id is not None:
            tracking.start_run(self.experiment, run_id=self.run_id, tags=self.tags)
        else:
            tracking.start_run(self.experiment, self.run_name, tags=self.tags, parent_run_id=self.parent_run_id,
                               reuse=False)
        self.run_id = mlflow.active_run().info.run_id

    def on_train_start(self, trainer: Any) -> None:
        """Open (or reuse) the run, log config + tags, back-fill epochs of the resumed history."""
        if trainer.rank != 0:
            self.enabled = False
            return
        tracking.configure(self.settings)
        self._open()
        tracking.log_config(trainer.cfg)
        tags = MlflowClient().get_run(self.run_id).data.tags
        history = {RESUME_TAG: str(int(trainer.position["global_epoch"]) + 1), NODE_TAG: self.node}
        for tag, value in history.items():
            if value is not None:
                mlflow.set_tag(tag, f"{tags[tag]},{value}" if tags.get(tag) else value)
        self._logged = logged_steps(self.run_id)
        for row in trainer.history:
            self._log_epoch(row["stage"], int(row["global_epoch"]), row)

    def close(self, status: str = "FAILED") -> None:
        """End the active run with ``status`` (FINISHED / FAILED / KILLED); safe to call twice."""
        if self.enabled and mlflow.active_run() is not None:
            mlflow.end_run(status)

    # ---- per epoch -------------------------------------------------------------------------------
    def _log_epoch(self, stage: str, global_epoch: int, metrics: Mapping[str, Any]) -> bool:
        if global_epoch in self._logged:
            return False
        tracking.log_metrics(epoch_metrics(stage, global_epoch, metrics), step=global_epoch)
        self._logged.add(global_epoch)
        return True

    def on_epoch_end(self, trainer: Any, event: EpochEnd) -> None:
        """Log the epoch's metrics (once per step) and the weights when the epoch is the best so far."""
        if not self.enabled:
            return
        self._log_epoch(event.stage, event.global_epoch, event.metrics)
        if best_epoch(trainer.history) == event.global_epoch and not event.is_last:
            self._log_weights(trainer, "best")

    # ---- end of training -------------------------------------------------------------------------
    def _log_weights(self, trainer: Any, which: str) -> None:
        """Upload the current weights (no optimizer state) as ``checkpoints/<which>.pt``; tag the epoch."""
        with tempfile.TemporaryDirectory(prefix="sp3d-weights-") as tmp:
            path = save_checkpoint(Path(tmp) / f"{which}.pt", cfg=trainer.cfg, model=trainer.model.state_dict(),
                                   progress=dict(trainer.position), history=trainer.history)
            tracking.log_artifact_file(path, "checkpoints")
        mlflow.set_tag(BEST_TAG if which == "best" else FINAL_TAG, str(trainer.position["global_epoch"]))

    def _log_plots(self, trainer: Any) -> None:
        tracking.log_figure(plots.learning_curves(trainer.history, self.run_name), "plots/learning_curves.png")
        frames = predict_frames(trainer.model, trainer.test_set, trainer.cfg, trainer.device,
                                max_frames=SNAPSHOT_FRAMES)
        frame = next((f for f in frames if len(f.gt_poses)), frames[0] if frames else None)
        if frame is not None:
            tracking.log_figure(plots.pose_snapshot(frame), "plots/pose_snapshot.png")

    def on_train_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        """Log plots and the final (and, if it is the final epoch, best) weights once, then finish the run."""
        if not self.enabled:
            return
        last = str(trainer.position["global_epoch"])
        if MlflowClient().get_run(self.run_id).data.tags.get(FINAL_TAG) != last:
            self._log_plots(trainer)
            if best_epoch(trainer.history) == trainer.position["global_epoch"]:
                self._log_weights(trainer, "best")
            self._log_weights(trainer, "final")
        mlflow.end_run("FINISHED")


def fit_tracked(trainer: Any, tracker: MlflowTracking | None) -> None:
    """``trainer.fit()``; if it raises, the MLflow run (when tracked) is ended as FAILED, then re-raised."""
    try:
        trainer.fit()
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
