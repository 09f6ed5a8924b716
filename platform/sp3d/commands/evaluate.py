"""`sp3d eval`: evaluate an engine checkpoint on a config's test split (AP@25..150, MPJPE, Recall@500),
optionally per sequence (SelfPose3d paper Table 8 layout) and as JSON."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from pydantic import ValidationError
from rich.console import Console

from selfpose3d.config import Config, ConfigError, config_to_dict, load_config, parse_overrides
from selfpose3d.data.dataset import build_dataset
from selfpose3d.engine.checkpoint import CheckpointError, load_checkpoint
from selfpose3d.engine.evaluate import evaluate_model
from selfpose3d.engine.trainer import pick_device
from selfpose3d.evaluation import format_table, save_report
from selfpose3d.models import SelfPose3dModel
from sp3d.commands.train import user_errors
from sp3d.progress import metrics_table
from sp3d.settings import load_settings
from sp3d.storage import fetch_checkpoint

console = Console()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def eval_config(embedded: Config, config: str | None, sets: list[str]) -> Config:
    """The config to evaluate with: ``config`` (preset / YAML) if given, else the checkpoint's embedded
    one, with ``KEY=VALUE`` overrides applied. Raises `ConfigError` naming the key."""
    if config is not None:
        return load_config(config, sets)
    try:
        return Config.model_validate(_merge(config_to_dict(embedded), parse_overrides(sets)))
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"checkpoint config: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def load_model(payload: dict[str, Any], cfg: Config, device: torch.device, path: Path) -> SelfPose3dModel:
    """Build the model of ``cfg`` on ``device`` and load the weights of a `load_checkpoint` payload (read
    from ``path``); `CheckpointError` when they do not fit."""
    model = SelfPose3dModel(cfg).to(device)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the config's model ({str(err).splitlines()[0]})") from None
    return model


def evaluate(
    checkpoint: Annotated[str, typer.Option("--checkpoint", "-k", help="Engine checkpoint: a file (model.pt, "
                                            "best.pt, final.pt), a run's checkpoint dir, s3://bucket/key (file "
                                            "or dir) or an MLflow artifact URI runs:/<run id>/checkpoints/best.pt.",
                                            show_default=False)],
    config: Annotated[str | None, typer.Option("--config", "-c", help="Preset or YAML to evaluate with "
                                               "(default: the config embedded in the checkpoint).")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override KEY=VALUE, repeatable "
                                                   "(e.g. -s dataset.root=/data/panoptic).")] = None,
    per_sequence: Annotated[bool, typer.Option("--per-sequence", help="Also print one row per test sequence "
                                               "(paper Table 8 layout).")] = False,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Evaluate at most this many test frames "
                                                   "(default eval.max_test_frames).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics (and per-sequence table) "
                                             "as JSON here.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Evaluate a checkpoint on the test split: AP@25..150 (%), MPJPE (mm), Recall@500 (%); exit 1 on an
    unreadable checkpoint or dataset, 2 on a bad config."""
    with user_errors(), tempfile.TemporaryDirectory(prefix="sp3d-eval-") as tmp:
        torch_device = pick_device(device)
        path = fetch_checkpoint(checkpoint, load_settings(), Path(tmp))
        payload = load_checkpoint(path, map_location=torch_device)
        cfg = eval_config(payload["config"], config, sets or [])
        model = load_model(payload, cfg, torch_device, path)
        dataset = build_dataset(cfg, "test", copies=False)
        metrics = evaluate_model(model, dataset, cfg, torch_device, per_sequence=per_sequence, max_frames=max_frames)
    console.print(metrics_table(metrics, title=f"{checkpoint}: {cfg.name} test split"))
    if per_sequence and "sequences" in metrics:
        console.print(format_table(metrics["sequences"]), highlight=False)
    if out is not None:
        save_report(metrics, out)
        console.print(f"wrote {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `sp3d eval` to the root app."""
    app.command("eval", help=evaluate.__doc__)(evaluate)
