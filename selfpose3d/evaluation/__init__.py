"""Evaluation (VoxelPose / SelfPose3d protocol): AP@25..150, recall, MPJPE, Recall@500, root metrics,
per-sequence tables and Shelf/Campus PCP. numpy only."""

from selfpose3d.evaluation.pcp import SHELF_BONES, SHELF_JOINT_NAMES, evaluate_pcp, panoptic_to_shelf
from selfpose3d.evaluation.poses import (
    EvaluationError,
    FramePrediction,
    FrameResult,
    average_precision,
    collect_matches,
    evaluate_poses,
    frames_from_outputs,
    pose_errors,
)
from selfpose3d.evaluation.report import (
    flat_metrics,
    format_table,
    metric_key,
    per_sequence_table,
    save_report,
)

__all__ = [
    "SHELF_BONES", "SHELF_JOINT_NAMES", "EvaluationError", "FramePrediction", "FrameResult",
    "average_precision", "collect_matches", "evaluate_pcp", "evaluate_poses", "flat_metrics", "format_table",
    "frames_from_outputs", "metric_key", "panoptic_to_shelf", "per_sequence_table", "pose_errors",
    "save_report",
]
