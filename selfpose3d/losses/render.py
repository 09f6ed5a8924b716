"""Differentiable Gaussian heatmap rendering and the projections that feed it.

Pixel conventions (docs/architecture.md): "original" pixels of the camera, network input pixels
(`batch["affine"]` maps original -> input) and heatmap pixels = input pixels * heatmap_size / image_size.
Heatmap pixel (x, y) is the centre of column x, row y, so a joint at heatmap pixel (3.0, 5.0) peaks at
``heatmap[..., 5, 3]``.
"""

from __future__ import annotations

import torch

from selfpose3d.geometry.cameras import project_points_torch
from selfpose3d.geometry.transforms import apply_affine_torch

Size = tuple[int, int]  # (width, height) in pixels


def render_heatmaps(points_px: torch.Tensor, weights: torch.Tensor, size: Size,
                    sigma_px: float) -> torch.Tensor:
    """Render one Gaussian per point, summed over people and clipped to [0, 1].

    points_px: (..., P, J, 2) heatmap pixels (x, y); weights: (..., P, J) in [0, 1] (0 = not drawn);
    size: (w, h) of the heatmap; sigma_px: Gaussian std in heatmap pixels.
    Returns (..., J, h, w), differentiable w.r.t. ``points_px`` (and ``weights``). The Gaussian is
    separable, so no (..., P, J, h, w) intermediate is built.
    """
    w, h = int(size[0]), int(size[1])
    xs = torch.arange(w, dtype=points_px.dtype, device=points_px.device)
    ys = torch.arange(h, dtype=points_px.dtype, device=points_px.device)
    denom = 2.0 * float(sigma_px) ** 2
    gx = torch.exp(-((xs - points_px[..., 0:1]) ** 2) / denom)  # (..., P, J, w)
    gy = torch.exp(-((ys - points_px[..., 1:2]) ** 2) / denom)  # (..., P, J, h)
    gy = gy * weights.to(points_px.dtype)[..., None]
    heatmaps = torch.einsum("...pjy,...pjx->...jyx", gy, gx)
    return heatmaps.clamp(0.0, 1.0)


def input_to_heatmap_scale(image_size: Size, heatmap_size: Size) -> tuple[float, float]:
    """Factors (sx, sy) mapping network input pixels to heatmap pixels."""
    return heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]


def original_to_heatmap_px(points_px: torch.Tensor, affine: torch.Tensor, image_size: Size,
                           heatmap_size: Size) -> torch.Tensor:
    """Original image pixels (B, V, N, 2) -> heatmap pixels (B, V, N, 2) via affines (B, V, 2, 3)."""
    sx, sy = input_to_heatmap_scale(image_size, heatmap_size)
    scale = torch.tensor([sx, sy], dtype=points_px.dtype, device=points_px.device)
    return apply_affine_torch(points_px, affine.to(points_px)) * scale


