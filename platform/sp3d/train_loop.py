"""Ray Train (V2) glue: run the engine `Trainer` data-parallel on a `TorchTrainer`.

Ray Train initialises torch.distributed (gloo on CPU, nccl on GPU) and the engine wraps its stage
objective in DDP by itself, so the model is not passed through ``prepare_model``. After every epoch,
rank 0 writes the engine checkpoint (``model.pt``) and ``sp3d_run.json`` (MLflow run id, summary
metrics) into a temp dir and every rank calls ``ray.train.report`` once (only rank 0 with the
checkpoint). Restarting with the same run name and storage resumes from the latest checkpoint (Ray
Train V2 restores the run from storage); a failed worker group is restarted from it by
``FailureConfig(max_failures)``. MLflow is logged from rank 0 (`sp3d.run_tracking.MlflowTracking`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
from rich.console import Console

from selfpose3d.config import Config, config_to_dict
from selfpose3d.engine.callbacks import Callback, EpochEnd
from selfpose3d.engine.trainer import NonFiniteLossError, Trainer
from sp3d.progress import RichProgress
from sp3d.run_tracking import MlflowTracking, epoch_metrics, fit_tracked, summary_metrics
from sp3d.settings import Settings, load_settings
from sp3d.storage import CHECKPOINT_FILE, ensure_bucket, resolve_storage, split_s3_uri

RUN_INFO_FILE = "sp3d_run.json"
RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train V2 internal; only CrashOnce reads it
FAILED_FILE = "sp3d_failed.json"  # a deterministic failure (non-finite loss) of this run: never retried
DEFAULT_EXPERIMENT = "sp3d"


class RunExistsError(RuntimeError):
    """``resume=False`` but the storage already holds a run of that name."""


@dataclass
class TrainingResult:
    """What `run_training` returns.

    storage: the run's directory (local path or ``s3://bucket/prefix/name``); checkpoint: the latest
    checkpoint directory (holds ``model.pt``), None if no epoch finished; metrics: `summary_metrics` of
    the run (``train/...``, ``eval/ap25`` in [0, 1], ``eval/mpjpe`` mm, ...); mlflow_run_id / tracking_uri:
    where the run is tracked (None when tracking is off).
    """

    run_name: str
    experiment: str
    storage: str
    checkpoint: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None


class RayReporter(Callback):
    """After each epoch: rank 0 writes the checkpoint + run info; every rank calls ``ray.train.report`` once."""

    def __init__(self, tracker: MlflowTracking | None = None) -> None:
        self.tracker = tracker

    def on_epoch_end(self, trainer: Trainer, event: EpochEnd) -> None:
        """Report ``epoch_metrics`` (rank 0's carry eval/...) with the checkpoint from rank 0."""
        metrics = epoch_metrics(event.stage, event.global_epoch, event.metrics)
        with tempfile.TemporaryDirectory(prefix="sp3d-ckpt-") as tmp:
            checkpoint = None
            if trainer.rank == 0:
                trainer.save_checkpoint(Path(tmp) / CHECKPOINT_FILE)
                info = {"mlflow_run_id": self.tracker.run_id if self.tracker else None,
                        "global_epoch": event.global_epoch, "metrics": summary_metrics(trainer.history)}
                (Path(tmp) / RUN_INFO_FILE).write_text(json.dumps(info, indent=1))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{event.global_epoch:04d}")


class CrashOnce(Callback):
    """Testing hook: the worker of ``rank`` exits hard (``os._exit(1)``) at the first step of ``global_epoch``,
    once — a marker file records that it happened, so the restarted worker group trains on.

    run_dir: a local run directory; if given, wait (<= ``timeout_s``) until Ray's checkpoint manager has
    committed the previous epoch's checkpoint there, so the restart deterministically resumes from it
    (Ray collects reports asynchronously; a crash right after a report may otherwise lose it).
    """

    def __init__(self, rank: int, global_epoch: int, marker: str | Path, run_dir: str | Path | None = None,
                 timeout_s: float = 60.0) -> None:
        self.rank, self.global_epoch, self.marker = rank, global_epoch, Path(marker)
        self.run_dir, self.timeout_s = (Path(run_dir) if run_dir else None), timeout_s

    def _wait_committed(self) -> None:
        snapshot = self.run_dir / RAY_SNAPSHOT_FILE if self.run_dir else None
        wanted = f'"epoch_{self.global_epoch - 1:04d}"'
        deadline = time.monotonic() + self.timeout_s
        while snapshot is not None and time.monotonic() < deadline:
            if snapshot.is_file() and wanted in snapshot.read_text():
                return
            time.sleep(0.2)

    def on_step(self, trainer: Trainer, stage: str, step: int, total: int, losses: dict[str, float]) -> None:
        """Exit the process when the (rank, epoch) matches and the marker does not exist yet."""
        current = int(trainer.position["global_epoch"]) + 1
        if trainer.rank == self.rank and current == self.global_epoch and not self.marker.exists():
            self._wait_committed()
            self.marker.write_text(f"rank {self.rank} exited at epoch {current}\n")
            os._exit(1)


class EpochLines(RichProgress):
    """`RichProgress` for Ray workers: per-epoch lines from rank 0 (no live bars in forwarded logs) and no
    final table — the driver prints that."""

    def on_train_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """Stop the (inactive) bar without printing the table."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _read_run_info(directory: Path) -> dict[str, Any]:
    path = directory / RUN_INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _build_trainer(cfg: Config, callbacks: list[Callback], tracker: MlflowTracking | None) -> Trainer:
    device = ray.train.torch.get_device()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return Trainer(cfg, callbacks, device=device)
    with checkpoint.as_directory() as directory:
        if tracker is not None:
            tracker.run_id = tracker.run_id or _read_run_info(Path(directory)).get("mlflow_run_id")
        return Trainer(cfg, callbacks, resume_from=Path(directory) / CHECKPOINT_FILE, device=device)


def _failure_file(storage: str, run_name: str, settings: Settings) -> tuple[pafs.FileSystem, str]:
    storage_path, filesystem = resolve_storage(storage, settings)
    return filesystem or pafs.LocalFileSystem(), f"{storage_path}/{run_name}/{FAILED_FILE}"


def recorded_failure(storage: str, run_name: str, settings: Settings) -> str | None:
    """The error a previous attempt of run ``run_name`` recorded in `FAILED_FILE` (non-finite loss), or None."""
    fs, path = _failure_file(storage, run_name, settings)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as stream:
        error = json.loads(stream.read())["error"]
    where = f"s3://{path}" if not isinstance(fs, pafs.LocalFileSystem) else path
    return (f"{error} (recorded by an earlier attempt in {where}; not retried, it would fail the same way: "
            "change the config and use a new run name, or delete that file to retry)")


def _record_failure(storage: str, run_name: str, settings: Settings, error: BaseException) -> None:
    fs, path = _failure_file(storage, run_name, settings)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(json.dumps({"error": str(error)}).encode())


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker entry point. ``loop_config`` is built by `run_training` (config dict, tracking,
    experiment, run name, fault injection). Returns (rank 0) {"mlflow_run_id", "metrics"}."""
    cfg = Config.model_validate(loop_config["config"])
    rank = ray.train.get_context().get_world_rank()
    settings = load_settings(**loop_config["settings"])
    tracker = None
    if loop_config["track"] and rank == 0:
        tracker = MlflowTracking(loop_config["experiment"], loop_config["run_name"], settings=settings,
                                 parent_run_id=loop_config.get("parent_run_id"), tags=loop_config.get("tags"),
                                 node=ray.get_runtime_context().get_node_id())
    callbacks: list[Callback] = [RayReporter(tracker)]
    if tracker is not None:
        callbacks.append(tracker)
    if loop_config.get("progress", True):
        callbacks.append(EpochLines(Console(force_terminal=False, width=120)))
    if loop_config.get("fault"):
        callbacks.insert(0, CrashOnce(**loop_config["fault"]))
    previous = recorded_failure(loop_config["storage"], loop_config["run_name"], settings)
    if previous is not None:  # Ray restarted the worker group after a deterministic failure: stop at once
        raise NonFiniteLossError(previous)
    trainer = _build_trainer(cfg, callbacks, tracker)
    try:
        fit_tracked(trainer, tracker)
    except NonFiniteLossError as err:
        _record_failure(loop_config["storage"], loop_config["run_name"], settings, err)
        raise
    if rank != 0:
        return None
    return {"mlflow_run_id": tracker.run_id if tracker else None, "metrics": summary_metrics(trainer.history)}


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to ``$RAY_ADDRESS`` (a cluster) or start a local Ray instance, unless Ray is already up."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, num_cpus=num_cpus, log_to_driver=True)


def default_cpus_per_worker(workers: int) -> float:
    """CPUs per worker: 1, or the largest share with which ``workers`` workers fit on the nodes at once
    (`sp3d.resources.cpu_share`) when the cluster is smaller."""
    from sp3d.resources import cpu_share, node_cpus

    return cpu_share(node_cpus(), workers)


def _storage(storage: str | Path, settings: Settings) -> tuple[str, pafs.FileSystem | None, str]:
    """Ray's (storage_path, filesystem) and a printable location; creates a missing S3 bucket."""
    storage_path, filesystem = resolve_storage(storage, settings)
    if filesystem is not None:
        ensure_bucket(settings, split_s3_uri(str(storage))[0])
        return storage_path, filesystem, f"s3://{storage_path}"
    return storage_path, None, storage_path


def _run_exists(storage_path: str, filesystem: pafs.FileSystem | None, run_name: str) -> bool:
    fs = filesystem or pafs.LocalFileSystem()
    return fs.get_file_info(f"{storage_path}/{run_name}").type != pafs.FileType.NotFound


def _settings_for_workers(settings: Settings) -> dict[str, Any]:
    """The non-secret settings the workers need to reach MLflow (credentials come from their environment)."""
    return {"state_dir": str(settings.state_dir), "mlflow_tracking_uri": settings.tracking_uri,
            "s3_endpoint": settings.s3_endpoint, "artifact_bucket": settings.artifact_bucket}


def _absolute_data(cfg: Config) -> Config:
    root = Path(cfg.dataset.root).expanduser()
    return cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"root": str(root.resolve())})})


