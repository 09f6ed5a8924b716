"""Configuration: pydantic schema (single source of defaults), presets, YAML loading."""

from selfpose3d.config.loader import (
    PRESETS,
    ConfigError,
    config_hash,
    config_to_dict,
    dump_config,
    flatten_config,
    load_config,
    parse_overrides,
)
from selfpose3d.config.schema import Config

__all__ = [
    "PRESETS", "Config", "ConfigError", "config_hash", "config_to_dict", "dump_config",
    "flatten_config", "load_config", "parse_overrides",
]
