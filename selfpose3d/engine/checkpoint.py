"""Checkpoints: plain state dicts with the config embedded, written atomically, read with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from selfpose3d.config import Config, ConfigError, config_to_dict
from selfpose3d.fileio import atomic_output

CHECKPOINT_FORMAT = "sp3d-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not one of ours; the message names the file."""


def save_checkpoint(path: str | Path, *, cfg: Config, model: dict[str, torch.Tensor],
                    optimizer: dict[str, Any] | None = None, progress: dict[str, Any] | None = None,
                    history: list[dict[str, Any]] | None = None) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then os.replace).

    model / optimizer: state dicts; progress: {"stage": str, "stage_epoch": int, "global_epoch": int};
    history: per-epoch metric dicts. Returns the path written.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT, "config": config_to_dict(cfg), "model": model,
        "optimizer": optimizer, "progress": progress or {}, "history": history or [],
    }
    with atomic_output(path, suffix="", mode=None) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (weights_only=True: no code is unpickled).

    Returns the payload dict with "config" validated into a `Config`. Raises `CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an sp3d checkpoint (expected format {CHECKPOINT_FORMAT})")
    try:
        payload["config"] = Config.model_validate(payload["config"])
    except Exception as err:
        raise CheckpointError(f"{path}: embedded config is invalid ({ConfigError(str(err))})") from None
    return payload
