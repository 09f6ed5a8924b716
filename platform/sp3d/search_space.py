"""Declarative search spaces (``search_spaces/*.yaml``): load, validate, convert to Optuna / Ray Tune.

A space maps dotted `selfpose3d.config.Config` keys to parameter specs (choice / loguniform / uniform /
int, each optionally conditional on an earlier parameter). See docs/search_spaces.md for the format.

    space = load_space("lambda")                 # search_spaces/lambda.yaml, validated against its base config
    tune.Tuner(fn, param_space=space.tune_param_space(), tune_config=TuneConfig(num_samples=space.tune_num_samples))
    OptunaSearch(space=space.optuna_define_by_run, metric=space.metrics, mode=space.modes)   # full.yaml
    cfg = load_config(space.base_config, space.to_overrides(trial_config))
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import PrivateAttr, ValidationError

from sp3d.search_space_checks import REPO_ROOT, SearchSpaceError, display_path, validate_space
from sp3d.search_space_schema import (
    PARAM_TYPES,
    ChoiceParam,
    IntParam,
    LogUniformParam,
    Mode,
    SearchSpaceSpec,
    UniformParam,
    metric_value,
)

# Directory of the shipped spaces; SP3D_SEARCH_SPACES overrides it (e.g. for an installed wheel).
SEARCH_SPACE_DIR = Path(os.environ.get("SP3D_SEARCH_SPACES", REPO_ROOT / "search_spaces"))

__all__ = ["PaperRow", "SearchSpace", "SearchSpaceError", "list_spaces", "load_space", "metric_value"]


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table: `params` = dotted key -> value ({} for reference rows outside the
    sweep, e.g. VoxelPose baselines), `metrics` = metric key -> value (None = not reported / diverged)."""

    label: str
    params: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    in_sweep: bool = True


def _is_active(param: Any, sampled: dict[str, Any]) -> bool:
    """True if every `when` clause of `param` holds for the values sampled so far (absent ref -> False)."""
    for ref, clause in (param.when or {}).items():
        if ref not in sampled or (sampled[ref] in clause.values) == clause.negate:
            return False
    return True


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar (pydantic and YAML want plain types)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, dotted) if isinstance(value, dict) else {dotted: value})
    return out


