"""Read a sweep (or a whole experiment) back from MLflow and aggregate it into a paper-style comparison.

    cmp = load_comparison("lambda-sweep")             # parent run name / tag sp3d.sweep, or an experiment name
    cmp.groups[0].stats("ap50")                       # (mean %, std %, n) over repeated trials of one value
    write_outputs(cmp, Path("reports/lambda-sweep"))  # markdown + PNG plots (sp3d.compare_report / compare_plots)

Conventions read here (written by the sweep runner): experiment ``sp3d-sweeps``; a parent run per sweep
tagged ``sp3d.kind=sweep`` (or ``study``), ``sp3d.sweep``, ``sp3d.space``, ``sp3d.metric``; child runs
tagged ``mlflow.parentRunId`` with params = flattened config + ``sweep.<key>`` for swept keys, metrics
``eval/<key>`` per epoch (step = global epoch). AP / recall are fractions there; tables show percent.
"""

from __future__ import annotations

import ast
import difflib
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sp3d.compare_source import (
    CompareError,
    fetch_children,
    fetch_experiment_runs,
    find_target,
    open_client,
)
from sp3d.search_space import PaperRow, SearchSpace, SearchSpaceError, load_space
from sp3d.search_space_schema import ChoiceParam, IntParam, LogUniformParam, metric_direction

__all__ = [
    "CompareError", "Comparison", "DEFAULT_COLUMNS", "Group", "Trial", "display_value", "format_param",
    "is_percent", "load_comparison",
]

DEFAULT_COLUMNS = ("ap25", "ap50", "ap100", "mpjpe")
SWEEP_PREFIX = "sweep."
LOSS_CURVE = "train/total"
# Params that differ between runs without being an experimental factor (ignored when grouping an experiment).
NUISANCE_PARAMS = ("train.seed", "synth.seed", "dataset.root")


@dataclass
class Trial:
    """One finished run: `values` = grouping param -> parsed value, `metrics` = metric key -> raw value
    (AP fraction, MPJPE mm) at `epoch`, `history` = MLflow key -> [(step, value), ...]."""

    run_id: str
    name: str
    values: dict[str, Any]
    metrics: dict[str, float | None]
    epoch: int | None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class Group:
    """Trials sharing the same values of the grouping params (`values` follows `Comparison.by`), plus the
    paper's row for that value (percent / mm, None = not reported) when the space has one."""

    values: tuple[Any, ...]
    trials: list[Trial]
    paper: dict[str, float | None] | None = None

    def stats(self, metric: str) -> tuple[float | None, float | None, int]:
        """(mean, sample std or None if n < 2, n) of `metric` over the trials, in display units (% / mm)."""
        vals = [display_value(metric, t.metrics.get(metric)) for t in self.trials]
        vals = [v for v in vals if v is not None]
        if not vals:
            return None, None, 0
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)

    @property
    def epochs(self) -> list[int]:
        """Sorted distinct epochs the trials' values were taken at."""
        return sorted({t.epoch for t in self.trials if t.epoch is not None})


@dataclass
class Comparison:
    """Everything `sp3d compare` prints and plots. `kind` is "sweep", "study" or "experiment"."""

    target: str
    kind: str
    experiment: str
    tracking_uri: str
    metric: str
    mode: str
    select: str  # "last" or "best"
    by: list[str]
    columns: list[str]
    trials: list[Trial]
    groups: list[Group]
    parent_run_id: str | None = None
    space: SearchSpace | None = None
    references: list[PaperRow] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # status -> count of runs left out
    notes: list[str] = field(default_factory=list)

    @property
    def has_paper(self) -> bool:
        """True when some group or reference row carries the paper's values."""
        return any(g.paper for g in self.groups) or bool(self.references)

    @property
    def paper_table(self) -> str | None:
        """The paper table as cited ("Table 11", or the file's text when not a number), None when no paper values."""
        if not (self.has_paper and self.space and self.space.paper):
            return None
        table = str(self.space.paper.table)
        return f"Table {table}" if table.isdigit() else table

    def best_group(self) -> Group | None:
        """The group with the best mean of `metric` (per `mode`), None if no group has a value."""
        scored = [(g.stats(self.metric)[0], g) for g in self.groups if g.trials]
        scored = [(m, g) for m, g in scored if m is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda mg: mg[0])[1]


def is_percent(metric: str) -> bool:
    """True for metrics stored as fractions and shown in percent (ap*, recall*, root_ap*, root_recall*, pcp)."""
    return metric.startswith(("ap", "recall", "root_ap", "root_recall", "pcp"))


def display_value(metric: str, raw: float | None) -> float | None:
    """Raw tracked value -> paper units: fractions x 100 for percent metrics, mm unchanged; None/NaN -> None."""
    if raw is None or not math.isfinite(raw):
        return None
    return 100.0 * raw if is_percent(metric) else raw


def parse_param(text: str | None) -> Any:
    """MLflow param string -> Python value ("0.01" -> 0.01, "3" -> 3, "True" -> True, "(96, 64)" -> tuple)."""
    if text is None:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return tuple(value) if isinstance(value, list) else value