def run_training(cfg: Config, *, run_name: str, storage: str | Path, experiment: str = DEFAULT_EXPERIMENT,
                 workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None,
                 resume: bool = True, max_failures: int = 2, keep_checkpoints: int = 2, track: bool = True,
                 settings: Settings | None = None, parent_run_id: str | None = None,
                 tags: Mapping[str, Any] | None = None, ray_callbacks: Sequence[Any] = (),
                 progress: bool = True, fault_injection: Mapping[str, Any] | None = None) -> TrainingResult:
    """Train ``cfg`` with Ray Train on ``workers`` data-parallel workers and return a `TrainingResult`.

    storage: local dir or ``s3://bucket/prefix`` (bucket created if missing); the run lives in
    ``<storage>/<run_name>`` and resumes from there when it exists (``resume=False`` raises
    `RunExistsError` instead). gpus_per_worker > 0 uses CUDA + nccl; cpus_per_worker defaults to
    `default_cpus_per_worker`. max_failures: worker-group restarts from the last checkpoint;
    keep_checkpoints: checkpoints kept in storage. track: log to MLflow (``experiment``, nested under
    ``parent_run_id``) with ``settings`` (default: `load_settings()`). ray_callbacks: Ray Train
    ``UserCallback``s (e.g. Tune's report callback). fault_injection: testing only, `CrashOnce` kwargs.
    Raises ray.train.TrainingFailedError when training fails for good (see `root_cause`).
    """
    settings = settings or load_settings()
    storage_path, filesystem, where = _storage(storage, settings)
    if not resume and _run_exists(storage_path, filesystem, run_name):
        raise RunExistsError(f"{where}/{run_name} already exists: pick another run name or resume it")
    previous = recorded_failure(str(storage), run_name, settings)
    if previous is not None:
        raise NonFiniteLossError(previous)
    ensure_ray()
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker or default_cpus_per_worker(workers)}
    if use_gpu:
        resources["GPU"] = gpus_per_worker
    loop_config = {"config": config_to_dict(_absolute_data(cfg)), "experiment": experiment, "run_name": run_name,
                   "storage": str(storage) if "://" in str(storage) else str(Path(storage).resolve()),
                   "track": track, "settings": _settings_for_workers(settings), "parent_run_id": parent_run_id,
                   "tags": {"sp3d.run_name": run_name, "sp3d.storage": f"{where}/{run_name}",
                            "sp3d.workers": workers, **dict(tags or {})},
                   "progress": progress, "fault": dict(fault_injection) if fault_injection else None}
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=list(ray_callbacks)))
    result = trainer.fit()
    return _training_result(result, run_name, experiment, where, settings if track else None, filesystem)


