"""Shelf / Campus PCP (percentage of correct parts), VoxelPose protocol, for Panoptic-15 predictions.

Protocol (VoxelPose ``Shelf.evaluate`` / ``Campus.evaluate``): for every frame and every GT actor
present in it, the prediction with the smallest MPJPE over all 14 Shelf joints is taken (Recall@500
counts actors whose best MPJPE is < 500 mm). Each of the 10 bones — 9 limbs of the 14-joint skeleton
(lower/upper legs, lower/upper arms, head) plus the torso (hip centre -> bottom head) — is correct if
the mean of its two endpoint errors is <= alpha (0.5) * GT bone length. Actor PCP = correct / evaluated
bones over all frames; "average" = mean over actors 1-3 (Shelf's 4th actor is reported, not averaged).

Our models predict Panoptic-15 joints; `panoptic_to_shelf` maps them to the Shelf-14 order with the
one mapping the project has, `selfpose3d.data.joints.panoptic15_to_shelf14` (limbs 1:1, head by
SelfPose3d's mid-shoulder/nose rule; VoxelPose additionally blends an ear-based estimate, which
Panoptic-15 cannot provide). GT given with 15 joints (synthetic world) is mapped the same way.

Deviations (degenerate cases only): a frame without valid prediction counts the actor's bones as wrong
(VoxelPose crashes); an actor never present gets NaN and is left out of the average.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selfpose3d.config.schema import EvalConfig
from selfpose3d.data.joints import SHELF_JOINT_NAMES, panoptic15_to_shelf14  # noqa: F401 - re-exported
from selfpose3d.evaluation.poses import EvaluationError

PCP_ALPHA = 0.5  # protocol constant: bone correct if mean endpoint error <= alpha * bone length

JointRef = int | tuple[int, ...]  # a joint index, or several joints whose mean is the endpoint
# VoxelPose's 10 Shelf/Campus bones (Shelf-14 indices); the torso starts at the hip centre.
SHELF_BONES: list[tuple[JointRef, JointRef]] = [
    (0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (9, 10), (10, 11), (12, 13), ((2, 3), 12),
]
SHELF_BONE_NAMES = [
    "r_lower_leg", "r_upper_leg", "l_upper_leg", "l_lower_leg", "r_lower_arm", "r_upper_arm",
    "l_upper_arm", "l_lower_arm", "head", "torso",
]
BONE_GROUPS = {
    "head": [8], "torso": [9], "upper_arms": [5, 6], "lower_arms": [4, 7], "upper_legs": [1, 2],
    "lower_legs": [0, 3],
}
AVERAGED_ACTORS = 3


def panoptic_to_shelf(poses: np.ndarray) -> np.ndarray:
    """Panoptic-15 joints (..., 15, 3) mm -> Shelf/Campus-14 order (..., 14, 3) mm, shape-checked (module doc)."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.shape[-2:] != (15, 3):
        raise EvaluationError(f"panoptic_to_shelf expects (..., 15, 3) Panoptic joints, got {poses.shape}")
    return panoptic15_to_shelf14(poses)


def _to_shelf(poses: np.ndarray, name: str) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    if poses.size == 0:
        return np.zeros((0, 14, 3))
    if poses.ndim != 3 or poses.shape[1:] not in ((14, 3), (15, 3)):
        raise EvaluationError(f"{name} has shape {poses.shape}, expected (N, 14, 3) Shelf or (N, 15, 3) Panoptic")
    return poses if poses.shape[1] == 14 else panoptic_to_shelf(poses)


def _endpoint_weights(refs: Sequence[JointRef], num_joints: int = 14) -> np.ndarray:
    """(B, J) averaging weights: row b @ pose (J, 3) gives bone endpoint b."""
    w = np.zeros((len(refs), num_joints))
    for b, ref in enumerate(refs):
        idx = [ref] if isinstance(ref, int) else list(ref)
        w[b, idx] = 1.0 / len(idx)
    return w