def format_param(value: Any) -> str:
    """A param value for tables and tick labels (floats with 4 significant digits, None as "-")."""
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}"
        return text + ".0" if text.lstrip("-").isdigit() else text  # 1.0 stays "1.0", not "1"
    return str(value)


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats 1 == 1.0 and float round-off as equal, and "3" == 3 via the string form."""
    numeric = (int, float)
    if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b or format_param(a) == format_param(b)


def _series(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    points = {m.step: (m.timestamp, m.value) for m in sorted(client.get_metric_history(run_id, key),
                                                             key=lambda m: m.timestamp)}
    return sorted((step, value) for step, (_, value) in points.items())


def _history(client: MlflowClient, run: Run, metrics: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for metric in metrics:
        for key in (f"eval/{metric}", metric):
            if key in run.data.metrics:
                out[metric] = _series(client, run.info.run_id, key)
                break
    if LOSS_CURVE in run.data.metrics:
        out[LOSS_CURVE] = _series(client, run.info.run_id, LOSS_CURVE)
    return out


def _pick_epoch(series: list[tuple[int, float]], mode: str, best: bool) -> int | None:
    finite = [(s, v) for s, v in series if math.isfinite(v)]
    if not finite:
        return series[-1][0] if series else None
    if not best:
        return series[-1][0]
    if mode == "max":  # ties -> the earliest epoch
        return max(finite, key=lambda sv: (sv[1], -sv[0]))[0]
    return min(finite, key=lambda sv: (sv[1], sv[0]))[0]


def _value_at(series: list[tuple[int, float]], epoch: int | None) -> float | None:
    if not series:
        return None
    if epoch is None:
        return series[-1][1]
    before = [v for s, v in series if s <= epoch]
    return before[-1] if before else None


def _trial(client: MlflowClient, run: Run, by: list[str], metric: str, mode: str, columns: list[str],
           best: bool) -> Trial:
    history = _history(client, run, list(dict.fromkeys([metric, *columns])))
    epoch = _pick_epoch(history.get(metric, []), mode, best)
    metrics = {m: _value_at(history.get(m, []), epoch) for m in dict.fromkeys([metric, *columns])}
    params = run.data.params
    values = {k: parse_param(params.get(f"{SWEEP_PREFIX}{k}", params.get(k))) for k in by}
    name = run.data.tags.get("sp3d.trial_id") or run.info.run_name or run.info.run_id[:8]
    return Trial(run.info.run_id, name, values, metrics, epoch, history)


def _swept_keys(runs: list[Run], space: SearchSpace | None) -> list[str]:
    """Keys of the ``sweep.*`` params, in the space's parameter order (others after, sorted)."""
    keys = sorted({k[len(SWEEP_PREFIX):] for r in runs for k in r.data.params if k.startswith(SWEEP_PREFIX)})
    order = list(space.params) if space else []
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))


def _varying_keys(runs: list[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.data.params if not k.startswith(SWEEP_PREFIX)})
    skip = set(NUISANCE_PARAMS)
    return [k for k in keys if k not in skip and len({r.data.params.get(k) for r in runs}) > 1]


def _check_by(by: list[str], runs: list[Run]) -> None:
    known = {k.removeprefix(SWEEP_PREFIX) for r in runs for k in r.data.params}
    for key in by:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=5) or sorted(known)[:8]
            raise CompareError(f"--by {key}: not a param of these runs (did you mean: {', '.join(close)})")


def _order_key(space: SearchSpace | None, by: list[str]):
    def key(values: tuple[Any, ...]) -> tuple:
        parts = []
        for name, value in zip(by, values, strict=True):
            param = space.params.get(name) if space else None
            if isinstance(param, ChoiceParam) and any(same_value(value, v) for v in param.values):
                parts.append((0, next(i for i, v in enumerate(param.values) if same_value(value, v)), ""))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                parts.append((1, float(value), ""))
            else:
                parts.append((2 if value is not None else 3, 0.0, format_param(value)))
        return tuple(parts)

    return key


def _group(trials: list[Trial], by: list[str], space: SearchSpace | None) -> list[Group]:
    groups: list[Group] = []
    for trial in trials:
        values = tuple(trial.values.get(k) for k in by)
        found = next((g for g in groups if all(same_value(a, b) for a, b in zip(g.values, values, strict=True))),
                     None)
        if found is None:
            groups.append(Group(values, [trial]))
        else:
            found.trials.append(trial)
    return sorted(groups, key=lambda g: _order_key(space, by)(g.values))


