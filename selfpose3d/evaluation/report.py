"""Per-sequence breakdown (SelfPose3d paper Table 8 layout), text table, tracker-safe flat metrics, JSON."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from selfpose3d.evaluation.poses import FrameResult, evaluate_poses
from selfpose3d.fileio import atomic_output

ALL_ROW = "All"
DEFAULT_COLUMNS = ["ap25", "ap50", "ap75", "ap100", "ap125", "ap150", "recall500", "mpjpe"]


def per_sequence_table(frames: Sequence[FrameResult], thresholds_mm: Sequence[float] | None = None,
                       recall_threshold_mm: float | None = None) -> dict[str, dict[str, float]]:
    """`evaluate_poses` per sequence (in first-seen order, sequences without GT left out) plus an "All" row.

    frames: `FrameResult` with ``sequence`` set. Returns {sequence: metrics, ..., "All": metrics}; the "All"
    row pools every frame (it is not the mean of the rows, exactly as a whole-test-set evaluation).
    """
    groups: dict[str, list[FrameResult]] = {}
    for fr in frames:
        groups.setdefault(fr.sequence, []).append(fr)
    table = {seq: evaluate_poses(group, thresholds_mm, recall_threshold_mm)
             for seq, group in groups.items() if any(len(f.gt_poses) for f in group)}
    table[ALL_ROW] = evaluate_poses(frames, thresholds_mm, recall_threshold_mm)
    return table


def _cell(key: str, value: float) -> str:
    if key.startswith(("ap", "recall", "root_ap", "root_recall")) or key.startswith("actor") or key == "average":
        return f"{100.0 * value:.2f}"
    return f"{value:.2f}"


def format_table(table: Mapping[str, Mapping[str, float]], columns: Sequence[str] | None = None) -> str:
    """Markdown table: one row per sequence, AP / recall in percent, MPJPE in mm (missing cells '-')."""
    cols = list(columns or [c for c in DEFAULT_COLUMNS if any(c in row for row in table.values())])
    lines = ["| sequence | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for seq, row in table.items():
        cells = [_cell(c, row[c]) if c in row else "-" for c in cols]
        lines.append(f"| {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_key(name: str) -> str:
    """Tracker-safe metric name: MLflow accepts only alphanumerics, ``_ - . / : space`` (sequence names may contain anything else)."""
    return re.sub(r"[^\w.\-/ :]", "_", name.replace("@", "_"))


def flat_metrics(metrics: Mapping[str, object], prefix: str = "eval/") -> dict[str, float]:
    """Flatten a metrics dict or a per-sequence table into {tracker-safe name: float}.

    Scalars -> ``prefix + key``; a table {seq: {key: v}} -> ``prefix + key`` for the "All" row and
    ``prefix + seq/key`` for the others. Non-numeric values are dropped; inf / NaN are kept.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            sub = prefix if key == ALL_ROW else f"{prefix}{metric_key(str(key))}/"
            out.update(flat_metrics(value, sub))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[metric_key(f"{prefix}{key}")] = float(value)
    return out


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf" / "nan": strict JSON has no literal for them
    return value


def save_report(table: Mapping[str, object], path: str | Path) -> Path:
    """Write a metrics dict / per-sequence table as JSON atomically (temp file + os.replace); returns path."""
    path = Path(path)
    with atomic_output(path, mode=None) as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(table), indent=2))
    return path