def _frame_actors(gt: Any, present: Any, num_actors: int | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    gt = _to_shelf(gt, f"{where} gt_actors")
    ok = np.isfinite(gt).all(axis=(1, 2))
    if present is not None:
        ok &= np.asarray(present, bool).reshape(-1)
    if num_actors is not None and len(gt) != num_actors:
        raise EvaluationError(f"{where}: {len(gt)} GT actors, previous frames had {num_actors}")
    return gt, ok


def evaluate_pcp(pred_poses: Sequence[np.ndarray], gt_actors: Sequence[np.ndarray],
                 gt_present: Sequence[np.ndarray] | None = None, pred_valid: Sequence[np.ndarray] | None = None,
                 bones: Sequence[tuple[JointRef, JointRef]] = SHELF_BONES, alpha: float = PCP_ALPHA,
                 recall_threshold_mm: float | None = None) -> dict[str, float]:
    """Shelf/Campus PCP over F frames (VoxelPose protocol, module docstring).

    pred_poses[f]: (K, 15, 3) Panoptic or (K, 14, 3) Shelf joints, mm; pred_valid[f]: optional (K,) bool.
    gt_actors[f]: (A, 14, 3) Shelf (or (A, 15, 3) Panoptic) joints, mm, actor a = same person in every
    frame; an actor is absent if gt_present[f][a] is False or its joints contain NaN.
    Returns {"actor1".."actorA", "average" (actors 1-3), "recall500", "<bone group>" (head, torso, ...,
    averaged over actors 1-3)} as fractions in [0, 1].
    """
    if len(pred_poses) != len(gt_actors):
        raise EvaluationError(f"pred_poses has {len(pred_poses)} frames, gt_actors has {len(gt_actors)}")
    recall_t = EvalConfig().recall_threshold_mm if recall_threshold_mm is None else recall_threshold_mm
    w_start = _endpoint_weights([b[0] for b in bones])
    w_end = _endpoint_weights([b[1] for b in bones])
    num_actors: int | None = None
    correct = total = None
    matched = seen = 0
    for f, (pred, gt) in enumerate(zip(pred_poses, gt_actors, strict=True)):
        where = f"frame {f}"
        gt, ok = _frame_actors(gt, None if gt_present is None else gt_present[f], num_actors, where)
        if num_actors is None:
            num_actors = len(gt)
            correct, total = np.zeros((num_actors, len(bones))), np.zeros(num_actors)
        pred = _to_shelf(pred, f"{where} pred_poses")
        if pred_valid is not None:
            pred = pred[np.asarray(pred_valid[f], bool).reshape(-1)]
        for a in np.flatnonzero(ok):
            total[a] += 1
            seen += 1
            if len(pred) == 0:
                continue
            mpjpe = np.linalg.norm(pred - gt[a], axis=-1).mean(axis=-1)
            best = int(np.nanargmin(mpjpe)) if np.isfinite(mpjpe).any() else 0
            matched += bool(mpjpe[best] < recall_t)
            correct[a] += _bones_correct(pred[best], gt[a], w_start, w_end, alpha)
    if num_actors is None or seen == 0:
        raise EvaluationError("evaluate_pcp: no GT actor present in any frame")
    return _pcp_summary(correct, total, matched / seen, recall_t)


def _bones_correct(pred: np.ndarray, gt: np.ndarray, w_start: np.ndarray, w_end: np.ndarray,
                   alpha: float) -> np.ndarray:
    """(B,) bool: bone correct if mean endpoint error (mm) <= alpha * GT bone length."""
    ps, pe, gs, ge = w_start @ pred, w_end @ pred, w_start @ gt, w_end @ gt
    err = (np.linalg.norm(ps - gs, axis=-1) + np.linalg.norm(pe - ge, axis=-1)) / 2.0
    return err <= alpha * np.linalg.norm(gs - ge, axis=-1)


def _pcp_summary(correct: np.ndarray, total: np.ndarray, recall: float, recall_t: float) -> dict[str, float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        bone_pcp = correct / total[:, None]  # (A, B), NaN for never-present actors
    actor_pcp = bone_pcp.mean(axis=1)
    avg = actor_pcp[:AVERAGED_ACTORS]
    out = {f"actor{a + 1}": float(v) for a, v in enumerate(actor_pcp)}
    out["average"] = float(np.nanmean(avg)) if np.isfinite(avg).any() else float("nan")
    out[f"recall{recall_t:g}"] = float(recall)
    if bone_pcp.shape[1] == len(SHELF_BONES):
        for name, idx in BONE_GROUPS.items():
            group = bone_pcp[:AVERAGED_ACTORS, idx].mean(axis=1)
            out[name] = float(np.nanmean(group)) if np.isfinite(group).any() else float("nan")
    return out
