"""Panoptic-15 joint definitions and the COCO-17 -> Panoptic-15 mapping used for pseudo labels."""

from __future__ import annotations

import numpy as np

JOINT_NAMES = [
    "neck", "nose", "mid_hip", "l_shoulder", "l_elbow", "l_wrist", "l_hip", "l_knee", "l_ankle",
    "r_shoulder", "r_elbow", "r_wrist", "r_hip", "r_knee", "r_ankle",
]
NUM_JOINTS = len(JOINT_NAMES)
ROOT_JOINT = 2
LIMBS = [(0, 1), (0, 2), (0, 3), (3, 4), (4, 5), (0, 9), (9, 10), (10, 11), (2, 6), (2, 12), (6, 7),
         (7, 8), (12, 13), (13, 14)]
# left <-> right joint pairs (for flips and the simulated detector's limb swaps)
LEFT_RIGHT = [(3, 9), (4, 10), (5, 11), (6, 12), (7, 13), (8, 14)]

COCO_NAMES = [
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
]
# Panoptic joint -> COCO index; neck and mid-hip are midpoints of the shoulders / hips.
COCO_DIRECT = {1: 0, 3: 5, 4: 7, 5: 9, 6: 11, 7: 13, 8: 15, 9: 6, 10: 8, 11: 10, 12: 12, 13: 14, 14: 16}
COCO_MIDPOINTS = {0: (5, 6), 2: (11, 12)}


def coco_to_panoptic(coco: np.ndarray) -> np.ndarray:
    """COCO-17 keypoints (..., 17, 3) [x, y, conf] -> Panoptic-15 (..., 15, 3).

    Midpoint joints take the mean position and the minimum confidence of their two parents.
    """
    coco = np.asarray(coco, dtype=np.float64)
    out = np.zeros(coco.shape[:-2] + (NUM_JOINTS, 3))
    for pan, idx in COCO_DIRECT.items():
        out[..., pan, :] = coco[..., idx, :]
    for pan, (a, b) in COCO_MIDPOINTS.items():
        out[..., pan, :2] = (coco[..., a, :2] + coco[..., b, :2]) / 2
        out[..., pan, 2] = np.minimum(coco[..., a, 2], coco[..., b, 2])
    return out


def panoptic_to_coco(pan: np.ndarray) -> np.ndarray:
    """Panoptic-15 (..., 15, 3) -> COCO-17 (..., 17, 3); eyes/ears are copied from the nose.

    Used by the simulated detector, which writes COCO-17 like a real off-the-shelf detector.
    """
    pan = np.asarray(pan, dtype=np.float64)
    out = np.zeros(pan.shape[:-2] + (17, 3))
    for p, c in COCO_DIRECT.items():
        out[..., c, :] = pan[..., p, :]
    for c in (1, 2, 3, 4):
        out[..., c, :] = pan[..., 1, :]
        out[..., c, 2] *= 0.9
    return out


# Shelf / Campus 14-joint skeleton (VoxelPose order) and its relation to Panoptic-15.
SHELF_JOINT_NAMES = [
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow", "r_shoulder",
    "l_shoulder", "l_elbow", "l_wrist", "bottom_head", "top_head",
]
# Panoptic joint -> Shelf joint for the 12 limb joints (both directions use this table).
PANOPTIC_FROM_SHELF = {3: 9, 4: 10, 5: 11, 6: 3, 7: 4, 8: 5, 9: 8, 10: 7, 11: 6, 12: 2, 13: 1, 14: 0}
SHELF_HEAD_TOP_SCALE = (0.9375, 0.9375, 1.5)  # SelfPose3d's head rule, per axis (z up)


def panoptic15_to_shelf14(pose: np.ndarray) -> np.ndarray:
    """Panoptic-15 joints (..., 15, 3) mm -> Shelf/Campus order (..., 14, 3) mm (for PCP).

    Limbs map 1:1. Panoptic-15 has no head top, so the head follows SelfPose3d's rule (z up): with
    m = mid-shoulder and n = nose, bottom_head = m + 0.5 (n - m), top_head = m + (n - m) * (0.9375, 0.9375, 1.5).
    """
    pose = np.asarray(pose, dtype=np.float64)
    out = np.zeros(pose.shape[:-2] + (14, 3))
    for pan, shelf in PANOPTIC_FROM_SHELF.items():
        out[..., shelf, :] = pose[..., pan, :]
    mid = (pose[..., 3, :] + pose[..., 9, :]) / 2
    up = pose[..., 1, :] - mid
    out[..., 12, :] = mid + 0.5 * up
    out[..., 13, :] = mid + up * np.array(SHELF_HEAD_TOP_SCALE)
    return out


def shelf14_to_panoptic15(pose: np.ndarray) -> np.ndarray:
    """Shelf/Campus joints (..., 14, 3) -> Panoptic-15 (..., 15, 3): neck = mid-shoulder, mid-hip = mid-hip,
    nose = 2 * bottom_head - mid_shoulder (the exact inverse of `panoptic15_to_shelf14`'s head rule)."""
    pose = np.asarray(pose, dtype=np.float64)
    out = np.zeros(pose.shape[:-2] + (NUM_JOINTS, 3))
    for pan, shelf in PANOPTIC_FROM_SHELF.items():
        out[..., pan, :] = pose[..., shelf, :]
    out[..., 0, :] = (pose[..., 8, :] + pose[..., 9, :]) / 2
    out[..., 2, :] = (pose[..., 2, :] + pose[..., 3, :]) / 2
    out[..., 1, :] = 2 * pose[..., 12, :] - out[..., 0, :]
    return out
