"""`sp3d sweep SPACE`: a Ray Tune search (Optuna TPE, or an exhaustive grid) where every trial is a Ray Train
run tracked as an MLflow child run of the sweep's parent run; `sp3d sweep --resume NAME` continues one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from selfpose3d.config import ConfigError, load_config
from sp3d.commands.train import USER_ERRORS, ensure_dataset, fail, mlflow_hint
from sp3d.compare import format_param
from sp3d.search_space import SearchSpaceError
from sp3d.settings import load_settings
from sp3d.sweep import (
    DEFAULT_EXPERIMENT,
    SweepError,
    SweepOutcome,
    SweepSpec,
    plan_sweep,
    resume_sweep,
    run_sweep,
)
from sp3d.sweep_results import TrialRow

console = Console()


@contextlib.contextmanager
def sweep_errors() -> Iterator[None]:
    """Bad space / config / options -> one line, exit 2; the platform's runtime errors -> one line, exit 1."""
    try:
        yield
    except (SearchSpaceError, ConfigError, SweepError) as err:
        raise fail(str(err), 2) from None
    except USER_ERRORS as err:
        raise fail(f"{type(err).__name__}: {err}") from None


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.startswith(("ap", "recall", "root_ap", "root_recall", "pcp")):
        return f"{100 * value:.1f}"
    return f"{value:.1f}"


def _label(metric: str) -> str:
    if metric.startswith(("ap", "recall", "root_ap", "root_recall", "pcp")):
        return f"{metric.upper()} (%)"
    return f"{metric.upper()} ({'s' if metric == 'train_seconds' else 'mm'})"


