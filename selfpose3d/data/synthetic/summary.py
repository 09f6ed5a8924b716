"""Summarise a Panoptic-layout dataset (synthetic or real): sequences, frames, cameras, people per frame,
pseudo-label detections, and how many detections match no ground-truth person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from selfpose3d.data.joints import coco_to_panoptic
from selfpose3d.data.synthetic.writer import GT_DIR, MANIFEST, PSEUDO_DIR
from selfpose3d.geometry.cameras import Camera, camera_from_panoptic, panoptic_points_to_model, project_points

ROOT_CONF = 0.1  # GT person kept if its root confidence is above this (dataset.root_conf_threshold)
VIS_CONF = 0.1  # GT joint visible if its confidence is above this (dataset.joint_vis_threshold)
MATCH_CONF = 0.3  # detected joints used for matching
MATCH_FRACTION = 0.05  # a detection matches a GT person if its median joint error < this x image diagonal


class DatasetFormatError(ValueError):
    """A file of the dataset is missing or malformed; the message names the file."""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DatasetFormatError(f"{path}: file not found") from err
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err


def _gt_people(scene: dict, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Kept GT persons of one body3DScene: [(joints (15, 3) mm model frame, visible (15,) bool)]."""
    people = []
    for body in scene.get("bodies", []):
        try:
            arr = np.asarray(body["joints19"], dtype=np.float64).reshape(-1, 4)[:15]
        except (KeyError, ValueError) as err:
            raise DatasetFormatError(f"{path}: bodies[].joints19: expected 19 x [x, y, z, conf] numbers") from err
        if arr[2, 3] > ROOT_CONF:
            people.append((panoptic_points_to_model(arr[:, :3]), arr[:, 3] > VIS_CONF))
    return people


def _is_matched(keypoints: list, people: list[tuple[np.ndarray, np.ndarray]], camera: Camera) -> bool:
    """Does a COCO-17 detection lie near the projection of some GT person?"""
    det = coco_to_panoptic(np.asarray(keypoints, dtype=np.float64))
    limit = MATCH_FRACTION * float(np.hypot(*camera.resolution))
    for joints, visible in people:
        use = visible & (det[:, 2] >= MATCH_CONF)
        if use.sum() >= 3:
            err = np.linalg.norm(project_points(joints[use], camera) - det[use, :2], axis=1)
            if float(np.median(err)) < limit:
                return True
    return False


def _pseudo_stats(path: Path, gt: dict[str, list], cameras: dict[str, Camera]) -> dict[str, int]:
    """Count detections in a pseudo-label file and those matching no GT person (FPs, outside-dome people)."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
        raise DatasetFormatError(f"{path}: expected {{'joint_format', 'detector', 'frames': {{...}}}}")
    detections = unmatched = 0
    for frame, views in data["frames"].items():
        for cam_name, records in views.items():
            detections += len(records)
            if frame in gt and cam_name in cameras:
                unmatched += sum(not _is_matched(r["keypoints"], gt[frame], cameras[cam_name]) for r in records)
    return {"detections": detections, "unmatched_detections": unmatched}


def _sequence_summary(root: Path, seq_dir: Path, entry: dict | None) -> dict[str, Any]:
    name = seq_dir.name
    calib_path = seq_dir / f"calibration_{name}.json"
    calib = _load_json(calib_path)
    try:
        cameras = {c["name"]: camera_from_panoptic(c) for c in calib["cameras"] if c.get("type", "hd") == "hd"}
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetFormatError(f"{calib_path}: cameras[]: expected name, K, R, t, distCoef entries") from err
    gt = {}
    for path in sorted((seq_dir / GT_DIR).glob("body3DScene_*.json")):
        gt[path.stem.split("_")[-1]] = _gt_people(_load_json(path), path)
    counts = [len(people) for people in gt.values()] or [0]
    pseudo_path = root / PSEUDO_DIR / f"{name}.json"
    pseudo = _pseudo_stats(pseudo_path, gt, cameras) if pseudo_path.is_file() else None
    return {
        "name": name, "frames": len(gt), "first_frame": min(gt, default=None), "last_frame": max(gt, default=None),
        "cameras": sorted(cameras), "images": len(list((seq_dir / "hdImgs").glob("*/*.jpg"))),
        "persons_per_frame": {"min": int(min(counts)), "mean": float(np.mean(counts)), "max": int(max(counts))},
        "pseudo_labels": pseudo is not None,
        "detections": None if pseudo is None else pseudo["detections"],
        "unmatched_detections": None if pseudo is None else pseudo["unmatched_detections"],
        "false_positives": None if entry is None else entry["false_positives"],
        "outside_dome": None if entry is None else entry["outside_dome"],
    }


def summarize_dataset(root: Path) -> dict[str, Any]:
    """Summary of the dataset at ``root``: per-sequence dicts (frames, cameras, images, persons_per_frame
    {min, mean, max}, detections, unmatched_detections, false_positives / outside_dome from the synthetic
    manifest or None) and totals. Raises `DatasetFormatError` if ``root`` holds no Panoptic sequence."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: no such directory")
    seq_dirs = sorted(d for d in root.iterdir() if (d / f"calibration_{d.name}.json").is_file())
    if not seq_dirs:
        raise DatasetFormatError(f"{root}: not a Panoptic-layout dataset (no <seq>/calibration_<seq>.json)")
    manifest = _load_json(root / MANIFEST) if (root / MANIFEST).is_file() else None
    entries = {e["name"]: e for e in manifest["sequences"]} if manifest else {}
    sequences = [_sequence_summary(root, d, entries.get(d.name)) for d in seq_dirs]
    totals = {key: sum(s[key] or 0 for s in sequences)
              for key in ("frames", "images", "detections", "unmatched_detections", "false_positives")}
    totals["outside_dome_sequences"] = sum(bool(s["outside_dome"]) for s in sequences)
    return {"root": str(root), "synthetic": manifest is not None,
            "seed": manifest["seed"] if manifest else None,
            "fingerprint": manifest["fingerprint"] if manifest else None,
            "sequences": sequences, "totals": totals}
