"""VoxelPose / SelfPose3d multi-person 3D pose evaluation (CMU Panoptic protocol).

Protocol (VoxelPose ``Panoptic.evaluate``; SelfPose3d adds the root variant):

1. Per test frame WITH ground truth (frames without GT persons are skipped entirely, their predictions
   are neither TP nor FP — VoxelPose's ``if len(joints_3d) == 0: continue``), every valid predicted
   pose gets the MPJPE (mm) to every GT person of the frame over that person's visible joints; the
   minimum, its GT id (unique over the whole test set) and the prediction's score are kept.
2. All predictions of the test set are pooled and sorted by score, descending (stable: ties keep frame
   order, then prediction order). At a threshold t a prediction is a TP if its MPJPE < t and its GT is
   not claimed yet (it then claims it), else a FP.
3. recall = cumsum(TP) / #GT, precision = cumsum(TP) / (#TP + #FP so far); precision made monotone
   decreasing from the right; AP = sum over recall change points of delta-recall * precision, with
   recall padded by 0 / 1 and precision by 0 / 0 (VoxelPose ``_eval_list_to_ap``).
4. MPJPE = mean MPJPE of the TPs at ``recall_threshold_mm`` (each GT's highest-scored match under
   500 mm; ``_eval_list_to_mpjpe``), ``inf`` when there is none. Recall@500 = fraction of GT persons
   matched by any prediction with MPJPE < 500 mm (``_eval_list_to_recall``).
5. Root variant: the same on root proposals (x, y, z mm) vs. GT root joint (mid-hip); GT persons whose
   root is invisible cannot be matched but still count in #GT (SelfPose3d).

Deviations, all degenerate cases only: VoxelPose's 1e-5 epsilons in the recall / precision
denominators are dropped (exact fractions); a GT person with no visible joint cannot be matched
(VoxelPose would produce NaN); an evaluation without any GT person raises `EvaluationError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfpose3d.config.schema import EvalConfig
from selfpose3d.data.joints import NUM_JOINTS, ROOT_JOINT


class EvaluationError(ValueError):
    """Invalid evaluation input (shapes, empty ground truth)."""


@dataclass
class FrameResult:
    """Predictions and ground truth of one test frame (all coordinates in mm, model frame).

    pred_poses: (K, J, 3) predicted joints; pred_scores: (K,) scores (root confidence);
    pred_valid: optional (K,) bool, only True rows are evaluated (None = all).
    gt_poses: (M, J, 3) GT joints; gt_vis: optional (M, J) bool visibility (None = all visible).
    root_preds: optional (R, 3) root proposal centres, root_scores (R,), root_valid (R,) bool.
    sequence / frame: identifiers used by the per-sequence report.
    """

    pred_poses: np.ndarray
    pred_scores: np.ndarray
    gt_poses: np.ndarray
    gt_vis: np.ndarray | None = None
    sequence: str = ""
    frame: str | int = ""
    pred_valid: np.ndarray | None = None
    root_preds: np.ndarray | None = None
    root_scores: np.ndarray | None = None
    root_valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        where = f"frame {self.sequence!s}/{self.frame!s}"
        gt, pred = np.asarray(self.gt_poses, np.float64), np.asarray(self.pred_poses, np.float64)
        num_joints = next((a.shape[1] for a in (gt, pred) if a.size and a.ndim == 3), NUM_JOINTS)
        self.gt_poses = _poses(gt, num_joints, "gt_poses", where)
        self.pred_poses = _poses(pred, num_joints, "pred_poses", where)
        k, m = len(self.pred_poses), len(self.gt_poses)
        self.pred_scores = _vector(self.pred_scores, k, float, "pred_scores", where)
        self.pred_valid = _vector(self.pred_valid, k, bool, "pred_valid", where, default=True)
        vis = np.ones((m, num_joints), bool) if self.gt_vis is None else np.asarray(self.gt_vis, bool)
        vis = vis.reshape(0, num_joints) if vis.size == 0 else vis
        if vis.shape != (m, num_joints):
            raise EvaluationError(f"{where}: gt_vis has shape {vis.shape}, expected {(m, num_joints)}")
        self.gt_vis = vis
        if self.root_preds is not None:
            self.root_preds = np.asarray(self.root_preds, np.float64).reshape(-1, 3)
            r = len(self.root_preds)
            self.root_scores = _vector(self.root_scores, r, float, "root_scores", where)
            self.root_valid = _vector(self.root_valid, r, bool, "root_valid", where, default=True)


FramePrediction = FrameResult


def _poses(arr: np.ndarray, num_joints: int, name: str, where: str) -> np.ndarray:
    if arr.size == 0:
        return np.zeros((0, num_joints, 3))
    if arr.ndim != 3 or arr.shape[1:] != (num_joints, 3):
        raise EvaluationError(f"{where}: {name} has shape {arr.shape}, expected (N, {num_joints}, 3) in mm")
    return arr


def _vector(x: Any, n: int, dtype: type, name: str, where: str, default: Any = None) -> np.ndarray:
    if x is None:
        if default is None and n > 0:
            raise EvaluationError(f"{where}: {name} is required ({n} values)")
        return np.full(n, 0 if default is None else default, dtype=dtype)
    arr = np.asarray(x, dtype=dtype).reshape(-1)
    if arr.shape != (n,):
        raise EvaluationError(f"{where}: {name} has {arr.size} values, expected {n}")
    return arr


@dataclass
class MatchList:
    """Pooled per-prediction matches: errors (N,) mm, scores (N,), gt_ids (N,) int, and total_gt."""

    errors: np.ndarray
    scores: np.ndarray
    gt_ids: np.ndarray
    total_gt: int


def pose_errors(pred: np.ndarray, gt: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """MPJPE matrix (K, M) in mm between predictions (K, J, 3) and GT (M, J, 3) over GT-visible joints.

    GT persons without any visible joint (and NaN predictions) get ``inf``.
    """
    dist = np.linalg.norm(pred[:, None] - gt[None], axis=-1)  # (K, M, J)
    count = vis.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(vis[None], dist, 0.0).sum(axis=-1) / count[None]
    return np.where(np.isfinite(err), err, np.inf)


def _frame_errors(fr: FrameResult, kind: str, root_joint: int) -> tuple[np.ndarray, np.ndarray]:
    """Error matrix (K, M) mm and scores (K,) of one frame's valid predictions (kind "pose" or "root")."""
    if kind == "pose":
        keep = fr.pred_valid
        return pose_errors(fr.pred_poses[keep], fr.gt_poses, fr.gt_vis), fr.pred_scores[keep]
    if fr.root_preds is None:
        return np.zeros((0, len(fr.gt_poses))), np.zeros(0)
    keep = fr.root_valid
    err = np.linalg.norm(fr.root_preds[keep][:, None] - fr.gt_poses[None, :, root_joint], axis=-1)
    err = np.where(fr.gt_vis[None, :, root_joint] & np.isfinite(err), err, np.inf)
    return err, fr.root_scores[keep]


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def collect_matches(frames: Sequence[FrameResult], kind: str = "pose", root_joint: int = ROOT_JOINT) -> MatchList:
    """Pool (min error mm, its test-set-unique GT id, score) of every valid prediction in frames with GT.

    kind: "pose" (MPJPE over GT-visible joints) or "root" (root proposal vs GT root joint).
    """
    if kind not in ("pose", "root"):
        raise EvaluationError(f"collect_matches: kind must be 'pose' or 'root', got {kind!r}")
    errs, scores, ids, total = [], [], [], 0
    for fr in frames:
        if len(fr.gt_poses) == 0:
            continue
        err, score = _frame_errors(fr, kind, root_joint)
        idx = err.argmin(axis=1)
        errs.append(err[np.arange(len(err)), idx])
        ids.append(idx + total)
        scores.append(score)
        total += len(fr.gt_poses)
    return MatchList(_cat(errs, float), _cat(scores, float), _cat(ids, np.int64), total)


