"""Trial side of `sp3d sweep`: the Tune function trainable that runs one Ray Train run per trial.

Tune (Train V2) cannot drive a `TorchTrainer` directly, so every trial is a small function trainable
(`make_trainable`) that turns its sampled config into a `Config`, makes sure its MLflow child run exists
(with ``sweep.<key>`` params) and calls `sp3d.train_loop.run_training` with run name = Tune trial id and
a fixed storage, so a restarted trial resumes its Train run from the last checkpoint and reuses its
MLflow run. `SweepReportCallback` forwards the evaluated epochs to Tune with the space's objective keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from ray.tune.integration.ray_train import TuneReportCallback

from selfpose3d.config import Config, load_config
from sp3d import tracking
from sp3d.search_space import SearchSpace, metric_value
from sp3d.settings import Settings, load_settings

EPOCHS_KEY = "epochs_trained"  # global epochs finished (all stages); ASHA's time attribute
REPEAT_KEY = "sp3d.repeat"  # grid repeat index (seed offset); not a swept param
GRID_POINT_KEY = "sp3d.grid_point"  # conditional grids: one Tune grid value = one whole grid point
SWEEP_PARAM_PREFIX = "sweep."
TRAIN_SECONDS = "train_seconds"
TUNE_MAX_FAILURES = 1
# What a trial reports to Tune besides the objectives (Tune's tables and result files stay readable).
TUNE_KEYS = ("epoch", "train/total", "eval/ap25", "eval/ap50", "eval/ap100", "eval/ap150", "eval/ap_mean",
             "eval/mpjpe", "eval/recall500", "eval/root_ap50")


def total_epochs(cfg: Config) -> int:
    """Epochs of the whole schedule (backbone_2d + root_net + pose_net + finetune)."""
    t = cfg.train
    return t.backbone_2d.epochs + t.root_net.epochs + t.pose_net.epochs + t.finetune.epochs


def first_evaluated_epoch(cfg: Config) -> int:
    """Value of `EPOCHS_KEY` at the first evaluated epoch (evaluation starts with root_net), >= 1."""
    return min(cfg.train.backbone_2d.epochs + 1, max(total_epochs(cfg), 1))


def tune_result(row: Mapping[str, Any], objectives: Sequence[str], started: float) -> dict[str, Any] | None:
    """One epoch's metrics (``epoch_metrics`` or ``summary_metrics``) -> the Tune result, or None for an
    epoch without evaluation.

    Keeps the headline `TUNE_KEYS` (MLflow has everything), adds each objective under the space's name
    (``ap50`` from ``eval/ap50``; NaN when the evaluation did not produce it, e.g. MPJPE without any
    match), ``train_seconds`` (wall-clock s since this trial attempt started) and `EPOCHS_KEY` (epochs
    trained = global epoch + 1).
    """
    if not any(str(k).startswith("eval/") for k in row):
        return None
    out = {k: v for k, v in row.items() if k in TUNE_KEYS}
    out[TRAIN_SECONDS] = float(row.get(TRAIN_SECONDS, time.time() - started))
    for name in objectives:
        value = metric_value({**row, **out}, name)
        out[name] = float("nan") if value is None else value
    out[EPOCHS_KEY] = int(row.get("epoch", row.get("global_epoch", -1))) + 1
    return out


class SweepReportCallback(TuneReportCallback):
    """Ray Train V2 callback (runs in the Train controller): forwards rank 0's metrics of every evaluated
    epoch to the enclosing Tune trial via `tune_result`; epochs without evaluation are not reported."""

    def __init__(self, objectives: Sequence[str], started: float) -> None:
        super().__init__()
        self.objectives, self.started = list(objectives), started

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        """Translate and forward (see `tune_result`); skip epochs without evaluation."""
        row = tune_result(metrics[0], self.objectives, self.started) if metrics else None
        if row is not None:
            super().after_report(run_context, [row], checkpoint)


def split_trial_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Tune trial config -> (sampled dotted params incl. fixed, grid repeat index)."""
    sampled = {k: v for k, v in config.items() if k not in (REPEAT_KEY, GRID_POINT_KEY)}
    sampled.update(config.get(GRID_POINT_KEY) or {})
    return sampled, int(config.get(REPEAT_KEY, 0))


