"""MLflow side and results of `sp3d sweep`: the parent run, per-trial rows, the best trial, finishing.

Conventions (read by `sp3d compare`): parent run named after the sweep with tags ``sp3d.kind`` (sweep /
study), ``sp3d.sweep``, ``sp3d.space``, ``sp3d.metric``, ``sp3d.mode``; child runs (one per trial, named
after the Tune trial id) tagged ``mlflow.parentRunId``, ``sp3d.kind=trial``, ``sp3d.sweep``,
``sp3d.trial_id`` with params ``sweep.<key>``. At the end the parent gets ``best.<key>`` params,
``best/<metric>`` metrics and ``best_config.yaml``; RUNNING children of stopped trials are set KILLED.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from selfpose3d.config import config_to_dict, load_config
from sp3d import tracking
from sp3d.redact import scrub_text
from sp3d.settings import Settings
from sp3d.sweep_trial import EPOCHS_KEY, TRAIN_SECONDS, split_trial_config, total_epochs, trial_config

if TYPE_CHECKING:
    from sp3d.sweep_state import SweepSpec

ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b")
SUMMARY_METRICS = ("ap25", "ap50", "ap100", "mpjpe")


@dataclass
class TrialRow:
    """One trial: swept ``values``, last reported ``metrics`` (``eval/...`` keys plus the objectives),
    epochs trained / planned, ``status`` (finished, stopped early, error, no result, running, pending),
    the first line of its error, and its MLflow child run id."""

    trial_id: str
    values: dict[str, Any]
    metrics: dict[str, float]
    epochs: int | None
    planned_epochs: int | None
    status: str
    error: str | None = None
    run_id: str | None = None

    def metric(self, name: str) -> float | None:
        """Finite value of metric ``name`` (``ap50`` or ``eval/ap50``), else None."""
        value = self.metrics.get(name, self.metrics.get(f"eval/{name}"))
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass
class SweepOutcome:
    """What a sweep run / resume returns (also what the CLI prints)."""

    name: str
    kind: str
    space_name: str
    metric: str
    mode: str
    objectives: list[str]
    swept_keys: list[str]
    rows: list[TrialRow]
    best: TrialRow | None
    complete: bool
    parent_run_id: str
    experiment: str
    tracking_uri: str
    storage: str
    killed_runs: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Metric columns of the summary: AP25/50/100, MPJPE, then any other objective."""
        return list(dict.fromkeys([*SUMMARY_METRICS, *self.objectives]))


# ---- parent run -------------------------------------------------------------------------------------
def _parent_tags(spec: SweepSpec) -> dict[str, str]:
    space = spec.search_space()
    cfg = load_config(spec.base_config, spec.sets)
    tags = {**tracking.standard_tags(cfg), "sp3d.kind": spec.kind, "sp3d.sweep": spec.name,
            "sp3d.space": spec.space_name, "sp3d.metric": space.metric, "sp3d.mode": space.mode,
            "sp3d.objectives": ",".join(space.metrics), "sp3d.storage": f"{spec.storage}/{spec.name}",
            "sp3d.scheduler": spec.scheduler, **spec.tags}
    return {k: str(v) for k, v in tracking.scrub(tags).items()}


def _parent_params(spec: SweepSpec) -> dict[str, str]:
    params = {"space": spec.space_name, "space_source": spec.space_source, "base_config": spec.base_config,
              "samples": spec.samples, "concurrent": spec.concurrent, "scheduler": spec.scheduler,
              "seed": spec.seed, "workers": spec.workers, "gpus_per_worker": spec.gpus_per_worker,
              "cpus_per_worker": spec.cpus_per_worker,
              **{f"set.{k}": v for k, v in spec.sets.items()}}
    return {k: str(v)[:tracking.MAX_PARAM_CHARS] for k, v in tracking.scrub(params).items()}


def create_parent_run(spec: SweepSpec, settings: Settings) -> str:
    """Create the sweep's MLflow parent run (RUNNING; tags + params + ``search_space.yaml``); return its id."""
    tracking.configure(settings)
    client = MlflowClient()
    experiment_id = tracking.get_or_create_experiment(spec.experiment)
    run = client.create_run(experiment_id, run_name=spec.name, tags=_parent_tags(spec))
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in _parent_params(spec).items()])
    client.log_text(run_id, scrub_text(yaml.safe_dump(spec.space, sort_keys=False)), "search_space.yaml")
    return run_id


def parent_exists(spec: SweepSpec, settings: Settings) -> bool:
    """True if the sweep's parent run is in the tracking store of ``settings``."""
    tracking.configure(settings)
    try:
        MlflowClient().get_run(spec.parent_run_id)
    except MlflowException:
        return False
    return True


# ---- trial rows --------------------------------------------------------------------------------------
def error_line(error: Any) -> str | None:
    """The most telling line of a trial error (the last ``SomeError: ...`` line), max 200 chars."""
    if error is None:
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    found = [line for line in lines if ERROR_LINE.match(line)]
    return (found[-1] if found else lines[-1])[:200]


