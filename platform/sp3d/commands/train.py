"""`sp3d train`: train a config with Ray Train (data-parallel workers, S3/local storage, auto-resume) or
in-process (``--local``), tracked in MLflow; prints the evaluation table and where to look afterwards."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.markup import escape

from selfpose3d.config import Config, ConfigError, load_config
from selfpose3d.data.dataset import build_dataset
from selfpose3d.data.io import DatasetError
from selfpose3d.data.synthetic import MANIFEST, generate_dataset
from selfpose3d.data.synthetic.writer import RENDERER_VERSION, written_renderer_version
from selfpose3d.engine.checkpoint import CheckpointError
from selfpose3d.engine.trainer import NonFiniteLossError
from sp3d.progress import metrics_table
from sp3d.settings import Settings, SettingsError, load_settings
from sp3d.storage import StorageError
from sp3d.tracking import TrackingError
from sp3d.train_loop import CHECKPOINT_FILE, DEFAULT_EXPERIMENT, RunExistsError, TrainingResult

console = Console()
err_console = Console(stderr=True)
USER_ERRORS = (ConfigError, DatasetError, CheckpointError, NonFiniteLossError, StorageError, SettingsError,
               TrackingError, RunExistsError)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` (one line, stderr) and return the `typer.Exit` to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message.splitlines()[0] if message else 'failed')}",
                      highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the platform's expected failures (bad config / data / checkpoint, NaN loss, storage, a failed
    Ray run caused by one of them) into a one-line message and a non-zero exit."""
    from ray.train import TrainingFailedError

    from sp3d.train_loop import root_cause

    try:
        yield
    except ConfigError as err:
        raise fail(str(err), 2) from None
    except USER_ERRORS as err:
        raise fail(f"{type(err).__name__}: {err}") from None
    except TrainingFailedError as err:
        cause = root_cause(err)
        raise fail(f"training failed: {type(cause).__name__}: {str(cause).strip()}") from None


def ensure_dataset(cfg: Config, synth_if_missing: bool) -> None:
    """Generate the synthetic dataset of ``cfg`` if it is missing (and allowed), then check both splits
    load (raises `DatasetError` naming the file otherwise)."""
    root = Path(cfg.dataset.root)
    if cfg.dataset.kind == "synthetic" and not (root / MANIFEST).is_file():
        if not synth_if_missing:
            raise DatasetError(f"{root}: synthetic dataset missing (run `sp3d data synth` or pass --synth-if-missing)")
        if root.exists() and any(root.iterdir()):
            raise DatasetError(f"{root}: not empty and has no {MANIFEST}; refusing to generate into it")
        console.print(f"synthetic dataset {root} missing: generating it ({cfg.synth.frames} frames x "
                      f"{len(cfg.synth.sequences)} sequences, {cfg.synth.cameras} cameras)...", highlight=False)
        generate_dataset(cfg, root)
    elif cfg.dataset.kind == "synthetic" and written_renderer_version(root) != RENDERER_VERSION:
        console.print(f"[yellow]warning:[/] {root} was rendered by an older synthetic renderer (people without "
                      "faces); regenerate it with `sp3d data synth --force` for comparable results", highlight=False)
    build_dataset(cfg, "train")
    build_dataset(cfg, "test", copies=False)


def mlflow_hint(uri: str, run_id: str | None = None) -> str:
    """How to open an MLflow tracking URI: a `mlflow ui` command for a local store, else the run's URL."""
    if urlparse(uri).scheme in ("sqlite", "file", ""):
        return f"mlflow ui --backend-store-uri {uri}"
    try:
        from mlflow.tracking import MlflowClient

        experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id if run_id else None
    except Exception:  # the server may be gone by now; the bare URI still helps
        experiment_id = None
    return f"{uri}/#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else uri


def print_where(result: TrainingResult, resume_hint: str | None = None) -> None:
    """Print the metrics table and where the run's MLflow run, checkpoints and storage are."""
    console.print(metrics_table(result.metrics, title=f"{result.run_name}: evaluation (test split)"))
    if result.mlflow_run_id:
        console.print(f"MLflow: experiment [bold]{result.experiment}[/], run {result.mlflow_run_id}", highlight=False)
        console.print(f"  open: {mlflow_hint(result.tracking_uri or '', result.mlflow_run_id)}", highlight=False, soft_wrap=True)
    else:
        console.print("MLflow: tracking off", highlight=False)
    model = f"{result.checkpoint}/{CHECKPOINT_FILE}" if result.checkpoint else "-"
    console.print(f"checkpoint: {model}", highlight=False, soft_wrap=True)
    if result.checkpoint and "://" not in result.checkpoint:
        console.print(f"  evaluate: sp3d eval --checkpoint {shlex.quote(model)} --per-sequence",
                      highlight=False, soft_wrap=True)
    console.print(f"run storage: {result.storage}", highlight=False, soft_wrap=True)
    if resume_hint:
        console.print(f"resume / extend: {resume_hint}", highlight=False, soft_wrap=True)


