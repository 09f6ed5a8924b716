"""`sp3d demo`: the main job end to end on a laptop — the tiny synthetic dataset (generated if missing), a
small lambda sweep (paper Table 11: each trial a short Ray Train run, Ray Tune on a local Ray, MLflow in a
local sqlite store unless `sp3d stack up` / MLFLOW_TRACKING_URI say otherwise), then the paper-style
comparison table and plots (`sp3d.compare`) and where to look."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from selfpose3d.config import load_config
from sp3d.commands.sweep import print_comparison, print_outcome, print_plan, sweep_errors
from sp3d.commands.train import ensure_dataset
from sp3d.settings import load_settings
from sp3d.sweep import SweepError, grid_subset, plan_sweep, run_sweep

console = Console()
DEMO_EXPERIMENT = "sp3d-demo"
DEMO_SPACE, DEMO_KEY = "lambda", "loss.joint_lambda"  # search_spaces/lambda.yaml (Table 11)
DEMO_LAMBDAS = "0.01,1.0"  # the paper's choice and its worst value
# A short budget on top of the `tiny` preset: 4 steps per epoch, one epoch per stage, 4 test frames.
DEMO_OVERRIDES: dict[str, Any] = {
    "train.max_iters_per_epoch": 4,
    "train.backbone_2d.epochs": 1,
    "train.root_net.epochs": 1,
    "train.pose_net.epochs": 1,
    "train.finetune.epochs": 0,
    "eval.max_test_frames": 4,
}


def parse_lambdas(text: str) -> list[float]:
    """``"0.01,1.0"`` -> ``[0.01, 1.0]`` (unique, in order). Raises SweepError for non-numbers."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SweepError(f"--lambdas {text!r}: expected comma-separated numbers, e.g. 0.01,1.0") from None
    if not values:
        raise SweepError("--lambdas: expected at least one value")
    return list(dict.fromkeys(values))


def demo_sets(sets: list[str] | None) -> list[str]:
    """`DEMO_OVERRIDES` as ``KEY=VALUE`` strings followed by the user's (which win)."""
    return [f"{k}={json.dumps(v)}" for k, v in DEMO_OVERRIDES.items()] + list(sets or [])


def demo(
    lambdas: Annotated[str, typer.Option(help="Values of loss.joint_lambda to compare (a subset of the paper's "
                                         "0.001, 0.01, 0.1, 1.0), comma-separated.")] = DEMO_LAMBDAS,
    concurrent: Annotated[int, typer.Option(min=1, help="Trials running at the same time.")] = 2,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Ray Train workers per trial (DDP "
                                         "over CPU cores).")] = 1,
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="Extra KEY=VALUE overrides of the tiny "
                                                   "preset (e.g. -s train.max_iters_per_epoch=2).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Sweep name (default "
                                             "demo-lambda-<timestamp>).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report + plot directory (default reports/<name>).")] = None,
) -> None:
    """Run the demo: generate the tiny synthetic dataset if missing, sweep lambda (Table 11) with Ray Tune,
    each trial a short Ray Train run tracked in MLflow, then print the comparison with the paper's values,
    the plot files and the next commands (`sp3d compare NAME`, `mlflow ui ...`)."""
    started = time.monotonic()
    with sweep_errors():
        settings = load_settings()
        space = grid_subset(DEMO_SPACE, DEMO_KEY, parse_lambdas(lambdas))
        spec = plan_sweep(space, sets=demo_sets(sets), concurrent=concurrent, workers=workers,
                          name=name or f"demo-lambda-{datetime.now().strftime('%Y%m%d-%H%M%S')}",
                          experiment=DEMO_EXPERIMENT, settings=settings)
        ensure_dataset(load_config(spec.base_config, spec.sets), synth_if_missing=True)
        print_plan(spec)
        outcome = run_sweep(spec, settings)
    print_outcome(outcome)
    if outcome.complete:
        print_comparison(outcome, out or Path("reports") / outcome.name)
    console.print(f"demo finished in {time.monotonic() - started:.0f} s", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `sp3d demo` to the root app."""
    app.command("demo", help=demo.__doc__)(demo)