def _row(spec: SweepSpec, trial: Any, result: Any) -> TrialRow:
    space = spec.search_space()
    sampled, repeat = split_trial_config(trial.config or {})
    values, planned = dict(sampled), None
    try:
        overrides = space.to_overrides(sampled)
        values = {k: v for k, v in overrides.items() if k in space.params}
        planned = total_epochs(trial_config(spec.model_dump(), overrides, repeat))
    except ValueError:
        pass
    last = dict(trial.last_result or {})
    keep = {k: float(v) for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (str(k).startswith("eval/") or k in space.metrics or k in (TRAIN_SECONDS, EPOCHS_KEY))}
    epochs = int(keep[EPOCHS_KEY]) if EPOCHS_KEY in keep else None
    status = {"ERROR": "error", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}.get(trial.status)
    if status is None:
        status = "no result" if epochs is None else (
            "stopped early" if planned is not None and epochs < planned else "finished")
    return TrialRow(trial.trial_id, values, keep, epochs, planned, status,
                    error_line(result.error) if status == "error" else None)


def trial_rows(spec: SweepSpec, grid: Any) -> list[TrialRow]:
    """Rows of every trial of a Tune `ResultGrid` (in trial order)."""
    trials = grid._experiment_analysis.trials  # ResultGrid keeps them in the order of its results
    return [_row(spec, trial, result) for trial, result in zip(trials, grid, strict=True)]


def _child_runs(client: MlflowClient, spec: SweepSpec) -> dict[str, str]:
    experiment_id = client.get_run(spec.parent_run_id).info.experiment_id
    runs = client.search_runs([experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{spec.parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10000)
    return {r.info.run_name: r.info.run_id for r in runs}


def pick_best(rows: list[TrialRow], metric: str, mode: str) -> TrialRow | None:
    """The trial with the best finite ``metric`` (last reported value, first on ties) among the finished
    trials, or among those stopped early when none finished (a stopped trial's value is from an earlier
    epoch, and the scheduler already judged it worse); None if no trial has a value."""
    scored: list[tuple[float, int, TrialRow]] = []
    for status in ("finished", "stopped early"):
        scored = scored or [(value, i, row) for i, row in enumerate(rows)
                            if row.status == status and (value := row.metric(metric)) is not None]
    if not scored:
        return None
    sign = -1.0 if mode == "max" else 1.0
    return min(scored, key=lambda s: (sign * s[0], s[1]))[2]


# ---- finishing -----------------------------------------------------------------------------------------
def _log_best(client: MlflowClient, spec: SweepSpec, best: TrialRow) -> None:
    run_id = spec.parent_run_id
    existing = client.get_run(run_id).data.params
    params = {f"best.{k}": str(v) for k, v in best.values.items()}
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items() if k not in existing])
    for key, value in params.items():  # params are immutable: a later best (after --retry-errored) -> tag
        if key in existing and existing[key] != value:
            client.set_tag(run_id, key, value)
    now = int(time.time() * 1000)
    metrics = {f"best/{k.removeprefix('eval/')}": v for k, v in best.metrics.items()
               if k != EPOCHS_KEY and math.isfinite(v)}
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    client.set_tag(run_id, "sp3d.best_trial", best.trial_id)
    if best.run_id:
        client.set_tag(run_id, "sp3d.best_run_id", best.run_id)
    overrides = {**spec.search_space().fixed, **best.values}
    cfg = trial_config(spec.model_dump(), overrides, 0)
    client.log_text(run_id, scrub_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False)), "best_config.yaml")


def _finish(client: MlflowClient, spec: SweepSpec, rows: list[TrialRow], best: TrialRow | None,
            complete: bool) -> list[str]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    tags = {"sp3d.trials": str(len(rows)), **{f"sp3d.trials_{s.replace(' ', '_')}": str(n) for s, n in counts.items()}}
    for key, value in tags.items():
        client.set_tag(spec.parent_run_id, key, value)
    if best is not None:
        _log_best(client, spec, best)
    if not complete:
        return []
    for row in rows:  # errored trials whose training never closed its run (e.g. failed at start-up)
        if row.status == "error" and row.run_id and client.get_run(row.run_id).info.status == "RUNNING":
            client.set_terminated(row.run_id, "FAILED")
    killed = tracking.terminate_running_children(spec.parent_run_id)
    client.set_terminated(spec.parent_run_id, "FINISHED")
    return killed


def collect_outcome(spec: SweepSpec, grid: Any, storage_uri: str, settings: Settings) -> SweepOutcome:
    """Turn Tune's `ResultGrid` into a `SweepOutcome`, log the best trial on the parent run and, when every
    trial ended, mark RUNNING child runs (trials stopped by ASHA / killed) KILLED and finish the parent."""
    tracking.configure(settings)
    space = spec.search_space()
    rows = trial_rows(spec, grid)
    client = MlflowClient()
    children = _child_runs(client, spec)
    for row in rows:
        row.run_id = children.get(row.trial_id)
    complete = all(r.status not in ("running", "pending", "paused") for r in rows) and len(rows) > 0
    best = pick_best(rows, space.metric, space.mode)
    killed = _finish(client, spec, rows, best, complete)
    return SweepOutcome(spec.name, spec.kind, spec.space_name, space.metric, space.mode, space.metrics,
                        list(space.params), rows, best, complete, spec.parent_run_id, spec.experiment,
                        settings.tracking_uri, f"{storage_uri}/{spec.name}", killed)