def _attach_paper(groups: list[Group], by: list[str], space: SearchSpace) -> tuple[list[Group], list[PaperRow]]:
    """Attach the paper's in-sweep rows to matching groups (adding empty groups for values not run when
    grouping by the paper's param alone); returns (groups, reference rows)."""
    rows = space.paper_table()
    refs = [r for r in rows if not r.in_sweep]
    key = (space.paper.param or next(iter(space.params))) if space.paper else None
    if key not in by:
        return groups, refs
    idx = by.index(key)
    for row in (r for r in rows if r.in_sweep):
        value = row.params[key]
        matches = [g for g in groups if same_value(g.values[idx], value)]
        for g in matches:
            g.paper = row.metrics
        if not matches and len(by) == 1:
            groups.append(Group((value,), [], row.metrics))
    return sorted(groups, key=lambda g: _order_key(space, by)(g.values)), refs


def _columns(columns: Sequence[str] | None, metric: str, space: SearchSpace | None) -> list[str]:
    if columns:
        cols = list(columns)
    elif space is not None and space.paper is not None and space.paper.rows:
        cols = list(dict.fromkeys(k for row in space.paper.rows.values() for k in row))
    else:
        cols = list(DEFAULT_COLUMNS)
    for col in cols:
        if metric_direction(col) is None:
            raise CompareError(f"--column {col}: unknown metric (known: ap<mm>, recall<mm>, mpjpe, root_ap<mm>, "
                               "root_recall<mm>, root_mpjpe, pcp)")
    return cols if metric in cols else [*cols, metric]


def _space(name: str | None, notes: list[str]) -> SearchSpace | None:
    if not name:
        return None
    try:
        return load_space(name)
    except SearchSpaceError as err:
        notes.append(f"search space {name!r} not loaded, no paper columns ({err})")
        return None


def is_log_param(key: str, values: Sequence[Any], space: SearchSpace | None = None) -> bool:
    """True if `key` should use a log axis: log-scaled in the space (loguniform / int log), or numeric,
    positive and spanning at least two decades (e.g. lambda in {0.001 .. 1})."""
    param = space.params.get(key) if space else None
    if isinstance(param, LogUniformParam) or (isinstance(param, IntParam) and param.log):
        return True
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums or len(nums) != len([v for v in values if v is not None]) or min(nums) <= 0:
        return False
    return max(nums) / min(nums) >= 100


def load_comparison(
    target: str,
    experiment: str | None = None,
    metric: str | None = None,
    by: Sequence[str] | None = None,
    best: bool = False,
    paper: bool = True,
    columns: Sequence[str] | None = None,
    space: str | None = None,
    tracking_uri: str | None = None,
) -> Comparison:
    """Read `target` (a sweep / study name or an experiment name) from MLflow and aggregate its finished runs.

    metric: selection metric (default: the parent's ``sp3d.metric`` tag, else ap50); best: take each trial
    at its best epoch by `metric` instead of its last; by: grouping params (default: the ``sweep.*`` params,
    or for an experiment the params that differ); space: search space for paper columns (default: the
    parent's ``sp3d.space`` tag). Raises `CompareError` (one line) for unknown names, no finished runs,
    an unreachable tracking server, unknown metrics / params.
    """
    client, uri = open_client(tracking_uri)
    try:
        return _load(client, uri, target, experiment, metric, by, best, paper, columns, space)
    except MlflowException as err:
        raise CompareError(f"MLflow error at {uri}: {str(err.message).splitlines()[0]}") from None


def _load(client: MlflowClient, uri: str, target: str, experiment: str | None, metric: str | None,
          by: Sequence[str] | None, best: bool, paper: bool, columns: Sequence[str] | None,
          space_name: str | None) -> Comparison:
    exp, parent = find_target(client, target, experiment)
    notes: list[str] = []
    if parent is not None:
        runs, skipped = fetch_children(client, parent)
        kind = parent.data.tags.get("sp3d.kind", "sweep")
    else:
        runs, skipped = fetch_experiment_runs(client, exp)
        kind = "experiment"
    if not runs:
        detail = ", ".join(f"{n} {s}" for s, n in skipped.items()) or "no runs at all"
        raise CompareError(f"{kind} {target!r} in experiment {exp.name!r}: no finished runs ({detail})")
    tags = parent.data.tags if parent is not None else {}
    metric = metric or tags.get("sp3d.metric") or "ap50"
    mode = metric_direction(metric)
    if mode is None:
        raise CompareError(f"--metric {metric}: unknown metric (known: ap<mm>, recall<mm>, mpjpe, root_ap<mm>, "
                           "root_recall<mm>, root_mpjpe, pcp)")
    space = _space(space_name or tags.get("sp3d.space"), notes) if paper or space_name else None
    keys = list(by) if by else (_swept_keys(runs, space) if parent is not None else []) or _varying_keys(runs)
    _check_by(keys, runs)
    cols = _columns(columns, metric, space if paper else None)
    trials = [_trial(client, r, keys, metric, mode, cols, best) for r in runs]
    groups, refs = _group(trials, keys, space), []
    if paper and space is not None and space.paper is not None:
        groups, refs = _attach_paper(groups, keys, space)
    return Comparison(target, kind, exp.name, uri, metric, mode, "best" if best else "last", keys, cols,
                      trials, groups, parent.info.run_id if parent else None, space, refs, skipped, notes)
