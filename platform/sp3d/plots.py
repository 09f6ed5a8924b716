"""Figures logged with every training run: learning curves and a 3D pose snapshot (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from selfpose3d.data.joints import LIMBS  # noqa: E402
from selfpose3d.evaluation import FrameResult  # noqa: E402

CURVE_PANELS = (
    ("training loss", ("train/total",)),
    ("AP (%)", ("eval/ap25", "eval/ap50", "eval/ap100", "eval/ap150")),
    ("MPJPE (mm)", ("eval/mpjpe",)),
)
PERCENT_PREFIX = "eval/ap"


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in history:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            xs.append(int(row["global_epoch"]))
            ys.append(100.0 * value if key.startswith(PERCENT_PREFIX) else float(value))
    return xs, ys


def _stage_bands(ax: Any, history: Sequence[dict[str, Any]]) -> None:
    """Shade each stage's epochs and label it at the top of the axis."""
    spans: dict[str, list[int]] = {}
    for row in history:
        spans.setdefault(row["stage"], []).append(int(row["global_epoch"]))
    for i, (stage, epochs) in enumerate(spans.items()):
        ax.axvspan(min(epochs) - 0.5, max(epochs) + 0.5, alpha=0.08 if i % 2 else 0.16, color="tab:gray")
        ax.text((min(epochs) + max(epochs)) / 2, 1.0, stage, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7)


def learning_curves(history: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Learning curves from `Trainer.history` (one dict per epoch with stage, global_epoch, train/..., eval/...).

    Panels: total training loss, AP@25/50/100/150 in %, MPJPE in mm, x = global epoch (stages shaded).
    Returns a matplotlib Figure (not attached to pyplot).
    """
    fig = Figure(figsize=(4.2 * len(CURVE_PANELS), 3.4), layout="constrained")
    for i, (label, keys) in enumerate(CURVE_PANELS):
        ax = fig.add_subplot(1, len(CURVE_PANELS), i + 1)
        _stage_bands(ax, history)
        drawn = False
        for key in keys:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, label=key.split("/")[-1])
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif len(keys) > 1:
            ax.legend(fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    if title:
        fig.suptitle(title)
    return fig


def _draw_skeletons(ax: Any, poses: np.ndarray, color: str, label: str, style: str = "-") -> None:
    for p, pose in enumerate(poses):
        for a, b in LIMBS:
            ax.plot(*zip(pose[a], pose[b], strict=True), style, color=color, lw=1.5,
                    label=label if (p == 0 and (a, b) == LIMBS[0]) else None)


def pose_snapshot(frame: FrameResult, title: str = "") -> Figure:
    """3D view of one test frame: GT skeletons (green) and valid predicted skeletons (red, dashed), in mm.

    frame: a `FrameResult` (pred_poses (K, 15, 3), pred_valid (K,), gt_poses (M, 15, 3)). Returns a Figure.
    """
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    preds = frame.pred_poses[frame.pred_valid] if frame.pred_valid is not None else frame.pred_poses
    _draw_skeletons(ax, frame.gt_poses, "tab:green", f"GT ({len(frame.gt_poses)})")
    _draw_skeletons(ax, preds, "tab:red", f"predicted ({len(preds)})", "--")
    points = np.concatenate([frame.gt_poses.reshape(-1, 3), preds.reshape(-1, 3)])
    if len(points):
        centre, half = points.mean(0), max(float(np.ptp(points, 0).max()) / 2, 1000.0)
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
            setter(c - half, c + half)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    if len(frame.gt_poses) or len(preds):
        ax.legend(loc="upper left", fontsize=8)
    default = f"{frame.sequence} frame {frame.frame}: {len(preds)} predicted, {len(frame.gt_poses)} GT"
    ax.set_title(title or default, fontsize=9)
    return fig
