"""Shared reader plumbing: the dataset error type, checked file readers, and the per-frame record
that every reader (Panoptic, Shelf/Campus) hands to the multi-view dataset."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from selfpose3d.geometry.cameras import Camera


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the one-line message names the file and what was expected."""


@dataclass
class FrameRecord:
    """Everything a reader knows about one multi-view frame (no images loaded yet).

    cameras / image_paths: V entries in view order. gt_3d: (M, 15, 3) float32 mm (model frame);
    gt_vis: (M, 15) bool. pseudo_coco: V arrays (P_v, 17, 3) [x, y, conf] in original pixels (raw
    detector output); pseudo_scores: V arrays (P_v,) person scores. meta: sequence, frame, camera names, ...
    """

    sequence: str
    frame: int
    cameras: list[Camera]
    image_paths: list[Path]
    gt_3d: np.ndarray
    gt_vis: np.ndarray
    pseudo_coco: list[np.ndarray]
    pseudo_scores: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; missing or invalid files raise `DatasetError` naming the file and ``what`` it should be."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: bad json, expected {what} ({err})") from None


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise `DatasetError` naming it and ``what`` it should hold."""
    if not path.is_dir():
        raise DatasetError(f"{path}: missing directory, expected {what}")
    return path


def list_files(folder: Path) -> set[str]:
    """File names (not paths) in ``folder``; empty if it does not exist. One listdir, cheap existence checks."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def read_image(path: Path, resolution: tuple[int, int]) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB and check it has the camera's ``resolution`` = (width, height) px."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: missing image (or unreadable), expected a {resolution[0]}x{resolution[1]} image")
    height, width = image.shape[:2]
    if (width, height) != tuple(resolution):
        raise DatasetError(
            f"{path}: image is {width}x{height}, expected the calibrated resolution {resolution[0]}x{resolution[1]}"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of an image file; `DatasetError` if it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: missing image (or unreadable), expected an image file")
    return int(image.shape[1]), int(image.shape[0])


def as_array(value: Any, shape: tuple[int, ...], path: Path, key: str) -> np.ndarray:
    """``np.asarray(value, float64)`` reshaped to ``shape``; wrong sizes raise `DatasetError` naming file and key."""
    try:
        array = np.asarray(value, dtype=np.float64)
        return array.reshape(shape)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {key}: expected numbers of shape {shape}") from None