def camera_depth_torch(points_mm: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Depth in mm of points (B, V, N, 3) in cameras R (B, V, 3, 3), t (B, V, 3) -> (B, V, N)."""
    return torch.einsum("...j,...nj->...n", R[..., 2, :], points_mm) + t[..., None, 2]


def in_heatmap(points_px: torch.Tensor, heatmap_size: Size) -> torch.Tensor:
    """Bool mask (...) of heatmap-pixel points (..., 2) inside [0, w-1] x [0, h-1]."""
    x, y = points_px[..., 0], points_px[..., 1]
    return (x >= 0) & (x <= heatmap_size[0] - 1) & (y >= 0) & (y <= heatmap_size[1] - 1)


def _project(points_mm: torch.Tensor, batch: dict, image_size: Size,
             heatmap_size: Size) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels (B, V, K, J, 2) heatmap px, in-front-of-camera mask (B, V, K, J)) of points (B, K, J, 3)."""
    b, k, j, _ = points_mm.shape
    cams = {key: batch[key].to(points_mm.device, points_mm.dtype) for key in ("K", "R", "t", "dist")}
    v = cams["K"].shape[1]
    flat = points_mm.reshape(b, 1, k * j, 3).expand(b, v, k * j, 3)
    original = project_points_torch(flat, cams["K"], cams["R"], cams["t"], cams["dist"])
    pixels = original_to_heatmap_px(original, batch["affine"].to(points_mm.device), image_size, heatmap_size)
    front = camera_depth_torch(flat, cams["R"], cams["t"]) > 1.0
    return pixels.reshape(b, v, k, j, 2), front.reshape(b, v, k, j)


def project_to_heatmap(points_mm: torch.Tensor, batch: dict, image_size: Size,
                       heatmap_size: Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Project 3D points into every view's heatmap pixels (with distortion and the view's affine).

    points_mm: (B, K, J, 3) model-frame mm; batch: K, R (B, V, 3, 3), t (B, V, 3), dist (B, V, 5),
    affine (B, V, 2, 3). Returns (pixels (B, V, K, J, 2) heatmap px, mask (B, V, K, J) bool = in front
    of the camera and inside the heatmap). Differentiable w.r.t. ``points_mm``.
    """
    pixels, front = _project(points_mm, batch, image_size, heatmap_size)
    return pixels, front & in_heatmap(pixels, heatmap_size)


def pseudo_in_heatmap_px(batch: dict, image_size: Size, heatmap_size: Size) -> torch.Tensor:
    """Pseudo 2D poses in heatmap pixels: (B, V, P, J, 3) [x, y, conf].

    batch["pseudo_2d"] is (B, V, P, J, 3) in original pixels; persons at index >= pseudo_count get
    conf 0. Confidences are kept as given (soft) or 0/1 (hard).
    """
    pseudo = batch["pseudo_2d"]
    b, v, p, j, _ = pseudo.shape
    pixels = original_to_heatmap_px(pseudo[..., :2].reshape(b, v, p * j, 2), batch["affine"],
                                    image_size, heatmap_size).reshape(b, v, p, j, 2)
    count = batch["pseudo_count"].to(pseudo.device)
    present = torch.arange(p, device=pseudo.device) < count[..., None]  # (B, V, P)
    conf = pseudo[..., 2] * present[..., None].to(pseudo.dtype)
    return torch.cat([pixels, conf[..., None]], dim=-1)


def pseudo_heatmaps(batch: dict, image_size: Size, heatmap_size: Size, sigma: float) -> torch.Tensor:
    """Target heatmaps (B, V, J, h, w) from batch["pseudo_2d"], each Gaussian weighted by its conf.

    sigma: Gaussian std in heatmap pixels (``dataset.heatmap_sigma_px``).
    """
    pseudo = pseudo_in_heatmap_px(batch, image_size, heatmap_size)
    weights = pseudo[..., 2].clamp(0.0, 1.0)
    return render_heatmaps(pseudo[..., :2], weights, heatmap_size, sigma)


def render_poses(points_mm: torch.Tensor, person_weights: torch.Tensor, batch: dict, image_size: Size,
                 heatmap_size: Size, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Project 3D poses into every view and render their heatmaps.

    points_mm: (B, K, J, 3) mm; person_weights: (B, K) or (B, K, J) in [0, 1] (e.g. valid proposals).
    Returns (heatmaps (B, V, J, h, w), pixels (B, V, K, J, 2) heatmap px). Points behind a camera are
    not drawn; points outside the heatmap contribute only their tails. Points with weight 0 are
    replaced by the origin before projection (no gradient, no NaN leakage).
    """
    weights = person_weights.to(points_mm.device, points_mm.dtype)
    if weights.dim() == 2:
        weights = weights[..., None].expand(points_mm.shape[:3])
    # undrawn points (e.g. invalid proposals holding garbage) must not leak NaN/inf through 0 * value
    points_mm = torch.where((weights > 0)[..., None], points_mm, torch.zeros_like(points_mm))
    pixels, front = _project(points_mm, batch, image_size, heatmap_size)
    weights = weights[:, None] * front.to(points_mm.dtype)
    return render_heatmaps(pixels, weights, heatmap_size, sigma), pixels
