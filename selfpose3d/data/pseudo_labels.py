"""Pseudo 2D labels: read detector output, map COCO-17 -> Panoptic-15, apply the soft / hard strategy.

Two on-disk formats are read into one table ``{(frame, camera): Detections}``:
- the project format (docs/architecture.md) ``pseudo_2d/<seq>.json``:
  ``{"joint_format": "coco17", "frames": {"%08d": {"00_03": [{"keypoints": 17x3, "score": s}]}}}``;
- the VoxelPose Shelf/Campus format (pickle or json) ``{"{cam}_{frame}": [{"pred": 17x3, ...}]}``.
Pixels are original image pixels throughout.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from selfpose3d.config.schema import Config, LossConfig
from selfpose3d.data.io import DatasetError, read_json
from selfpose3d.data.joints import NUM_JOINTS, coco_to_panoptic

LabelMode = Literal["soft", "hard"]
LABEL_MODES = ("soft", "hard")
STAGES = ("backbone_2d", "root_net", "pose_net", "finetune")


@dataclass
class Detections:
    """One image's detector output: keypoints (P, 17, 3) [x px, y px, conf] and person scores (P,)."""

    keypoints: np.ndarray
    scores: np.ndarray


PseudoTable = dict[tuple[int, str], Detections]
EMPTY = Detections(np.zeros((0, 17, 3)), np.zeros(0))


def _person(entry: Any, key: str, path: Path, where: str) -> tuple[np.ndarray, float]:
    """Parse one detected person dict -> ((17, 3) keypoints, score); `DatasetError` if malformed."""
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(f"{path}: {where}: expected a dict with a {key!r} 17x3 list")
    try:
        keypoints = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError):
        keypoints = np.zeros(0)
    if keypoints.shape != (17, 3):
        raise DatasetError(f"{path}: {where}: {key!r} must be 17x3 [x, y, conf] (COCO-17), got {keypoints.shape}")
    score = entry.get("score")
    return keypoints, float(keypoints[:, 2].mean() if score is None else np.asarray(score).reshape(-1)[0])


def _detections(people: Any, key: str, path: Path, where: str) -> Detections:
    """A list of person dicts -> `Detections`."""
    if not isinstance(people, list):
        raise DatasetError(f"{path}: {where}: expected a list of detected persons")
    parsed = [_person(p, key, path, f"{where}[{i}]") for i, p in enumerate(people)]
    if not parsed:
        return EMPTY
    return Detections(np.stack([k for k, _ in parsed]), np.array([s for _, s in parsed]))


def load_pseudo_json(path: Path) -> PseudoTable:
    """Read a project-format ``pseudo_2d/<seq>.json`` -> ``{(frame, camera name): Detections}``."""
    data = read_json(path, "pseudo-label json {joint_format, frames}")
    if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
        raise DatasetError(f"{path}: expected a dict with a 'frames' mapping (pseudo-label file)")
    if data.get("joint_format", "coco17") != "coco17":
        raise DatasetError(f"{path}: joint_format must be 'coco17', got {data.get('joint_format')!r}")
    table: PseudoTable = {}
    for frame_key, views in data["frames"].items():
        if not str(frame_key).isdigit() or not isinstance(views, dict):
            raise DatasetError(f"{path}: frames[{frame_key!r}]: expected a %08d frame key mapping camera -> persons")
        for camera, people in views.items():
            table[(int(frame_key), str(camera))] = _detections(people, "keypoints", path, f"frames.{frame_key}.{camera}")
    return table


def load_detection_file(path: Path) -> PseudoTable:
    """Read VoxelPose-style Shelf/Campus detections (.pkl or .json) ``{"{cam}_{frame}": [{"pred": 17x3}]}``."""
    if path.suffix == ".json":
        data = read_json(path, "2D detections {cam_frame: [{pred: 17x3}]}")
    else:
        try:
            with open(path, "rb") as handle:
                data = pickle.load(handle)
        except FileNotFoundError:
            raise DatasetError(f"{path}: missing 2D detection pickle {{cam_frame: [{{pred: 17x3}}]}}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
            raise DatasetError(f"{path}: unreadable pickle, expected 2D detections ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict keyed '{{cam}}_{{frame}}'")
    table: PseudoTable = {}
    for key, people in data.items():
        cam, _, frame = str(key).partition("_")
        if not frame.isdigit():
            raise DatasetError(f"{path}: key {key!r}: expected '{{cam}}_{{frame}}', e.g. '0_300'")
        table[(int(frame), cam)] = _detections(people, "pred", path, str(key))
    return table


def filter_pseudo(keypoints: np.ndarray, scores: np.ndarray, mode: LabelMode,
                  loss: LossConfig) -> tuple[np.ndarray, np.ndarray]:
    """Apply a label strategy to Panoptic-15 pseudo poses.

    keypoints: (P, 15, 3) [x px, y px, conf]; scores: (P,). ``soft`` keeps all confidences; ``hard`` sets
    conf = 1 where conf >= ``loss.hard_threshold`` else 0 and drops persons with fewer than
    ``loss.hard_min_joints`` kept joints. Returns (P', 15, 3) float64 and (P',) scores.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    out = np.array(keypoints, dtype=np.float64).reshape(-1, NUM_JOINTS, 3)
    if mode == "soft":
        return out, np.asarray(scores, dtype=np.float64)
    kept = out[..., 2] >= loss.hard_threshold
    out[..., 2] = kept.astype(np.float64)
    person_ok = kept.sum(axis=1) >= loss.hard_min_joints
    return out[person_ok], np.asarray(scores, dtype=np.float64)[person_ok]


def panoptic_pseudo(det: Detections, mode: LabelMode, loss: LossConfig) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 detections -> filtered Panoptic-15 poses (P', 15, 3) and scores (P',), sorted by score (desc)."""
    keypoints, scores = filter_pseudo(coco_to_panoptic(det.keypoints), det.scores, mode, loss)
    order = np.argsort(-scores, kind="stable")
    return keypoints[order], scores[order]


def pad_people(poses: np.ndarray, max_people: int) -> tuple[np.ndarray, int]:
    """Keep the first ``max_people`` of (P, 15, 3) and zero-pad -> ((max_people, 15, 3) float32, kept count)."""
    count = min(len(poses), max_people)
    out = np.zeros((max_people, NUM_JOINTS, 3), dtype=np.float32)
    out[:count] = poses[:count]
    return out, count


def label_mode_for_epoch(cfg: Config, stage: str, epoch: int) -> LabelMode:
    """Label mode for a 0-based ``epoch`` of a training ``stage`` (backbone_2d, root_net, pose_net, finetune).

    ``soft`` / ``hard`` strategies are constant; ``soft_hard`` is soft except in the last
    ``loss.hard_last_epochs`` epochs of the pose_net stage.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    strategy = cfg.loss.label_strategy
    if strategy != "soft_hard":
        return strategy
    last = cfg.train.pose_net.epochs - cfg.loss.hard_last_epochs
    return "hard" if stage == "pose_net" and epoch >= last else "soft"
