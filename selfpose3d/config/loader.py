"""Load a `Config` from a preset name or a YAML file, apply dotted overrides, dump it back.

Errors are `ConfigError` with one line naming the file and the dotted key path.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from selfpose3d.config.schema import Config

PRESETS = ("panoptic", "shelf", "campus", "tiny")


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the file and key path."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _preset_path(name: str) -> Path:
    return Path(str(resources.files("selfpose3d.config") / "presets" / f"{name}.yaml"))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """Turn ``["loss.joint_lambda=0.1", ...]`` (values parsed as YAML) or a flat dotted dict into a nested dict."""
    nested: dict[str, Any] = {}
    if not overrides:
        return nested
    items = overrides.items() if isinstance(overrides, dict) else None
    if items is None:
        pairs = []
        for text in overrides:
            if "=" not in text:
                raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. loss.joint_lambda=0.1")
            key, raw = text.split("=", 1)
            pairs.append((key.strip(), yaml.safe_load(raw)))
        items = pairs
    for key, value in items:
        _set_dotted(nested, key, value)
    return nested


def _format_validation(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {path}: {first['msg']}{more}"


def load_config(
    name_or_path: str | Path = "tiny", overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """Build a validated `Config`.

    name_or_path: a preset name (panoptic, shelf, campus, tiny) or a YAML file. A YAML file may say
    ``base: tiny`` to start from a preset. overrides: dotted ``KEY=VALUE`` strings or a dotted dict,
    applied last. Raises `ConfigError` naming the file and key path.
    """
    text = str(name_or_path)
    if text in PRESETS:
        source, data = f"preset {text}", _read_yaml(_preset_path(text))
    else:
        path = Path(text)
        if not path.exists():
            raise ConfigError(f"{path}: no such config file (presets: {', '.join(PRESETS)})")
        source, data = str(path), _read_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        if base not in PRESETS:
            raise ConfigError(f"{source}: base: expected one of {', '.join(PRESETS)}, got {base!r}")
        data = _deep_merge(_read_yaml(_preset_path(base)), data)
    data = _deep_merge(data, parse_overrides(overrides))
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation(source, err)) from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain JSON-able dict of the config (tuples become lists)."""
    return json.loads(cfg.model_dump_json())


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the full config as YAML (every field, so the file alone reproduces the run)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def flatten_config(cfg: Config) -> dict[str, Any]:
    """Flat ``{"loss.joint_lambda": 0.01, ...}`` view, for experiment trackers."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = node

    walk("", config_to_dict(cfg))
    return flat


def config_hash(cfg: Config) -> str:
    """Short stable hash of the full config (12 hex chars)."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
