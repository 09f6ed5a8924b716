"""`sp3d sweep`: a Ray Tune search over a search space, one Ray Train run + one MLflow child run per trial.

    spec = plan_sweep("lambda", sets=["train.pose_net.epochs=3"], concurrent=2, storage="s3://sp3d/sweeps")
    outcome = run_sweep(spec)                  # Tuner.fit(); parent run finished, best logged on it
    outcome = resume_sweep("lambda-2024...")   # after the driver died: Tuner.restore(...).fit()

Search: sampled spaces use `OptunaSearch(space=space.optuna_define_by_run)` (seeded TPE, multi-objective
when the space declares extra objectives) behind a `ConcurrencyLimiter`; grid spaces (every parameter
``grid: true``) use Tune's `BasicVariantGenerator` with ``tune.grid_search`` (every point run exactly,
repeats = ``samples / grid size`` with the seed offset by the repeat index), because Optuna cannot
enumerate a grid. ``--scheduler asha`` adds `ASHAScheduler` on `EPOCHS_KEY` (epochs trained, counted
from the training history, so it stays right when a trial resumes). The sweep's state
(``<storage>/<name>/sweep_state.json``: spec + MLflow parent run id) sits beside Tune's experiment
state, and Train runs live in ``<storage>/<name>/runs/<trial id>``.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import yaml
from pydantic import ValidationError

from selfpose3d.config import ConfigError, load_config
from sp3d.ray_connect import connect_ray
from sp3d.search_space import SearchSpace, load_space
from sp3d.search_space_checks import validate_space
from sp3d.settings import Settings, load_settings
from sp3d.sweep_results import SweepOutcome, collect_outcome, create_parent_run, parent_exists
from sp3d.sweep_state import (
    DEFAULT_EXPERIMENT,
    STATE_FILE,
    Location,
    SweepError,
    SweepSpec,
    read_state,
    write_state,
)
from sp3d.sweep_trial import (
    EPOCHS_KEY,
    GRID_POINT_KEY,
    REPEAT_KEY,
    TUNE_MAX_FAILURES,
    first_evaluated_epoch,
    make_trainable,
    total_epochs,
)

DRIVER_RESOURCE = "sp3d_driver"  # custom resource of the clusters' driver nodes (docs/cluster.md)
DRIVER_CPU = 0.01
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")

__all__ = ["DEFAULT_EXPERIMENT", "SweepError", "SweepOutcome", "SweepSpec", "grid_subset", "parse_sets",
           "plan_sweep", "resume_sweep", "run_sweep"]


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[96, 64]"]`` -> ``{"a.b": 1, "c": [96, 64]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for text in sets or []:
        if "=" not in text:
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.pose_net.epochs=3")
        key, value = text.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def grid_subset(name: str, key: str, values: list[Any], config: str | None = None, repeats: int = 1) -> SearchSpace:
    """Shipped grid space ``name`` with parameter ``key`` restricted to ``values`` (``repeats`` runs each),
    its paper rows kept for those values, validated against ``config`` (default: the file's base_config).
    Raises SearchSpaceError / SweepError naming the space and key."""
    base = load_space(name, base_config=config)
    if key not in base.params or not base.is_grid:
        raise SweepError(f"{base.source}: params.{key}: not a grid parameter of space {base.name}")
    data = base.model_dump()
    data["params"][key]["values"] = list(values)
    data["num_samples"] = len(values) * repeats
    if data.get("paper") and (data["paper"].get("param") or key) == key:
        data["paper"]["rows"] = {v: m for v, m in data["paper"]["rows"].items() if v in values}
    source = f"{base.source} ({key} in {', '.join(map(str, values))})"
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as err:
        raise SweepError(f"{source}: params.{key}.values: {err.errors()[0]['msg']}") from None
    space._source = source
    validate_space(space, source)
    return space


def _samples(space: SearchSpace, samples: int | None) -> int:
    total = samples if samples is not None else space.total_samples
    if total < 1:
        raise SweepError(f"--samples {total}: expected >= 1")
    if space.is_grid and total % len(space.grid()):
        raise SweepError(f"--samples {total}: {space.source} is a grid of {len(space.grid())} points; "
                         "use a multiple of it (a grid is always run whole)")
    return total


def _check_sets(space: SearchSpace, base: str, sets: dict[str, Any]) -> None:
    swept = [k for k in sets if k in space.params]
    if swept:
        raise SweepError(f"--set {swept[0]}: is swept by {space.source}; drop the --set or edit the space")
    cfg = load_config(base, sets)  # ConfigError names the key
    for point in space.grid() if space.is_grid else []:
        load_config(base, {**sets, **space.to_overrides(point)})
    if not total_epochs(cfg):
        raise SweepError("the base config trains 0 epochs: nothing to sweep")


def plan_sweep(space: str | Path | SearchSpace, *, config: str | None = None, sets: list[str] | None = None,
               samples: int | None = None, concurrent: int = 1, scheduler: str = "fifo",
               grace_period: int | None = None, reduction_factor: float = 2.0, storage: str | None = None,
               name: str | None = None, experiment: str = DEFAULT_EXPERIMENT, workers: int = 1,
               gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None, seed: int = 0,
               kind: str = "sweep", tags: dict[str, str] | None = None,
               settings: Settings | None = None) -> SweepSpec:
    """Validate the options and return the `SweepSpec` (nothing is started).

    space: a shipped space name, a YAML path, or a loaded `SearchSpace`; config: replaces the space's
    base_config; sets: ``KEY=VALUE`` overrides on top of it; samples: total trials (default: the space's);
    storage: dir or s3://bucket/prefix (default ``<state dir>/sweeps``). Raises SearchSpaceError,
    ConfigError or SweepError (one line each).
    """
    settings = settings or load_settings()
    loaded = space if isinstance(space, SearchSpace) else load_space(space, base_config=config)
    base = config or loaded.base_config
    user_sets = parse_sets(sets)
    _check_sets(loaded, base, user_sets)
    root = Path(load_config(base, user_sets).dataset.root).expanduser()
    if not root.is_absolute() and "dataset.root" not in loaded.params:  # trials run in Tune's trial dirs
        user_sets["dataset.root"] = str(root.resolve())
    name = name or f"{loaded.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if not NAME_PATTERN.fullmatch(name):
        raise SweepError(f"--name {name!r}: expected letters, digits, '.', '_' or '-' (max 100 chars)")
    if concurrent < 1 or workers < 1:
        raise SweepError(f"--concurrent {concurrent} / --workers {workers}: expected >= 1")
    if scheduler not in ("fifo", "asha"):
        raise SweepError(f"--scheduler {scheduler!r}: expected fifo or asha")
    if reduction_factor <= 1 or (grace_period is not None and grace_period < 1):
        raise SweepError("--reduction-factor must be > 1 and --grace-period >= 1")
    return SweepSpec(
        name=name, kind=kind, space=loaded.model_dump(mode="json", exclude={"paper"}), space_name=loaded.name,
        space_source=loaded.source, base_config=base, sets=user_sets, samples=_samples(loaded, samples),
        concurrent=concurrent, scheduler=scheduler, grace_period=grace_period, reduction_factor=reduction_factor,
        seed=seed, workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
        experiment=experiment, storage=str(storage or settings.state_dir / "sweeps"), tags=dict(tags or {}),
        settings={"state_dir": str(settings.state_dir), "mlflow_tracking_uri": settings.tracking_uri,
                  "s3_endpoint": settings.s3_endpoint, "artifact_bucket": settings.artifact_bucket})


# ---- Ray / Tune -----------------------------------------------------------------------------------
def driver_resources() -> dict[str, float]:
    """Resources of a trial's driver: a sliver of CPU, plus one `sp3d_driver` unit when the cluster has them."""
    import ray

    resources = {"cpu": DRIVER_CPU}
    if DRIVER_RESOURCE in ray.cluster_resources():
        resources[DRIVER_RESOURCE] = 1.0
    return resources


def resolve_cpus_per_worker(spec: SweepSpec) -> float:
    """The given --cpus-per-worker; else 1 with GPUs; else the largest share (<= 1 CPU) with which all
    ``concurrent x workers`` Train workers fit on the nodes at once, after the trial drivers' CPU
    (`sp3d.resources.cpu_share`), so `concurrent` trials can train at the same time."""
    from sp3d.resources import cpu_share, node_cpus

    if spec.cpus_per_worker:
        return spec.cpus_per_worker
    if spec.gpus_per_worker > 0:
        return 1.0
    return cpu_share(node_cpus(DRIVER_CPU * spec.concurrent, DRIVER_RESOURCE), spec.concurrent * spec.workers)


def _search(spec: SweepSpec, space: SearchSpace) -> tuple[Any, dict[str, Any] | None, int]:
    """(search algorithm, param_space, num_samples) — see module docstring."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    if space.is_grid:
        param_space = ({GRID_POINT_KEY: tune.grid_search(space.grid())} if space.is_conditional
                       else space.tune_param_space())
        repeats = spec.samples // len(space.grid())
        if repeats > 1:
            param_space[REPEAT_KEY] = tune.grid_search(list(range(repeats)))
        return BasicVariantGenerator(max_concurrent=spec.concurrent, random_state=spec.seed), param_space, 1
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    multi = len(space.metrics) > 1
    sampler = optuna.samplers.TPESampler(seed=spec.seed, multivariate=space.is_conditional,
                                         group=space.is_conditional)
    searcher = OptunaSearch(space=space.optuna_define_by_run, sampler=sampler,
                            metric=space.metrics if multi else space.metric,
                            mode=space.modes if multi else space.mode)
    return ConcurrencyLimiter(searcher, max_concurrent=spec.concurrent), None, spec.samples


def _scheduler(spec: SweepSpec, space: SearchSpace) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler != "asha":
        return FIFOScheduler()
    cfg = load_config(spec.base_config, spec.sets)
    max_t = max(total_epochs(cfg), 1)
    grace = min(spec.grace_period or first_evaluated_epoch(cfg), max_t)
    return ASHAScheduler(time_attr=EPOCHS_KEY, metric=space.metric, mode=space.mode, max_t=max_t,
                         grace_period=grace, reduction_factor=spec.reduction_factor, stop_last_trials=False)


def trial_dirname(trial: Any) -> str:
    """Tune trial directory name = trial id (short, matches the Train run and MLflow run names)."""
    return trial.trial_id


def _run_config(spec: SweepSpec, location: Location) -> Any:
    from ray import tune

    return tune.RunConfig(name=spec.name, storage_path=location.path, storage_filesystem=location.tune_fs,
                          failure_config=tune.FailureConfig(max_failures=TUNE_MAX_FAILURES), verbose=1)


def _trainable(spec: SweepSpec, location: Location) -> Any:
    from ray import tune

    return tune.with_resources(make_trainable(spec.trial_payload(location)), driver_resources())


def build_tuner(spec: SweepSpec, location: Location) -> Any:
    """A fresh `tune.Tuner` for ``spec`` (Ray must be connected; cpus_per_worker resolved)."""
    from ray import tune

    space = spec.search_space()
    search_alg, param_space, num_samples = _search(spec, space)
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=_scheduler(spec, space), num_samples=num_samples,
                                  trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname)
    return tune.Tuner(_trainable(spec, location), param_space=param_space, tune_config=tune_config,
                      run_config=_run_config(spec, location))


# ---- run / resume ---------------------------------------------------------------------------------
def _start(spec: SweepSpec, location: Location, settings: Settings, tuner: Any) -> SweepOutcome:
    grid = tuner.fit()
    return collect_outcome(spec, grid, location.uri, settings)


def run_sweep(spec: SweepSpec, settings: Settings | None = None) -> SweepOutcome:
    """Start a new sweep: create the MLflow parent run, write the state, run Tune, finish the parent.
    Raises SweepError when a sweep of that name already exists in the storage."""
    settings = settings or load_settings()
    location = Location(spec.storage, settings)
    fs = location.filesystem
    if fs.get_file_info(f"{location.sweep_path(spec.name)}/{STATE_FILE}").type != pafs.FileType.NotFound:
        raise SweepError(f"{location.uri}/{spec.name}: a sweep of that name exists; resume it with "
                         f"`sp3d sweep --resume {spec.name}` or pick another --name")
    connect_ray()
    spec = spec.model_copy(update={"cpus_per_worker": resolve_cpus_per_worker(spec)})
    spec = spec.model_copy(update={"parent_run_id": create_parent_run(spec, settings)})
    write_state(location, spec)
    return _start(spec, location, settings, build_tuner(spec, location))


def resume_sweep(name: str, storage: str | None = None, settings: Settings | None = None,
                 retry_errored: bool = False) -> SweepOutcome:
    """Continue sweep ``name`` after its driver died: unfinished trials restart and resume their Train runs
    from the last checkpoint (same run name + storage) and their MLflow child runs; finished trials are
    kept. retry_errored: also restart errored trials. Tracking goes to the sweep's original MLflow store."""
    settings = settings or load_settings()
    location = Location(storage or str(settings.state_dir / "sweeps"), settings)
    spec = read_state(location, name)
    settings = load_settings(**{k: v for k, v in spec.settings.items() if v is not None})
    if not spec.parent_run_id or not parent_exists(spec, settings):
        raise SweepError(f"sweep {name}: its MLflow parent run {spec.parent_run_id} is not in "
                         f"{spec.settings.get('mlflow_tracking_uri')} (resume against the same tracking server)")
    connect_ray()
    from ray import tune

    path = location.sweep_path(name)
    if not tune.Tuner.can_restore(path, storage_filesystem=location.tune_fs):  # died before Tune saved anything
        return _start(spec, location, settings, build_tuner(spec, location))
    tuner = tune.Tuner.restore(path, trainable=_trainable(spec, location), resume_unfinished=True,
                               restart_errored=retry_errored, storage_filesystem=location.tune_fs)
    return _start(spec, location, settings, tuner)

