"""Whole-space checks of a search space: `when` ordering, grid rules, paper rows, and the experiment
config (every key is a real `selfpose3d.config.Config` field, every value is accepted by `load_config`).

Every failure is a `SearchSpaceError` with one line ``<file>: <key path>: <what was expected>``.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfpose3d.config import Config, ConfigError, load_config
from sp3d.search_space_schema import ChoiceParam, IntParam, LogUniformParam, UniformParam

REPO_ROOT = Path(__file__).resolve().parents[2]


class SearchSpaceError(ValueError):
    """A search space file is malformed or inconsistent with the config; the message names file and key."""


def display_path(path: Path) -> str:
    """`path` relative to the repository root when it lies inside it (``search_spaces/x.yaml``)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def config_leaf_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """All dotted leaf keys of the config schema, e.g. ``["name", "dataset.kind", ...]``."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += config_leaf_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def config_annotation(key: str) -> Any:
    """Type annotation of the config leaf `key` (dotted); ValueError naming the problem otherwise."""
    model: type[BaseModel] = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            close = difflib.get_close_matches(key, config_leaf_keys(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown config key{hint}")
        ann = info.annotation
        is_section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if is_section and i == len(parts) - 1:
            raise ValueError(f"is a config section, not a value; name one of its fields ({part}.<field>)")
        if not is_section and i < len(parts) - 1:
            raise ValueError(f"unknown config key ({'.'.join(parts[:i + 1])} is a value, not a section)")
        if is_section:
            model = ann
    return ann


def _is_integer_field(ann: Any) -> bool:
    if ann is int:
        return True
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return {a for a in typing.get_args(ann) if a is not type(None)} == {int}
    return False


def _fail(src: str, path: str, msg: str) -> SearchSpaceError:
    return SearchSpaceError(f"{src}: {path}: {msg}")


def _check_keys(space: Any, src: str) -> None:
    for key in space.fixed:
        try:
            config_annotation(key)
        except ValueError as err:
            raise _fail(src, f"fixed.{key}", str(err)) from None
        if key in space.params:
            raise _fail(src, f"fixed.{key}", "is also a searched parameter; keep one of the two")
    for key, param in space.params.items():
        try:
            ann = config_annotation(key)
        except ValueError as err:
            raise _fail(src, f"params.{key}", str(err)) from None
        if isinstance(param, (UniformParam, LogUniformParam)) and _is_integer_field(ann):
            raise _fail(src, f"params.{key}.type", f"config field {key} is an integer; use `int` or `choice`")


def _check_when(space: Any, src: str) -> None:
    order = list(space.params)
    for index, (key, param) in enumerate(space.params.items()):
        for ref, clause in (param.when or {}).items():
            path = f"params.{key}.when.{ref}"
            if ref not in space.params:
                raise _fail(src, path, f"unknown parameter (a condition may only name an earlier parameter: "
                                       f"{', '.join(order[:index]) or 'none'})")
            if order.index(ref) >= index:
                raise _fail(src, path, f"refers to a parameter defined at or after {key}; "
                                       "move the condition's parameter above it")
            target = space.params[ref]
            if not isinstance(target, (ChoiceParam, IntParam)):
                raise _fail(src, path, "conditions may only name `choice` or `int` parameters")
            if isinstance(target, ChoiceParam):
                unknown = [v for v in clause.values if v not in target.values]
                if unknown:
                    raise _fail(src, path, f"{unknown} not among {ref}'s values {target.values}")


def _check_grid(space: Any, src: str) -> None:
    grid_keys = [k for k, p in space.params.items() if isinstance(p, ChoiceParam) and p.grid]
    if grid_keys and len(grid_keys) != len(space.params):
        other = next(k for k in space.params if k not in grid_keys)
        raise _fail(src, f"params.{other}", "space mixes grid and sampled parameters; make every parameter "
                                            "`choice` with `grid: true`, or none")
    if space.is_grid:
        size = len(space.grid())
        if space.num_samples is not None and space.num_samples % size:
            raise _fail(src, "num_samples", f"{space.num_samples} is not a multiple of the grid size {size} "
                                            "(a grid is always run whole)")
    elif space.num_samples is None:
        raise _fail(src, "num_samples", "required for sampled (non-grid) spaces")


def _check_paper(space: Any, src: str) -> None:
    paper = space.paper
    if paper is None:
        return
    if paper.param is None and len(space.params) > 1 and paper.rows:
        raise _fail(src, "paper.param", "required when the space has several parameters")
    key = paper.param or next(iter(space.params))
    if key not in space.params:
        raise _fail(src, "paper.param", f"{key} is not a parameter of this space")
    param = space.params[key]
    for value in paper.rows:
        if isinstance(param, ChoiceParam) and value not in param.values:
            raise _fail(src, f"paper.rows.{value}", f"not one of {key}'s values {param.values}")


def _config_error(base: str, overrides: dict[str, Any] | None) -> str | None:
    """None if `load_config(base, overrides)` succeeds, else its message without the source prefix."""
    try:
        load_config(base, overrides)
    except ConfigError as err:
        return str(err).split(": ", 1)[-1].replace("Value error, ", "")
    return None


def _probes(param: Any) -> list[tuple[str, Any]]:
    if isinstance(param, ChoiceParam):
        return [(f"values[{i}]", value) for i, value in enumerate(param.values)]
    return [("low", param.low), ("high", param.high)]


def _check_config(space: Any, src: str) -> None:
    base = space.base_config
    error = _config_error(base, None)
    if error is not None:
        raise _fail(src, "base_config", f"cannot load {base!r}: {error}")
    fixed = dict(space.fixed)
    error = _config_error(base, fixed)
    if error is not None:
        raise _fail(src, "fixed", f"rejected by config {base}: {error}")
    for key, param in space.params.items():
        for attr, value in _probes(param):
            error = _config_error(base, {**fixed, key: value})
            if error is not None:
                raise _fail(src, f"params.{key}.{attr}", f"{value!r} rejected by config {base}: {error}")
    for point in space.grid() if space.is_grid else []:
        error = _config_error(base, {**fixed, **point})
        if error is not None:
            raise _fail(src, "params", f"grid point {point} rejected by config {base}: {error}")


def validate_space(space: Any, src: str) -> None:
    """Run every whole-space check on a schema-valid `SearchSpace`; raises SearchSpaceError."""
    _check_keys(space, src)
    _check_when(space, src)
    _check_grid(space, src)
    _check_paper(space, src)
    _check_config(space, src)
