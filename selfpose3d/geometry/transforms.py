"""2D affine transforms between original image pixels and network input / heatmap pixels."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def resize_affine(src_size: tuple[int, int], dst_size: tuple[int, int], rotation_deg: float = 0.0,
                  scale: float = 1.0) -> np.ndarray:
    """2x3 affine mapping original pixels (src_size = (w, h)) to an output of dst_size = (w, h).

    The whole source fits into the output keeping its aspect ratio (letterbox), then the output is
    rotated by ``rotation_deg`` (counter-clockwise, degrees) and zoomed by ``scale`` about its centre.
    """
    sw, sh = src_size
    dw, dh = dst_size
    fit = min(dw / sw, dh / sh)
    base = np.array([[fit, 0.0, dw / 2 - fit * sw / 2], [0.0, fit, dh / 2 - fit * sh / 2], [0, 0, 1]])
    spin = cv2.getRotationMatrix2D((dw / 2, dh / 2), rotation_deg, scale)
    return (np.vstack([spin, [0, 0, 1]]) @ base)[:2]


def scale_affine(affine: np.ndarray, factor_x: float, factor_y: float) -> np.ndarray:
    """Compose a 2x3 affine with a further scaling of its output (e.g. image -> heatmap = 1/stride)."""
    return np.diag([factor_x, factor_y]) @ affine


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to pixel points (..., 2)."""
    return np.asarray(points) @ affine[:, :2].T + affine[:, 2]


def apply_affine_torch(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Apply affines (..., 2, 3) to points (..., N, 2); differentiable."""
    return torch.einsum("...ij,...nj->...ni", affine[..., :2], points) + affine[..., None, :, 2]


def warp_image(image: np.ndarray, affine: np.ndarray, dst_size: tuple[int, int]) -> np.ndarray:
    """Warp an HxWxC uint8 image with a 2x3 affine into dst_size = (w, h) (cv2, bilinear, black border)."""
    return cv2.warpAffine(image, affine, dst_size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
