"""Shelf / Campus reader (VoxelPose layout).

``<root>/calibration_{shelf,campus}.json`` = {"0": {"R", "T" (camera centre, mm), "fx", "fy", "cx", "cy",
"k", "p"}, ...}; ``actorsGT.mat`` with ``actor3D`` = 1 x P cell of F x 1 cells of 14 x 3 joints (metres;
empty when the actor is absent); images ``Camera{i}/campus4-c{i}-{frame:05d}.png`` (Campus) or
``Camera{i}/img_{frame:06d}.png`` (Shelf); 2D detections ``<root>/<dataset.pseudo_label_file>``
(pickle/json ``{"{cam}_{frame}": [{"pred": 17x3}]}``).

Frames: test = VoxelPose's evaluation ranges (Campus 350-470 and 650-750, Shelf 300-600, inclusive);
train = every other frame of actorsGT. Either is sub-sampled by the split's stride and kept only if all
selected views' images exist. The dataset sequence lists are not used (one sequence per root).

Joints: GT comes in the Shelf/Campus 14-joint order (`SHELF_JOINT_NAMES`). For the batch it is mapped to
Panoptic-15 by `shelf14_to_panoptic15`: limbs 1:1, neck = mid-shoulder, mid-hip = mid-hip, nose =
2 * bottom_head - mid_shoulder (the exact inverse of the head rule VoxelPose/SelfPose3d use to turn
predictions into Shelf order, `panoptic15_to_shelf14`). The original 14-joint GT (mm) is kept in
``meta["gt_shelf14"]`` for PCP, with the actor index of each person in ``meta["gt_ids"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from selfpose3d.config.schema import Config
from selfpose3d.data.io import (
    DatasetError,
    FrameRecord,
    as_array,
    image_size_of,
    list_files,
    read_json,
    require_dir,
)
from selfpose3d.data.joints import (  # noqa: F401 - re-exported for readers' users
    NUM_JOINTS,
    PANOPTIC_FROM_SHELF,
    SHELF_JOINT_NAMES,
    panoptic15_to_shelf14,
    shelf14_to_panoptic15,
)
from selfpose3d.data.pseudo_labels import EMPTY, PseudoTable, load_detection_file
from selfpose3d.geometry.cameras import camera_from_shelf_campus

TEST_FRAMES = {"campus": list(range(350, 471)) + list(range(650, 751)), "shelf": list(range(300, 601))}
CALIBRATION_KEYS = ("R", "T", "fx", "fy", "cx", "cy", "k", "p")
M_TO_MM = 1000.0


def _unwrap(cell: Any) -> Any:
    """Strip MATLAB cell wrappers: size-1 object arrays -> their element."""
    while isinstance(cell, np.ndarray) and cell.dtype == object and cell.size == 1:
        cell = cell.reshape(-1)[0]
    return cell


def load_actors_gt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``actorsGT.mat`` -> joints (P, F, 14, 3) float64 metres (zeros where absent) and present (P, F) bool."""
    try:
        data = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing actorsGT.mat (3D ground truth)") from None
    except (ValueError, TypeError, OSError) as err:
        raise DatasetError(f"{path}: unreadable .mat, expected actorsGT with 'actor3D' ({err})") from None
    if "actor3D" not in data:
        raise DatasetError(f"{path}: mat without 'actor3D' (expected a 1 x P cell of F x 1 cells of 14x3 joints)")
    actors = np.asarray(data["actor3D"], dtype=object).reshape(-1)
    if actors.size == 1 and isinstance(_unwrap(actors[0]), np.ndarray) and _unwrap(actors[0]).dtype == object:
        actors = np.asarray(_unwrap(actors[0]), dtype=object).reshape(-1)  # an extra 1x1 wrapper
    per_actor = [np.asarray(a, dtype=object).reshape(-1) for a in actors]
    frames = max((len(a) for a in per_actor), default=0)
    joints = np.zeros((len(per_actor), frames, 14, 3))
    present = np.zeros((len(per_actor), frames), dtype=bool)
    for p, cells in enumerate(per_actor):
        for f, cell in enumerate(cells):
            pose = np.asarray(_unwrap(cell), dtype=np.float64)
            if pose.size == 42:
                joints[p, f], present[p, f] = pose.reshape(14, 3), True
            elif pose.size:
                raise DatasetError(f"{path}: actor3D{{{p + 1}}}{{{f + 1}}}: expected 14x3 joints or empty, got {pose.shape}")
    return joints, present


