"""The one sample type every dataset produces and every model / loss consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selfpose3d.geometry.cameras import Camera


@dataclass
class MultiViewSample:
    """One multi-view frame, before batching.

    images: (V, 3, H, W) float32, network input (normalised, already warped with ``affines``).
    cameras: V `Camera` objects in the model frame (mm).
    affines: (V, 2, 3) float64, original image pixels -> network input pixels.
    pseudo_2d: (V, P, 15, 3) float32 pseudo 2D poses in ORIGINAL image pixels [x, y, conf]; rows with all
      confidences 0 are padding. Confidences are already filtered by the label strategy (hard -> 0/1).
    pseudo_count: (V,) int, persons per view in ``pseudo_2d``.
    gt_3d: optional (M, 15, 3) float32 GT joints in mm (model frame); gt_vis: (M, 15) bool; gt_count: int.
      Evaluation only in the self-supervised mode.
    meta: sequence, frame index, camera names, dataset kind, etc.
    """

    images: np.ndarray
    cameras: list[Camera]
    affines: np.ndarray
    pseudo_2d: np.ndarray
    pseudo_count: np.ndarray
    gt_3d: np.ndarray | None = None
    gt_vis: np.ndarray | None = None
    gt_count: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        """Number of camera views V."""
        return len(self.cameras)
