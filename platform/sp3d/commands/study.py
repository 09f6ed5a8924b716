"""`sp3d study ...`: paper-style studies built on the sweep machinery (`sp3d.sweep`) and read back with
`sp3d.compare`. Each study is one command of the `study` group: it builds an inline search space, runs it
as a sweep whose MLflow parent run is tagged ``sp3d.kind=study`` (so `sp3d compare NAME` and
`sp3d sweep --resume NAME` work on it), then prints the paper table and writes the plots.

Studies: ``robustness`` (supplementary Table 14: AP / MPJPE vs the number of camera views).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from selfpose3d.config import load_config
from sp3d.commands.sweep import print_comparison, print_outcome, print_plan, sweep_errors
from sp3d.commands.train import ensure_dataset
from sp3d.search_space import SearchSpace
from sp3d.settings import Settings, load_settings
from sp3d.sweep import DEFAULT_EXPERIMENT, SweepError, SweepOutcome, grid_subset, plan_sweep, run_sweep

console = Console()
study_app = typer.Typer(name="study", no_args_is_help=True,
                        help="Paper-style studies (a sweep + the paper's table side by side + plots).")
VIEWS_SPACE = "views"  # search_spaces/views.yaml: Table 14, its paper rows and VoxelPose references
VIEWS_KEY = "dataset.num_views"


def parse_views(text: str) -> list[int]:
    """``"3,4,5"`` -> ``[3, 4, 5]`` (sorted, unique). Raises SweepError for anything but integers >= 1."""
    try:
        views = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SweepError(f"--views {text!r}: expected comma-separated integers, e.g. 3,4,5") from None
    if not views or views[0] < 1:
        raise SweepError(f"--views {text!r}: expected integers >= 1")
    return views


def views_space(views: list[int], config: str | None, repeats: int = 1) -> SearchSpace:
    """The Table 14 space (search_spaces/views.yaml) restricted to ``views``, ``repeats`` seeds per value,
    validated against ``config`` (default: the file's base_config). Raises SearchSpaceError / SweepError."""
    return grid_subset(VIEWS_SPACE, VIEWS_KEY, views, config, repeats)


def _run_study(space: SearchSpace, settings: Settings, study: str, name: str | None, synth: bool,
               **options: Any) -> SweepOutcome:
    """Plan and run ``space`` as a study sweep named ``name`` (default ``<study>-<space>-<timestamp>``)."""
    from datetime import datetime

    name = name or f"{study}-{space.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    spec = plan_sweep(space, name=name, kind="study", settings=settings,
                      tags={"sp3d.study": name, "sp3d.study_type": study}, **options)
    ensure_dataset(load_config(spec.base_config, spec.sets), synth)
    print_plan(spec)
    return run_sweep(spec, settings)


@study_app.command("robustness")
def robustness(
    views: Annotated[str, typer.Option(help="Numbers of camera views to train and test with (the first N of "
                                       "dataset.camera_nodes), comma-separated.")] = "3,4,5",
    config: Annotated[str | None, typer.Option("--config", "-c", help="Preset or config YAML (default: tiny, "
                                               "as in search_spaces/views.yaml).")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key, KEY=VALUE "
                                                   "(repeatable).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per number of views (seeds train.seed + i); "
                                         "the table shows mean ± std.")] = 1,
    concurrent: Annotated[int, typer.Option(min=1, help="Runs at the same time.")] = 1,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Ray Train workers per run.")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(min=0, help="GPUs per worker.")] = 0.0,
    cpus_per_worker: Annotated[float | None, typer.Option(min=0.01, help="CPUs per worker.")] = None,
    storage: Annotated[str | None, typer.Option(help="Dir or s3://bucket/prefix (default <state dir>/sweeps).")]
    = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Study name (default "
                                             "robustness-views-<timestamp>).")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = DEFAULT_EXPERIMENT,
    out: Annotated[Path | None, typer.Option(help="Report + plot directory (default reports/<name>).")] = None,
    synth: Annotated[bool, typer.Option("--synth-if-missing/--no-synth", help="Generate a missing synthetic "
                                        "dataset first.")] = True,
) -> None:
    """Robustness to the number of camera views (SelfPose3d supplementary Table 14): train and evaluate one
    model per view count, then print AP25/AP50/AP100/MPJPE next to the paper's SelfPose3d rows and the
    VoxelPose references, and plot AP / MPJPE vs the number of views."""
    with sweep_errors():
        settings = load_settings()
        space = views_space(parse_views(views), config, repeats)
        outcome = _run_study(space, settings, "robustness", name, synth, config=config, sets=sets,
                             concurrent=concurrent, workers=workers, gpus_per_worker=gpus_per_worker,
                             cpus_per_worker=cpus_per_worker, storage=storage, experiment=experiment)
    print_outcome(outcome, storage)
    if outcome.complete:
        print_comparison(outcome, out or Path("reports") / outcome.name)


def register(app: typer.Typer) -> None:
    """Add the `sp3d study` group (robustness, ...) to the root app."""
    __import__("sp3d.commands.study_cross_scene", fromlist=["add_to"]).add_to(study_app)  # cross-scene
    app.add_typer(study_app, name="study")