class SearchSpace(SearchSpaceSpec):
    """A validated search space. `params` keeps file order, which is also the Optuna suggestion order."""

    _source: str = PrivateAttr("<memory>")

    @property
    def source(self) -> str:
        """The file this space was read from (repo-relative when inside the repo)."""
        return self._source

    @property
    def is_grid(self) -> bool:
        """True if every parameter is a ``choice`` with ``grid: true`` (validation forbids mixing)."""
        return all(isinstance(p, ChoiceParam) and p.grid for p in self.params.values())

    @property
    def is_conditional(self) -> bool:
        """True if any parameter has a `when` condition."""
        return any(p.when for p in self.params.values())

    @property
    def metrics(self) -> list[str]:
        """Objective metric keys: the primary `metric` first, then `extra_objectives`."""
        return [self.metric] + [o.metric for o in self.extra_objectives]

    @property
    def modes(self) -> list[Mode]:
        """"max"/"min" for each entry of `metrics`."""
        return [self.mode] + [o.mode for o in self.extra_objectives]

    @property
    def total_samples(self) -> int:
        """Number of trials the file asks for (`num_samples`, defaulting to the grid size)."""
        return self.num_samples if self.num_samples is not None else len(self.grid())

    @property
    def tune_num_samples(self) -> int:
        """The value for `TuneConfig(num_samples=...)`. Tune repeats a grid_search `num_samples` times,
        so for grid spaces this is the number of grid repeats (total_samples / grid size)."""
        return self.total_samples // len(self.grid()) if self.is_grid else self.total_samples

    def grid(self) -> list[dict[str, Any]]:
        """All combinations of a grid space, as ``[{dotted_key: value}, ...]`` in file order; a
        conditional parameter only appears in combinations where its `when` holds."""
        if not self.is_grid:
            raise SearchSpaceError(f"{self.source}: params: not a grid space (grid() needs every "
                                   "parameter to be `type: choice` with `grid: true`)")
        points: list[dict[str, Any]] = [{}]
        for key, param in self.params.items():
            points = list(itertools.chain.from_iterable(
                [{**pt, key: v} for v in param.values] if _is_active(param, pt) else [pt] for pt in points
            ))
        return points

    def optuna_define_by_run(self, trial: Any) -> dict[str, Any] | None:
        """Define-by-run space for `optuna` / `ray.tune.search.optuna.OptunaSearch(space=...)`.

        Calls ``trial.suggest_*`` for each active parameter in file order (parameters whose `when` is
        false are skipped, so they never appear in the trial). Returns the `fixed` overrides as the
        dict of constants OptunaSearch merges into the trial config (None when there are none).
        """
        sampled: dict[str, Any] = {}
        for key, param in self.params.items():
            if _is_active(param, sampled):
                sampled[key] = _suggest(trial, key, param)
        return dict(self.fixed) or None

    def tune_param_space(self) -> dict[str, Any]:
        """Ray Tune `param_space` with flat dotted keys: ``tune.grid_search`` for grid choices, else
        tune.choice / loguniform / uniform / randint (int bounds inclusive), plus `fixed` constants.
        Raises SearchSpaceError for conditional spaces (Tune cannot express `when`)."""
        from ray import tune

        conditional = [k for k, p in self.params.items() if p.when]
        if conditional:
            raise SearchSpaceError(
                f"{self.source}: params.{conditional[0]}.when: conditional parameters cannot be expressed "
                "as a Tune param_space; use OptunaSearch(space=space.optuna_define_by_run) instead")
        space: dict[str, Any] = dict(self.fixed)
        for key, param in self.params.items():
            space[key] = _tune_domain(tune, param)
        return space

    def to_overrides(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Trial config (flat dotted keys or nested dicts, as produced by grid(), define-by-run or
        Tune) -> dotted overrides for `load_config(base, overrides)`, with `fixed` merged in.
        Raises SearchSpaceError for unknown keys, missing / inactive parameters, out-of-space values."""
        flat = {k: _plain(v) for k, v in _flatten(sampled).items()}
        for key, value in flat.items():
            if key in self.fixed and value != self.fixed[key]:
                raise SearchSpaceError(f"{self.source}: fixed.{key}: trial has {value!r}, space fixes "
                                       f"{self.fixed[key]!r}")
            if key not in self.fixed and key not in self.params:
                raise SearchSpaceError(f"{self.source}: {key}: not a parameter of space {self.name} "
                                       f"(parameters: {', '.join(self.params)})")
        chosen: dict[str, Any] = {}
        for key, param in self.params.items():
            active = _is_active(param, chosen)
            if active != (key in flat):
                state = "missing from the trial" if active else "given but its `when` is false"
                raise SearchSpaceError(f"{self.source}: params.{key}: {state}")
            if active:
                chosen[key] = _check_in_space(self.source, key, param, flat[key])
        return {**self.fixed, **chosen}

    def paper_table(self) -> list[PaperRow]:
        """The paper's reported values: sweep rows (params = {swept key: value}) then reference rows."""
        if self.paper is None:
            return []
        key = self.paper.param or next(iter(self.params))
        rows = [PaperRow(f"{key}={value}", {key: value}, dict(m)) for value, m in self.paper.rows.items()]
        refs = [PaperRow(label, {}, dict(m), in_sweep=False) for label, m in self.paper.references.items()]
        return rows + refs


def _suggest(trial: Any, key: str, param: Any) -> Any:
    if isinstance(param, ChoiceParam):
        return trial.suggest_categorical(key, param.values)
    if isinstance(param, LogUniformParam):
        return trial.suggest_float(key, param.low, param.high, log=True)
    if isinstance(param, UniformParam):
        return trial.suggest_float(key, param.low, param.high)
    return trial.suggest_int(key, param.low, param.high, log=param.log)


def _tune_domain(tune: Any, param: Any) -> Any:
    if isinstance(param, ChoiceParam):
        return tune.grid_search(list(param.values)) if param.grid else tune.choice(list(param.values))
    if isinstance(param, LogUniformParam):
        return tune.loguniform(param.low, param.high)
    if isinstance(param, UniformParam):
        return tune.uniform(param.low, param.high)
    randint = tune.lograndint if param.log else tune.randint
    return randint(param.low, param.high + 1)  # Tune's upper bound is exclusive


def _check_in_space(source: str, key: str, param: Any, value: Any) -> Any:
    if isinstance(param, ChoiceParam):
        ok = value in param.values
    elif isinstance(param, IntParam):
        ok = isinstance(value, int) and not isinstance(value, bool) and param.low <= value <= param.high
    else:
        tol = 1e-9 * max(abs(param.low), abs(param.high))
        ok = isinstance(value, (int, float)) and param.low - tol <= value <= param.high + tol
    if not ok:
        raise SearchSpaceError(f"{source}: params.{key}: sampled value {value!r} is outside the space")
    return value


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text or path.exists():
        return path
    candidate = SEARCH_SPACE_DIR / f"{text}.yaml"
    if not candidate.exists():
        raise SearchSpaceError(f"{display_path(candidate)}: unknown search space {text!r} "
                               f"(available: {', '.join(list_spaces()) or 'none'})")
    return candidate


def _read(path: Path) -> dict[str, Any]:
    src = display_path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SearchSpaceError(f"{src}: file not found") from None
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{src}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{src}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _format_pydantic(src: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 2 and loc[0] == "params" and loc[2] in PARAM_TYPES:
        del loc[2]  # drop the discriminator tag pydantic inserts: params.<key>.<type>.low
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        msg = "required field is missing"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{src}: {'.'.join(loc) or '<root>'}: {msg}{more}"


def load_space(name_or_path: str | Path, base_config: str | Path | None = None) -> SearchSpace:
    """Read and fully validate a search space.

    name_or_path: a shipped space name (``lambda`` -> search_spaces/lambda.yaml) or a YAML path.
    base_config: preset name or config YAML to validate values against instead of the file's
    ``base_config`` (what the user passed with --config); the returned space carries it.
    Raises SearchSpaceError with one line naming the file and key path.
    """
    path = _resolve(name_or_path)
    src = display_path(path)
    data = _read(path)
    if base_config is not None:
        data["base_config"] = str(base_config)
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as err:
        raise SearchSpaceError(_format_pydantic(src, err)) from None
    space._source = src
    validate_space(space, src)
    return space


def list_spaces() -> list[str]:
    """Names of the shipped spaces (stems of search_spaces/*.yaml), sorted."""
    return sorted(p.stem for p in SEARCH_SPACE_DIR.glob("*.yaml"))
