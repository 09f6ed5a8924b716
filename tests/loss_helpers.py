"""Shared builders for the loss tests (test_losses.py, test_pose_losses.py): ring cameras, batches with
pseudo labels, a skeleton and a tiny config."""

from __future__ import annotations

import numpy as np
import torch

from selfpose3d.config.schema import Config, SpaceConfig
from selfpose3d.geometry.cameras import Camera, project_points, stack_cameras
from selfpose3d.geometry.transforms import resize_affine

RES = (1920, 1080)


def num(value) -> float:
    """Python float of a (possibly graph-attached) scalar tensor or number."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)

DIST = np.array([-0.08, 0.02, 0.001, -0.001, 0.0])


def look_at(name: str, position: np.ndarray, target=(0.0, 0.0, 1000.0), focal: float = 1400.0,
            dist: np.ndarray | None = None) -> Camera:
    """OpenCV camera at ``position`` (mm) looking at ``target``, world z up."""
    forward = np.asarray(target, float) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    K = np.array([[focal, 0, RES[0] / 2], [0, focal, RES[1] / 2], [0, 0, 1]])
    return Camera(name=name, K=K, R=R, t=-R @ position, dist=np.zeros(5) if dist is None else dist,
                  resolution=RES)


def ring_cameras(n: int, radius: float = 4500.0, height: float = 2200.0, dist: np.ndarray | None = None):
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.3
    return [look_at(f"c{i}", np.array([radius * np.cos(a), radius * np.sin(a), height]), dist=dist)
            for i, a in enumerate(angles)]


def make_batch(cameras, image_size, rotations=None, scales=None, dtype=torch.float32) -> dict:
    """A B=1 batch dict (cameras + affine) with optional per-view augmentation."""
    v = len(cameras)
    rotations = rotations or [0.0] * v
    scales = scales or [1.0] * v
    cams = stack_cameras(cameras, dtype=dtype)
    affine = np.stack([resize_affine(c.resolution, image_size, r, s)
                       for c, r, s in zip(cameras, rotations, scales, strict=True)])
    batch = {k: cams[k][None] for k in ("K", "R", "t", "dist")}
    batch["affine"] = torch.tensor(affine, dtype=dtype)[None]
    return batch


def add_pseudo(batch: dict, cameras, poses_mm: np.ndarray, conf: np.ndarray | None = None) -> dict:
    """Exact pseudo labels: poses (P, J, 3) projected to original pixels with conf (P, J) (default 1)."""
    pix = np.stack([project_points(poses_mm, c) for c in cameras])  # (V, P, J, 2)
    conf = np.ones(poses_mm.shape[:2]) if conf is None else conf
    conf = np.broadcast_to(conf, pix.shape[:3])
    pseudo = np.concatenate([pix, conf[..., None]], axis=-1)
    batch["pseudo_2d"] = torch.tensor(pseudo, dtype=torch.float32)[None]
    batch["pseudo_count"] = torch.full((1, len(cameras)), poses_mm.shape[0], dtype=torch.long)
    return batch


def skeleton(center_xy=(0.0, 0.0), yaw: float = 0.0) -> np.ndarray:
    """A standing Panoptic-15 skeleton (15, 3) mm at ``center_xy`` facing ``yaw`` radians."""
    local = np.array([
        [0, 0, 1500], [0, 60, 1650], [0, 0, 950], [-200, 0, 1480], [-260, 20, 1200], [-290, 60, 950],
        [-110, 0, 950], [-120, 30, 500], [-120, 0, 80], [200, 0, 1480], [260, 20, 1200], [290, 60, 950],
        [110, 0, 950], [120, 30, 500], [120, 0, 80]], dtype=float)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ rot.T + np.array([center_xy[0], center_xy[1], 0.0])


def tiny_cfg() -> Config:
    cfg = Config()
    cfg.dataset.image_size = (192, 128)
    cfg.dataset.heatmap_size = (48, 32)
    cfg.dataset.heatmap_sigma_px = 2.0
    cfg.model.root_space = SpaceConfig(voxels=(16, 16, 4))
    return cfg