def true_positives(matches: MatchList, threshold_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy score-ordered matching at a threshold -> (order (N,) indices by score desc, tp (N,) bool)."""
    order = np.argsort(-matches.scores, kind="stable")
    err, gt = matches.errors[order], matches.gt_ids[order]
    cand = np.flatnonzero(err < threshold_mm)
    _, first = np.unique(gt[cand], return_index=True)
    tp = np.zeros(len(order), bool)
    tp[cand[first]] = True
    return order, tp


def average_precision(tp: np.ndarray, total_gt: int) -> tuple[float, float]:
    """All-point AP of a score-sorted TP sequence (N,) bool given the GT count -> (AP, final recall)."""
    if tp.size == 0:
        return 0.0, 0.0
    ctp = np.cumsum(tp)
    recall = ctp / total_gt
    precision = ctp / np.arange(1, tp.size + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    idx = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1])), float(recall[-1])


def _fmt(t: float) -> str:
    return f"{t:g}"


def metrics_from_matches(matches: MatchList, thresholds_mm: Sequence[float], recall_threshold_mm: float,
                         prefix: str = "") -> dict[str, float]:
    """AP / recall at each threshold, MPJPE and recall at ``recall_threshold_mm``; keys get ``prefix``."""
    out: dict[str, float] = {}
    aps = []
    for t in thresholds_mm:
        _, tp = true_positives(matches, t)
        ap, rec = average_precision(tp, matches.total_gt)
        out[f"{prefix}ap{_fmt(t)}"] = ap
        out[f"{prefix}recall{_fmt(t)}"] = rec
        aps.append(ap)
    out[f"{prefix}ap_mean"] = float(np.mean(aps)) if aps else 0.0
    order, tp = true_positives(matches, recall_threshold_mm)
    hits = matches.errors[order][tp]
    out[f"{prefix}mpjpe"] = float(hits.mean()) if hits.size else float("inf")
    out[f"{prefix}recall{_fmt(recall_threshold_mm)}"] = float(tp.sum() / matches.total_gt)
    return out


def evaluate_poses(frames: Sequence[FrameResult], thresholds_mm: Sequence[float] | None = None,
                   recall_threshold_mm: float | None = None, root_joint: int = ROOT_JOINT) -> dict[str, float]:
    """Evaluate a test set of `FrameResult` with the VoxelPose / SelfPose3d protocol (module docstring).

    Defaults come from `EvalConfig` (thresholds 25..150 mm, recall at 500 mm). Returns floats:
    ``apT`` and ``recallT`` per threshold T (AP / recall in [0, 1]), ``ap_mean``, ``mpjpe`` (mm),
    ``recall500``, counts ``num_frames``, ``num_gt``, ``num_pred``; if any frame has root proposals also
    ``root_apT``, ``root_recallT``, ``root_ap_mean``, ``root_mpjpe``, ``root_recall500``, ``num_root_pred``.
    Raises `EvaluationError` if no frame has a GT person.
    """
    defaults = EvalConfig()
    thresholds = list(defaults.ap_thresholds_mm if thresholds_mm is None else thresholds_mm)
    recall_t = defaults.recall_threshold_mm if recall_threshold_mm is None else recall_threshold_mm
    matches = collect_matches(frames, "pose", root_joint)
    if matches.total_gt == 0:
        raise EvaluationError(f"no ground-truth person in the {len(frames)} evaluated frames")
    out = metrics_from_matches(matches, thresholds, recall_t)
    out.update(num_frames=float(sum(len(f.gt_poses) > 0 for f in frames)), num_gt=float(matches.total_gt),
               num_pred=float(matches.errors.size))
    if any(f.root_preds is not None for f in frames):
        roots = collect_matches(frames, "root", root_joint)
        out.update(metrics_from_matches(roots, thresholds, recall_t, prefix="root_"))
        out["num_root_pred"] = float(roots.errors.size)
    return out


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def frames_from_outputs(outputs: dict[str, Any], batch: dict[str, Any]) -> list[FrameResult]:
    """Model outputs + collated batch (docs/architecture.md) -> one `FrameResult` per sample.

    outputs["proposals"] (B, K, 5) = x, y, z mm, score, valid (> 0 = valid); outputs["poses"] (B, K, J, 3) mm;
    batch["gt_3d"] (B, M, J, 3), batch["gt_vis"] (B, M, J), batch["gt_count"] (B,), batch["meta"] list of
    dicts with "sequence" / "frame". Pose scores and validity are the proposals' (VoxelPose); the same
    proposals are the root predictions. Accepts numpy arrays or torch tensors.
    """
    props, poses = _numpy(outputs["proposals"]), _numpy(outputs["poses"])
    gt, vis, count = _numpy(batch["gt_3d"]), _numpy(batch["gt_vis"]), _numpy(batch["gt_count"])
    metas = batch.get("meta") or [{}] * len(props)
    frames = []
    for b in range(len(props)):
        m, meta, valid = int(count[b]), metas[b], props[b, :, 4] > 0
        frames.append(FrameResult(
            pred_poses=poses[b], pred_scores=props[b, :, 3], pred_valid=valid, gt_poses=gt[b, :m],
            gt_vis=vis[b, :m], sequence=str(meta.get("sequence", "")), frame=meta.get("frame", ""),
            root_preds=props[b, :, :3], root_scores=props[b, :, 3], root_valid=valid))
    return frames