def _checkpoint_info(checkpoint: Any) -> dict[str, Any]:
    """Read ``sp3d_run.json`` straight from a Ray checkpoint's filesystem (no full download)."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{RUN_INFO_FILE}") as stream:
            return json.loads(stream.read())
    except (OSError, ValueError):
        return {}


def _training_result(result: Any, run_name: str, experiment: str, where: str, settings: Settings | None,
                     filesystem: pafs.FileSystem | None) -> TrainingResult:
    returned = result.return_value or {}
    info = _checkpoint_info(result.checkpoint) if result.checkpoint is not None else {}
    checkpoint = None
    if result.checkpoint is not None:
        checkpoint = f"s3://{result.checkpoint.path}" if filesystem is not None else result.checkpoint.path
    return TrainingResult(
        run_name=run_name, experiment=experiment, storage=f"{where}/{run_name}", checkpoint=checkpoint,
        metrics=returned.get("metrics") or info.get("metrics") or {},
        mlflow_run_id=returned.get("mlflow_run_id") or info.get("mlflow_run_id"),
        tracking_uri=settings.tracking_uri if settings is not None else None)


def root_cause(error: BaseException) -> BaseException:
    """The user-level exception behind a Ray Train failure (first failed worker's error, unwrapped)."""
    failures = getattr(error, "worker_failures", None)
    if failures:
        error = next(iter(failures.values()))
    inner = getattr(error, "controller_failure", None)
    if inner is not None:
        error = inner
    cause = getattr(error, "cause", None)  # RayTaskError keeps the original exception here
    return cause if isinstance(cause, BaseException) else error
