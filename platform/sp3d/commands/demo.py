"""`sp3d demo`: the whole platform end to end on a laptop — synthetic data, a short Ray Train run tracked in
MLflow — then where to look. The demo is a list of `DemoRun` steps so a sweep can be added as a step."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from selfpose3d.config import load_config
from sp3d.commands.train import ensure_dataset, print_where, user_errors
from sp3d.settings import Settings, load_settings
from sp3d.train_loop import TrainingResult

console = Console()
DEMO_EXPERIMENT = "sp3d-demo"
# A short budget on top of the `tiny` preset: about 2-4 minutes on 2 CPU cores with 2 workers.
DEMO_OVERRIDES: dict[str, Any] = {
    "train.max_iters_per_epoch": 4,
    "train.backbone_2d.epochs": 1,
    "train.root_net.epochs": 1,
    "train.pose_net.epochs": 1,
    "train.finetune.epochs": 0,
    "eval.max_test_frames": 4,
}


@dataclass
class DemoRun:
    """One demo step: a Ray Train run of the `tiny` preset with ``overrides`` (dotted keys)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


def demo_plan() -> list[DemoRun]:
    """The demo's steps in order (today one training run; a sweep step goes here later)."""
    return [DemoRun("train", dict(DEMO_OVERRIDES))]


def run_step(step: DemoRun, stamp: str, settings: Settings, workers: int, sets: list[str],
             track: bool) -> TrainingResult:
    """Run one `DemoRun` (generating the synthetic data if missing) and return its result."""
    from sp3d.train_loop import run_training

    cfg = load_config("tiny", {**step.overrides, **_dotted(sets)})
    ensure_dataset(cfg, synth_if_missing=True)
    run_name = f"demo-{step.name}-{stamp}"
    console.rule(f"demo step {step.name}: Ray Train, {workers} worker(s), run {run_name}")
    return run_training(cfg, run_name=run_name, storage=settings.state_dir / "runs", experiment=DEMO_EXPERIMENT,
                        workers=workers, track=track, settings=settings, max_failures=1)


def _dotted(sets: list[str]) -> dict[str, Any]:
    """``["a.b=1"]`` -> ``{"a.b": 1}`` (values parsed as YAML, like --set of `sp3d train`)."""
    import yaml

    from selfpose3d.config import ConfigError

    out = {}
    for text in sets:
        if "=" not in text:
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
        key, value = text.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def demo(
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Ray Train workers (DDP over CPU "
                                         "cores).")] = 2,
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="Extra KEY=VALUE overrides of the tiny "
                                                   "preset for every step (e.g. -s train.max_iters_per_epoch=2).")]
    = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log to MLflow (local sqlite in the state "
                                        "dir unless `sp3d stack up` / MLFLOW_TRACKING_URI says otherwise).")]
    = True,
) -> None:
    """Run the demo: generate the tiny synthetic dataset if missing, train it briefly with Ray Train
    (data-parallel workers, checkpoints in <state dir>/runs), track it in MLflow, print where to look."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with user_errors():
        settings = load_settings()
        results = [run_step(step, stamp, settings, workers, sets or [], track) for step in demo_plan()]
    for result in results:
        print_where(result)
    console.print(f"\nAll runs: experiment [bold]{DEMO_EXPERIMENT}[/] in MLflow; checkpoints under "
                  f"{settings.state_dir / 'runs'}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `sp3d demo` to the root app."""
    app.command("demo", help=demo.__doc__)(demo)
