"""CMU Panoptic reader (also reads the synthetic world, which is written in the same layout).

On disk, per sequence ``<root>/<seq>/``: ``calibration_<seq>.json``, ``hdPose3d_stage1_coco19/
body3DScene_%08d.json`` ({"bodies": [{"id", "joints19": [x, y, z, conf] * 19}]}, cm, Panoptic axes),
``hdImgs/00_XX/00_XX_%08d.jpg`` and optional pseudo labels ``<root>/<dataset.pseudo_label_file>``.

Frames: the sorted body3DScene files of a sequence, every ``stride``-th of them, kept only if every
selected view's image exists. Frames with no (kept) person are not skipped (they count for evaluation).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from selfpose3d.config.schema import Config
from selfpose3d.data.io import DatasetError, FrameRecord, as_array, list_files, read_json, require_dir
from selfpose3d.data.joints import NUM_JOINTS, ROOT_JOINT
from selfpose3d.data.pseudo_labels import EMPTY, PseudoTable, load_pseudo_json
from selfpose3d.geometry.cameras import Camera, camera_from_panoptic, panoptic_points_to_model

log = logging.getLogger(__name__)
POSE_DIR = "hdPose3d_stage1_coco19"
POSE_FILE = re.compile(r"^body3DScene_(\d{8})\.json$")


def load_panoptic_cameras(path: Path, nodes: list[int]) -> list[Camera]:
    """Read ``calibration_<seq>.json`` and return the HD cameras with the given node ids, in that order (model frame, mm)."""
    data = read_json(path, "Panoptic calibration {cameras: [...]}")
    entries = data.get("cameras") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a dict with a 'cameras' list (Panoptic calibration)")
    try:
        hd = {int(e["node"]): e for e in entries if isinstance(e, dict) and e.get("type") == "hd" and "node" in e}
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: camera 'node' must be an integer id") from None
    cameras = []
    for node in nodes:
        if node not in hd:
            raise DatasetError(f"{path}: camera node {node} not in calibration (hd nodes: {sorted(hd)})")
        cameras.append(_camera(path, hd[node]))
    return cameras


def _camera(path: Path, entry: dict[str, Any]) -> Camera:
    """One calibration entry -> `Camera`, with every field checked."""
    where = f"camera node {entry['node']}"
    checked = dict(entry)
    checked["K"] = as_array(entry.get("K"), (3, 3), path, f"{where}: K")
    checked["R"] = as_array(entry.get("R"), (3, 3), path, f"{where}: R")
    checked["t"] = as_array(entry.get("t"), (3,), path, f"{where}: t")
    checked["distCoef"] = as_array(entry.get("distCoef", [0.0] * 5), (-1,), path, f"{where}: distCoef")
    checked["resolution"] = tuple(as_array(entry.get("resolution"), (2,), path, f"{where}: resolution").astype(int))
    checked.setdefault("name", f"{int(entry.get('panel', 0)):02d}_{int(entry['node']):02d}")
    return camera_from_panoptic(checked)


def load_panoptic_gt(path: Path, root_conf: float, joint_conf: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Read one body3DScene json -> GT joints (M, 15, 3) float32 mm (model frame), visibility (M, 15) bool, body ids.

    A body is kept if its root (joint 2) confidence > ``root_conf``; a joint is visible if conf > ``joint_conf``.
    """
    data = read_json(path, "Panoptic body3DScene {bodies: [{id, joints19}]}")
    bodies = data.get("bodies") if isinstance(data, dict) else None
    if not isinstance(bodies, list):
        raise DatasetError(f"{path}: expected a dict with a 'bodies' list")
    poses, vis, ids = [], [], []
    for i, body in enumerate(bodies):
        raw = body.get("joints19") if isinstance(body, dict) else None
        joints = as_array(raw, (-1, 4), path, f"bodies[{i}].joints19")
        if len(joints) < NUM_JOINTS:
            raise DatasetError(f"{path}: bodies[{i}].joints19: expected 19 x [x, y, z, conf], got {len(joints)} joints")
        joints = joints[:NUM_JOINTS]
        if joints[ROOT_JOINT, 3] <= root_conf:
            continue
        poses.append(panoptic_points_to_model(joints[:, :3]))
        vis.append(joints[:, 3] > joint_conf)
        ids.append(int(body.get("id", i)))
    if not poses:
        return np.zeros((0, NUM_JOINTS, 3), np.float32), np.zeros((0, NUM_JOINTS), bool), []
    return np.stack(poses).astype(np.float32), np.stack(vis), ids


