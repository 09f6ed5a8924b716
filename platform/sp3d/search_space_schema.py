"""Pydantic schema of one search-space file (``search_spaces/*.yaml``); see docs/search_spaces.md.

This module only checks the *shape* of a file (types, bounds, metric names, `when` syntax). Checks that
need the whole space or the experiment config (a `when` naming an earlier parameter, dotted keys that
exist in `selfpose3d.config.Config`, values the config accepts) live in `sp3d.search_space`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None  # what Optuna's categorical accepts
Mode = Literal["max", "min"]

# Objective metric keys and the direction in which they improve. ``<mm>`` is a threshold in millimetres.
# They are the keys of selfpose3d.evaluation (``ap50``, ``root_mpjpe``), reported by training as ``eval/<key>``;
# `metric_value` finds either in a result dict. AP / recall are fractions in [0, 1] there,
# while the paper tables (``paper:`` blocks) are in percent; MPJPE is in mm in both.
METRIC_PATTERNS: dict[str, Mode] = {
    r"ap\d+": "max",  # average precision, pose counted correct if MPJPE < threshold mm
    r"recall\d+": "max",  # recall at a threshold (recall500 in VoxelPose)
    r"mpjpe": "min",  # mean per-joint position error of matched poses, mm
    r"root_ap\d+": "max",  # AP of root proposals vs GT mid-hip (paper Table 15: AP_50^root)
    r"root_recall\d+": "max",
    r"root_mpjpe": "min",  # root position error, mm
    r"pcp": "max",  # percentage of correct parts (Shelf / Campus), averaged over actors 1-3
    r"train_seconds": "min",  # wall-clock training time of the trial, s (cost objective)
}


def metric_direction(name: str) -> Mode | None:
    """Return "max"/"min" for a known metric key (e.g. "ap50" -> "max"), None if unknown."""
    for pattern, mode in METRIC_PATTERNS.items():
        if re.fullmatch(pattern, name):
            return mode
    return None


def metric_value(result: Mapping[str, Any], metric: str) -> float | None:
    """Look up `metric` (e.g. "ap50") in a result dict as ``ap50`` or ``eval/ap50``. None if absent."""
    for name in (metric, f"eval/{metric}"):
        if name in result:
            return float(result[name])
    return None


def _check_metric(name: str) -> str:
    if metric_direction(name) is None:
        raise ValueError(f"unknown metric {name!r} (known: ap<mm>, recall<mm>, mpjpe, root_ap<mm>, "
                         "root_recall<mm>, root_mpjpe, pcp, train_seconds)")
    return name


def _check_mode(mode: str, info: ValidationInfo) -> str:
    metric = info.data.get("metric")
    wanted = metric_direction(metric) if isinstance(metric, str) else None
    if wanted is not None and mode != wanted:
        raise ValueError(f"metric {metric} improves toward {wanted}, got mode {mode}")
    return mode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WhenClause(_Strict):
    """A parameter is active iff the earlier parameter's value is (or, with negate, is not) in `values`."""

    values: list[Scalar] = Field(min_length=1)
    negate: bool = False


def _normalise_when(raw: Any) -> Any:
    """``{p: v}`` / ``{p: [v, w]}`` / ``{p: {not: v}}`` / ``{p: {not: [v, w]}}`` -> ``{p: WhenClause}``."""
    if raw is None or not isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    for ref, cond in raw.items():
        negate = isinstance(cond, dict) and set(cond) == {"not"}
        if isinstance(cond, dict) and not negate and set(cond) != {"values", "negate"}:
            raise ValueError(f"{ref}: expected a value, a list of values or {{not: value}}, got {cond!r}")
        if negate:
            cond = cond["not"]
        if isinstance(cond, dict):
            out[ref] = cond
        else:
            out[ref] = {"values": cond if isinstance(cond, list) else [cond], "negate": negate}
    return out


class _Param(_Strict):
    when: dict[str, WhenClause] | None = Field(None, min_length=1)

    _when = field_validator("when", mode="before")(_normalise_when)


class ChoiceParam(_Param):
    """Categorical; ``grid: true`` = every value is run (exhaustive grid)."""

    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)
    grid: bool = False

    @field_validator("values")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        if len({(type(v), v) for v in values}) != len(values):
            raise ValueError(f"values must be unique, got {values}")
        return values


class _FloatRange(_Param):
    """A float parameter with bounds low < high."""

    low: float
    high: float

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if low is not None and high <= low:
            raise ValueError(f"must be > low ({low})")
        return high


class LogUniformParam(_FloatRange):
    """Float sampled uniformly in log space, both bounds inclusive and > 0."""

    type: Literal["loguniform"]

    @field_validator("low", "high")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0 for loguniform")
        return value


class UniformParam(_FloatRange):
    """Float sampled uniformly in [low, high]."""

    type: Literal["uniform"]


class IntParam(_Param):
    """Integer in [low, high], both inclusive (like Optuna's suggest_int); `log` needs low >= 1."""

    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    log: bool = False

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: int, info: ValidationInfo) -> int:
        low = info.data.get("low")
        if low is not None and high <= low:
            raise ValueError(f"must be > low ({low})")
        return high

    @field_validator("log")
    @classmethod
    def _log_low(cls, log: bool, info: ValidationInfo) -> bool:
        low = info.data.get("low")
        if log and low is not None and low < 1:
            raise ValueError(f"log: true needs low >= 1, got low={low}")
        return log


Param = Annotated[ChoiceParam | LogUniformParam | UniformParam | IntParam, Field(discriminator="type")]
PARAM_TYPES = ("choice", "loguniform", "uniform", "int")


class Objective(_Strict):
    """An additional objective for multi-objective search (e.g. cost: train_seconds, min)."""

    metric: str
    mode: Mode

    _metric = field_validator("metric")(_check_metric)
    _mode = field_validator("mode")(_check_mode)


MetricRow = dict[str, float | None]  # metric key -> value reported in the paper (None = not reported)


class PaperTable(_Strict):
    """Values reported in the paper, for `sp3d compare` (paper vs ours)."""

    table: StrictInt | StrictStr  # e.g. 11 (supplementary Table 11)
    param: str | None = None  # swept key the row values refer to; default: the space's only parameter
    notes: str = ""
    rows: dict[StrictBool | StrictInt | StrictFloat | StrictStr, MetricRow] = Field(default_factory=dict)
    references: dict[str, MetricRow] = Field(default_factory=dict)  # rows outside the sweep (baselines)

    @field_validator("rows", "references")
    @classmethod
    def _metric_keys(cls, rows: dict[Any, MetricRow]) -> dict[Any, MetricRow]:
        for label, metrics in rows.items():
            for key in metrics:
                if metric_direction(key) is None:
                    raise ValueError(f"{label}: unknown metric {key!r}")
        return rows


class SearchSpaceSpec(_Strict):
    """One search-space file, as written (dotted config keys -> parameter specs, in suggestion order)."""

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    base_config: str = Field(min_length=1)  # preset name or config YAML the sweep starts from
    metric: str
    mode: Mode
    extra_objectives: list[Objective] = Field(default_factory=list)
    num_samples: int | None = Field(None, ge=1)  # total trials; grid spaces default to the grid size
    fixed: dict[str, Any] = Field(default_factory=dict)  # dotted overrides applied to every trial
    params: dict[str, Param] = Field(min_length=1)
    paper: PaperTable | None = None

    _metric = field_validator("metric")(_check_metric)
    _mode = field_validator("mode")(_check_mode)