def load_shelf_campus_cameras(path: Path, nodes: list[int]) -> dict[int, dict[str, Any]]:
    """Read the calibration json and return the checked entries of the selected camera ids (keys "0", "1", ...)."""
    data = read_json(path, "Shelf/Campus calibration {\"0\": {R, T, fx, fy, cx, cy, k, p}, ...}")
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict keyed by camera id")
    out = {}
    for node in nodes:
        entry = data.get(str(node))
        if not isinstance(entry, dict):
            raise DatasetError(f"{path}: camera node {node} not in calibration (cameras: {sorted(data)})")
        missing = [k for k in CALIBRATION_KEYS if k not in entry]
        if missing:
            raise DatasetError(f"{path}: camera {node}: missing keys {missing}")
        shapes = {"R": (3, 3), "T": (3,), "k": (3,), "p": (2,)}
        out[node] = {k: as_array(entry[k], shapes.get(k, ()), path, f"camera {node}: {k}") for k in CALIBRATION_KEYS}
    return out


def image_path(root: Path, kind: str, node: int, frame: int) -> Path:
    """Image of camera ``node`` at ``frame`` (Campus / Shelf naming as in VoxelPose)."""
    name = f"campus4-c{node}-{frame:05d}.png" if kind == "campus" else f"img_{frame:06d}.png"
    return root / f"Camera{node}" / name


class ShelfCampusReader:
    """Index of the usable Shelf or Campus frames of a split; `record` builds one frame's GT and labels.

    cfg: run config (dataset.kind shelf|campus, root, camera_nodes[:num_views], pseudo_label_file);
    split: "train" or "test"; stride: frame stride; need_pseudo: a missing detection file is an error.
    """

    def __init__(self, cfg: Config, split: str, stride: int, need_pseudo: bool) -> None:
        self.kind = cfg.dataset.kind
        self.root = require_dir(Path(cfg.dataset.root), f"a {self.kind} dataset root")
        self.nodes = cfg.dataset.camera_nodes[: cfg.dataset.num_views]
        entries = load_shelf_campus_cameras(self.root / f"calibration_{self.kind}.json", self.nodes)
        self.joints, self.present = load_actors_gt(self.root / "actorsGT.mat")
        self.frames = self._usable_frames(split, stride)
        first = self.frames[0]
        self.cameras = [
            camera_from_shelf_campus(str(n), entries[n], image_size_of(image_path(self.root, self.kind, n, first)))
            for n in self.nodes
        ]
        self.pseudo = self._load_pseudo(cfg.dataset.pseudo_label_file, need_pseudo)

    def _usable_frames(self, split: str, stride: int) -> list[int]:
        """Frames of the split (see module docstring) whose images exist for every selected camera."""
        test = TEST_FRAMES[self.kind]
        if split == "test":
            candidates = test
        else:
            held_out = set(test)
            candidates = [f for f in range(self.joints.shape[1]) if f not in held_out]
        listings = [list_files(require_dir(self.root / f"Camera{n}", f"camera {n} images")) for n in self.nodes]
        frames = [f for f in candidates[::stride]
                  if all(image_path(self.root, self.kind, n, f).name in names for n, names in zip(self.nodes, listings, strict=True))]
        if not frames:
            raise DatasetError(f"{self.root}: no usable {split} frames (images for cameras {self.nodes})")
        return frames

    def _load_pseudo(self, pattern: str, required: bool) -> PseudoTable:
        """The detection table; empty if the file is absent and not ``required``."""
        path = self.root / pattern.format(seq=self.kind)
        if not path.exists() and not required:
            return {}
        return load_detection_file(path)

    def __len__(self) -> int:
        """Number of usable frames."""
        return len(self.frames)

    def record(self, index: int) -> FrameRecord:
        """GT (Panoptic-15 mm + raw 14-joint mm in meta) and detections of frame ``index``."""
        frame = self.frames[index]
        ids = [p for p in range(len(self.joints)) if frame < self.joints.shape[1] and self.present[p, frame]]
        shelf_mm = (self.joints[ids, frame] * M_TO_MM).astype(np.float32).reshape(-1, 14, 3)
        gt_3d = shelf14_to_panoptic15(shelf_mm).astype(np.float32)
        dets = [self.pseudo.get((frame, str(n)), EMPTY) for n in self.nodes]
        return FrameRecord(
            sequence=self.kind, frame=frame, cameras=self.cameras,
            image_paths=[image_path(self.root, self.kind, n, frame) for n in self.nodes],
            gt_3d=gt_3d, gt_vis=np.ones(gt_3d.shape[:2], dtype=bool),
            pseudo_coco=[d.keypoints for d in dets], pseudo_scores=[d.scores for d in dets],
            meta={"gt_ids": ids, "gt_shelf14": shelf_mm},
        )