def image_path(seq_dir: Path, camera: Camera, frame: int) -> Path:
    """``<seq>/hdImgs/00_XX/00_XX_%08d.jpg`` for a camera named ``00_XX``."""
    return seq_dir / "hdImgs" / camera.name / f"{camera.name}_{frame:08d}.jpg"


def usable_frames(seq_dir: Path, cameras: list[Camera], stride: int) -> list[int]:
    """Frame numbers of ``seq_dir``: every ``stride``-th sorted pose file whose images exist for all cameras."""
    pose_dir = require_dir(seq_dir / POSE_DIR, "body3DScene_%08d.json files")
    frames = sorted(int(m.group(1)) for m in map(POSE_FILE.match, list_files(pose_dir)) if m)[::stride]
    listings = []
    for cam in cameras:
        folder = require_dir(seq_dir / "hdImgs" / cam.name, f"images {cam.name}_%08d.jpg")
        listings.append(list_files(folder))
    return [f for f in frames if all(image_path(seq_dir, c, f).name in names for c, names in zip(cameras, listings, strict=True))]


class PanopticReader:
    """Index of the usable frames of a list of Panoptic-format sequences; `record` loads one frame's GT and labels.

    cfg: the run config (dataset.root, camera_nodes[:num_views], strides, thresholds, pseudo_label_file);
    sequences: sequence folder names; stride: frame stride; need_pseudo: a missing pseudo-label file is an
    error (else the frames simply have no pseudo labels).
    """

    def __init__(self, cfg: Config, sequences: list[str], stride: int, need_pseudo: bool) -> None:
        self.cfg = cfg
        self.root = require_dir(Path(cfg.dataset.root), "a Panoptic-format dataset root")
        nodes = cfg.dataset.camera_nodes[: cfg.dataset.num_views]
        self.cameras: dict[str, list[Camera]] = {}
        self.pseudo: dict[str, PseudoTable] = {}
        self.frames: list[tuple[str, int]] = []
        for seq in sequences:
            seq_dir = require_dir(self.root / seq, f"Panoptic sequence {seq}")
            self.cameras[seq] = load_panoptic_cameras(seq_dir / f"calibration_{seq}.json", nodes)
            self.pseudo[seq] = self._load_pseudo(seq, need_pseudo)
            self.frames += [(seq, f) for f in usable_frames(seq_dir, self.cameras[seq], stride)]
        if not self.frames:
            raise DatasetError(f"{self.root}: no usable frames in {sequences} (pose json + all {len(nodes)} views' images)")

    def _load_pseudo(self, seq: str, required: bool) -> PseudoTable:
        """The sequence's pseudo-label table; empty if the file is absent and not ``required``."""
        path = self.root / self.cfg.dataset.pseudo_label_file.format(seq=seq)
        if not path.exists():
            if required:
                raise DatasetError(f"{path}: missing pseudo-label json (see docs/architecture.md)")
            log.info("no pseudo labels at %s", path)
            return {}
        return load_pseudo_json(path)

    def __len__(self) -> int:
        """Number of usable frames."""
        return len(self.frames)

    def record(self, index: int) -> FrameRecord:
        """Load GT and pseudo labels of frame ``index`` (images are read later by the dataset)."""
        seq, frame = self.frames[index]
        seq_dir = self.root / seq
        cameras = self.cameras[seq]
        pose_file = seq_dir / POSE_DIR / f"body3DScene_{frame:08d}.json"
        ds = self.cfg.dataset
        gt_3d, gt_vis, ids = load_panoptic_gt(pose_file, ds.root_conf_threshold, ds.joint_vis_threshold)
        dets = [self.pseudo[seq].get((frame, cam.name), EMPTY) for cam in cameras]
        return FrameRecord(
            sequence=seq, frame=frame, cameras=cameras,
            image_paths=[image_path(seq_dir, cam, frame) for cam in cameras],
            gt_3d=gt_3d, gt_vis=gt_vis,
            pseudo_coco=[d.keypoints for d in dets], pseudo_scores=[d.scores for d in dets],
            meta={"gt_ids": ids},
        )
