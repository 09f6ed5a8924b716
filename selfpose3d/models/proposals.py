"""Root proposals from a root volume: 3D max-pool NMS, top-K, voxel index -> mm (VoxelPose)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def nms_volume(volume: Tensor, kernel: int = 3) -> Tensor:
    """Keep local maxima: volume (B, X, Y, Z) -> same shape, non-maxima of a kernel^3 window set to 0."""
    lo, hi = (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2
    padded = F.pad(volume.unsqueeze(1), (lo, hi, lo, hi, lo, hi), value=float("-inf"))
    pooled = F.max_pool3d(padded, kernel, stride=1).squeeze(1)
    return volume * (pooled == volume)


def topk_peaks(volume: Tensor, k: int, kernel: int = 3) -> tuple[Tensor, Tensor]:
    """NMS + top-K: volume (B, X, Y, Z) -> scores (B, K) descending and voxel indices (B, K, 3) long."""
    B, X, Y, Z = volume.shape
    k = min(k, X * Y * Z)
    scores, flat = nms_volume(volume, kernel).reshape(B, -1).topk(k, dim=1)
    index = torch.stack([flat // (Y * Z), (flat // Z) % Y, flat % Z], dim=-1)
    return scores, index


def index_to_mm(index: Tensor, center_mm: Sequence[float], size_mm: Sequence[float],
                voxels: Sequence[int]) -> Tensor:
    """Voxel indices (..., 3) -> voxel centres (..., 3) mm, the inverse of `projection.grid_points`."""
    center = index.new_tensor(center_mm, dtype=torch.float32)
    size = index.new_tensor(size_mm, dtype=torch.float32)
    steps = (index.new_tensor(voxels, dtype=torch.float32) - 1).clamp(min=1)
    single = index.new_tensor(voxels) == 1
    offset = torch.where(single, torch.zeros_like(size), index.float() / steps * size - size / 2)
    return center + offset


def get_proposals(volume: Tensor, center_mm: Sequence[float], size_mm: Sequence[float], k: int,
                  kernel: int = 3, threshold: float = 0.3) -> Tensor:
    """Root volume (B, X, Y, Z) over the space (center_mm, size_mm) -> proposals (B, K, 5) =
    [x, y, z (mm), score, valid (1.0 if score > threshold else 0.0)], sorted by score (no gradient).

    If the grid has fewer than K voxels the remaining rows are zeros (invalid).
    """
    volume = volume.detach()
    B = volume.shape[0]
    scores, index = topk_peaks(volume, k, kernel)
    xyz = index_to_mm(index, center_mm, size_mm, volume.shape[1:])
    out = volume.new_zeros(B, k, 5)
    n = scores.shape[1]
    out[:, :n, :3] = xyz
    out[:, :n, 3] = scores
    out[:, :n, 4] = (scores > threshold).to(volume.dtype)
    return out