def outcome_table(outcome: SweepOutcome) -> Table:
    """Rich table: one row per trial (id, swept values, AP/MPJPE/objectives, epochs, status); best in bold."""
    table = Table(title=f"{outcome.kind} {outcome.name}: {len(outcome.rows)} trials, "
                        f"best by {outcome.metric} ({outcome.mode})")
    table.add_column("trial", no_wrap=True)
    for key in outcome.swept_keys:
        table.add_column(key, justify="right", no_wrap=True)
    for metric in outcome.columns:
        table.add_column(_label(metric), justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("status")
    for row in outcome.rows:
        table.add_row(*_cells(outcome, row), style="bold green" if row is outcome.best else None)
    return table


def _cells(outcome: SweepOutcome, row: TrialRow) -> list[str]:
    values = [format_param(row.values.get(k)) for k in outcome.swept_keys]
    metrics = [_fmt(m, row.metric(m)) for m in outcome.columns]
    epochs = f"{row.epochs if row.epochs is not None else '-'}/{row.planned_epochs or '-'}"
    status = row.status + (f": {row.error}" if row.error else "")
    return [row.trial_id, *values, *metrics, epochs, status]


def print_outcome(outcome: SweepOutcome, storage_hint: str | None = None) -> None:
    """Print the trial table, the best trial, where it is tracked and the next commands."""
    console.print(outcome_table(outcome))
    if outcome.best is not None:
        chosen = ", ".join(f"{k}={v}" for k, v in outcome.best.values.items())
        console.print(f"best: trial {outcome.best.trial_id} ({chosen}), {outcome.metric} "
                      f"{_fmt(outcome.metric, outcome.best.metric(outcome.metric))}", highlight=False)
    else:
        console.print(f"best: none (no trial reported a finite {outcome.metric})", highlight=False)
    if outcome.killed_runs:
        console.print(f"MLflow: {len(outcome.killed_runs)} run(s) of stopped trials marked KILLED", highlight=False)
    console.print(f"MLflow: experiment [bold]{outcome.experiment}[/], parent run {outcome.parent_run_id} "
                  f"({mlflow_hint(outcome.tracking_uri)})", highlight=False, soft_wrap=True)
    console.print(f"storage: {outcome.storage}", highlight=False, soft_wrap=True)
    where = f" --storage {storage_hint}" if storage_hint else ""
    if not outcome.complete:
        console.print(f"[yellow]unfinished[/]: continue with `sp3d sweep --resume {outcome.name}{where}`",
                      highlight=False, soft_wrap=True)
    console.print(f"next: sp3d compare {outcome.name}   (paper-style table + plots)", highlight=False, soft_wrap=True)


def print_comparison(outcome: SweepOutcome, out: Path) -> None:
    """Read a finished sweep / study back with `sp3d.compare` (what `sp3d compare NAME` does): print the
    paper-style table (ours vs paper, references), write markdown + plots to ``out`` and log them on the
    parent run. A `CompareError` becomes a one-line error and exit code 1."""
    from sp3d.compare import CompareError, load_comparison
    from sp3d.compare_report import rich_references, rich_table, write_report
    from sp3d.compare_source import log_to_parent

    try:
        cmp = load_comparison(outcome.name, experiment=outcome.experiment, tracking_uri=outcome.tracking_uri)
        console.print(rich_table(cmp))
        refs = rich_references(cmp)
        if refs is not None:
            console.print(refs)
        md_path, pngs = write_report(cmp, out)
        log_to_parent(cmp.tracking_uri, outcome.parent_run_id, [md_path, *pngs])
    except CompareError as err:
        raise fail(f"CompareError: {err}") from None
    console.print(f"report: {md_path}", highlight=False, soft_wrap=True)
    for png in pngs:
        console.print(f"plot: {png}", highlight=False, soft_wrap=True)


def print_plan(spec: SweepSpec) -> None:
    """One line saying what is about to run."""
    console.print(f"{spec.kind} [bold]{spec.name}[/]: space {spec.space_name} ({spec.space_source}), "
                  f"{spec.samples} trials, {spec.concurrent} at a time, scheduler {spec.scheduler}, "
                  f"{spec.workers} worker(s)/trial, base {spec.base_config}, storage {spec.storage}",
                  highlight=False, soft_wrap=True)


def sweep(
    space: Annotated[str | None, typer.Argument(help="Search space: a name in search_spaces/ (lambda, sigma, views, "
                                                "full, ...) or a YAML file. Not needed with --resume.")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="Preset or config YAML replacing the space's "
                                               "base_config.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key for every trial, "
                                                   "KEY=VALUE (YAML value), repeatable.")] = None,
    samples: Annotated[int | None, typer.Option(help="Total trials (default: the space's num_samples; grids: a "
                                                "multiple of the grid size).")] = None,
    concurrent: Annotated[int, typer.Option(min=1, help="Trials running at the same time.")] = 1,
    scheduler: Annotated[str, typer.Option(help="fifo (run every trial to the end) or asha (stop bad trials "
                                           "early).")] = "fifo",
    grace_period: Annotated[int | None, typer.Option(min=1, help="ASHA: epochs before a trial can be stopped "
                                                     "(default: the first evaluated epoch).")] = None,
    reduction_factor: Annotated[float, typer.Option(help="ASHA: keep 1/reduction_factor of the trials per "
                                                    "rung.")] = 2.0,
    storage: Annotated[str | None, typer.Option(help="Sweep storage: dir or s3://bucket/prefix (default "
                                                "<state dir>/sweeps).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Sweep name (default <space>-<timestamp>); "
                                             "also the MLflow parent run name.")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = DEFAULT_EXPERIMENT,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Ray Train workers per trial.")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(min=0, help="GPUs per worker (0 = CPU).")] = 0.0,
    cpus_per_worker: Annotated[float | None, typer.Option(min=0.01, help="CPUs per worker (default: the "
                                                          "cluster's CPUs shared by all concurrent workers, max 1).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of the search (TPE sampler / variant generator).")] = 0,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue the sweep NAME (same --storage) "
                                               "after its driver died.")] = None,
    retry_errored: Annotated[bool, typer.Option(help="With --resume: restart errored trials too.")] = False,
    synth: Annotated[bool, typer.Option("--synth-if-missing/--no-synth", help="Generate a missing synthetic "
                                        "dataset first.")] = True,
) -> None:
    """Run a hyper-parameter sweep with Ray Tune: each trial trains with Ray Train (resumable from its
    checkpoints) and is an MLflow child run of the sweep's parent run; prints the trial table and the best.

    Exit codes: 0 ok, 1 runtime failure, 2 bad space / config / option.
    """
    with sweep_errors():
        settings = load_settings()
        if resume:
            if space:
                raise SweepError("give either SPACE (a new sweep) or --resume NAME, not both")
            console.print(f"resuming sweep [bold]{resume}[/]", highlight=False)
            outcome = resume_sweep(resume, storage, settings, retry_errored)
        else:
            if not space:
                raise SweepError("missing SPACE (e.g. `sp3d sweep lambda`) or --resume NAME")
            spec = plan_sweep(space, config=config, sets=sets, samples=samples, concurrent=concurrent,
                              scheduler=scheduler, grace_period=grace_period, reduction_factor=reduction_factor,
                              storage=storage, name=name, experiment=experiment, workers=workers,
                              gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, seed=seed,
                              settings=settings)
            ensure_dataset(load_config(spec.base_config, spec.sets), synth)
            print_plan(spec)
            outcome = run_sweep(spec, settings)
    print_outcome(outcome, storage)


def register(app: typer.Typer) -> None:
    """Add `sp3d sweep` to the root app."""
    app.command("sweep", help=sweep.__doc__)(sweep)