def trial_config(spec: Mapping[str, Any], overrides: Mapping[str, Any], repeat: int = 0) -> Config:
    """The trial's `Config`: base config + user --set + the space's overrides; repeat r adds r to the seed."""
    cfg = load_config(spec["base_config"], {**spec["sets"], **overrides})
    if repeat:
        cfg = load_config(spec["base_config"], {**spec["sets"], **overrides, "train.seed": cfg.train.seed + repeat})
    return cfg


def open_child_run(experiment: str, run_name: str, parent_run_id: str, tags: Mapping[str, Any],
                   params: Mapping[str, Any]) -> str:
    """Find (any status, newest first) or create the MLflow child run ``run_name`` under the sweep's
    parent run, log the missing ``params`` and return its id. Training (`MlflowTracking`) then reuses
    this run by name + parent, so a trial restarted after a driver crash never gets a second run."""
    client = MlflowClient()
    experiment_id = tracking.get_or_create_experiment(experiment)
    query = f"tags.mlflow.runName = '{run_name}' and tags.`{tracking.PARENT_TAG}` = '{parent_run_id}'"
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=5)
    if runs:
        run = runs[0]
    else:
        clean = {k: str(v) for k, v in tracking.scrub(dict(tags)).items()}
        run = client.create_run(experiment_id, run_name=run_name, tags={**clean, tracking.PARENT_TAG: parent_run_id})
    missing = [Param(k, str(v)) for k, v in params.items() if k not in run.data.params]
    if missing:
        client.log_batch(run.info.run_id, params=missing)
    return run.info.run_id


def run_trial(config: dict[str, Any], spec: Mapping[str, Any]) -> None:
    """Body of the Tune trainable: build the trial's config, open its MLflow child run and train it with
    Ray Train (see module docstring). ``spec`` is `sp3d.sweep.SweepSpec.trial_payload()`."""
    from ray import tune

    from sp3d.train_loop import run_training

    started = time.time()
    trial_id = tune.get_context().get_trial_id()
    space = SearchSpace.model_validate(spec["space"])
    sampled, repeat = split_trial_config(config)
    overrides = space.to_overrides(sampled)
    swept = {k: v for k, v in overrides.items() if k in space.params}
    cfg = trial_config(spec, overrides, repeat)
    settings: Settings = load_settings(**spec["settings"])
    tracking.configure(settings)
    tags = {**spec["trial_tags"], "sp3d.trial_id": trial_id, "sp3d.repeat": repeat}
    open_child_run(spec["experiment"], trial_id, spec["parent_run_id"], tags,
                   {f"{SWEEP_PARAM_PREFIX}{k}": v for k, v in swept.items()})
    result = run_training(
        cfg, run_name=trial_id, storage=spec["train_storage"], experiment=spec["experiment"],
        workers=spec["workers"], gpus_per_worker=spec["gpus_per_worker"], cpus_per_worker=spec["cpus_per_worker"],
        resume=True, max_failures=spec["max_failures"], track=True, settings=settings,
        parent_run_id=spec["parent_run_id"], tags=tags, progress=False,
        ray_callbacks=[SweepReportCallback(space.metrics, started)])
    final = tune_result(result.metrics, space.metrics, started)
    if final is not None:  # a restored, already finished Train run reports nothing by itself
        tune.report(final)


def make_trainable(spec: Mapping[str, Any]) -> Callable[[dict[str, Any]], None]:
    """The Tune function trainable of a sweep (a closure over the JSON-able trial ``spec``)."""
    payload = dict(spec)

    def sp3d_trial(config: dict[str, Any]) -> None:
        run_trial(config, payload)

    return sp3d_trial