def default_run_name(cfg: Config) -> str:
    """``<config name>-<YYYYmmdd-HHMMSS>`` (a new run; pass --name to resume one)."""
    return f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(
    config: Annotated[str, typer.Option("--config", "-c", help="Preset (tiny, panoptic, shelf, campus) or YAML file "
                                        "(may say `base: tiny`).")] = "tiny",
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key, KEY=VALUE "
                                                   "(YAML value), repeatable: -s train.pose_net.epochs=4.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Train in this process without Ray (one process, "
                                        "RichProgress bars); checkpoints in <storage>/<name>/checkpoint.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Ray Train data-parallel workers "
                                         "(DDP: gloo on CPU, nccl on GPU).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(min=0, help="GPUs per worker (0 = CPU).")] = 0.0,
    cpus_per_worker: Annotated[float | None, typer.Option(min=0.01, help="CPUs per worker (default: 1, or "
                                                          "a fraction on small machines).")] = None,
    storage: Annotated[str | None, typer.Option(help="Run storage: a dir or s3://bucket/prefix (endpoint from "
                                                "SP3D_S3_ENDPOINT). Default <state dir>/runs.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Run name; an existing run of this name in "
                                             "the storage is resumed from its last checkpoint (and its MLflow "
                                             "run reused). Default <config>-<timestamp>.")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = DEFAULT_EXPERIMENT,
    synth: Annotated[bool, typer.Option("--synth-if-missing/--no-synth", help="Generate a missing synthetic "
                                        "dataset first (dataset.kind=synthetic).")] = True,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log params, tags, per-epoch metrics, plots "
                                        "and best/final weights to MLflow (MLFLOW_TRACKING_URI, the "
                                        "`sp3d stack` profile, or local sqlite).")] = True,
    max_failures: Annotated[int, typer.Option(min=0, help="Ray: restarts of a failed worker group from the "
                                              "last checkpoint.")] = 2,
    keep_checkpoints: Annotated[int, typer.Option(min=1, help="Ray: checkpoints kept in storage.")] = 2,
) -> None:
    """Train a SelfPose3d config stage by stage (backbone_2d -> root_net -> pose_net -> finetune), evaluate
    after pose-producing epochs, and print AP25/50/100/150, MPJPE, Recall@500 and where to look.

    Exit codes: 0 ok, 1 bad data/checkpoint/storage or a failed run, 2 bad config or option.
    """
    with user_errors():
        settings = load_settings()
        cfg = load_config(config, sets or [])
        ensure_dataset(cfg, synth)
        run_name = name or default_run_name(cfg)
        where = storage or str(settings.state_dir / "runs")
        result = _run(cfg, local, run_name, where, experiment, track, settings, workers, gpus_per_worker,
                      cpus_per_worker, max_failures, keep_checkpoints)
    words = ["sp3d", "train", "-c", config, *[w for s in sets or [] for w in ("-s", s)], "--storage", where,
             "--name", run_name, *(["--local"] if local else [])]
    print_where(result, shlex.join(words))


def _run(cfg: Config, local: bool, run_name: str, storage: str, experiment: str, track: bool, settings: Settings,
         workers: int, gpus: float, cpus: float | None, max_failures: int, keep: int) -> TrainingResult:
    if local:
        from sp3d.local_train import run_local

        return run_local(cfg, run_name=run_name, storage=storage, experiment=experiment, track=track,
                         settings=settings)
    from sp3d.train_loop import run_training

    console.print(f"Ray Train: {workers} worker(s), run {run_name} in {storage}", highlight=False)
    return run_training(cfg, run_name=run_name, storage=storage, experiment=experiment, workers=workers,
                        gpus_per_worker=gpus, cpus_per_worker=cpus, max_failures=max_failures,
                        keep_checkpoints=keep, track=track, settings=settings)


def register(app: typer.Typer) -> None:
    """Add `sp3d train` to the root app."""
    app.command("train", help=train.__doc__)(train)
