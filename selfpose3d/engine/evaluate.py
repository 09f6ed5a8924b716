"""Inference over a test split and the VoxelPose/SelfPose3d metrics (AP@25..150, MPJPE, recall, root AP)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from selfpose3d.config import Config
from selfpose3d.data.dataset import collate_samples
from selfpose3d.engine.objective import to_device
from selfpose3d.evaluation import FrameResult, evaluate_poses, frames_from_outputs, per_sequence_table


@torch.no_grad()
def predict_frames(model: torch.nn.Module, dataset: Dataset, cfg: Config, device: torch.device,
                   max_frames: int | None = None) -> list[FrameResult]:
    """Run the model on every test sample (at most ``max_frames``, default cfg.eval.max_test_frames).

    Returns one `FrameResult` per frame: predicted poses (K, 15, 3) mm with proposal scores / validity,
    GT poses (M, 15, 3) mm with visibility, sequence name.
    """
    limit = max_frames if max_frames is not None else cfg.eval.max_test_frames
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate_samples,
                        num_workers=cfg.train.loader_workers)
    frames: list[FrameResult] = []
    try:
        for batch in loader:
            outputs = model(to_device(batch, device))
            frames.extend(frames_from_outputs(outputs, batch))
            if limit is not None and len(frames) >= limit:
                break
    finally:
        model.train(was_training)
    return frames[:limit] if limit is not None else frames


def evaluate_model(model: torch.nn.Module, dataset: Dataset, cfg: Config, device: torch.device,
                   per_sequence: bool = False, max_frames: int | None = None) -> dict[str, Any]:
    """Predict and score a test split.

    Returns the flat metric dict of `evaluate_poses` (ap25..ap150 in [0, 1], mpjpe mm, recall500,
    root_ap*, ...); with ``per_sequence`` also {"sequences": {seq: metrics, ..., "All": metrics}}.
    """
    frames = predict_frames(model, dataset, cfg, device, max_frames)
    frames_with_gt = [f for f in frames if len(f.gt_poses)]
    if not frames_with_gt:
        return {"num_frames": float(len(frames)), "num_gt": 0.0}
    metrics: dict[str, Any] = evaluate_poses(frames, cfg.eval.ap_thresholds_mm, cfg.eval.recall_threshold_mm)
    if per_sequence:
        metrics["sequences"] = per_sequence_table(frames, cfg.eval.ap_thresholds_mm, cfg.eval.recall_threshold_mm)
    return metrics
