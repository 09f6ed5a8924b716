"""One pinhole camera type with Brown-Conrady distortion, loaders for Panoptic and Shelf/Campus
calibration, and projection in numpy and (differentiable, batched) torch.

Convention (model frame, millimetres): a world point X (3,) maps to camera coordinates
``x_cam = R @ X + t``; pixel = K @ distort(x_cam[:2] / x_cam[2]). Distortion coefficients follow
OpenCV's order ``(k1, k2, p1, p2, k3)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# Panoptic world (cm, y pointing down) -> model frame (mm, z up): X_model = X_pan @ PANOPTIC_TO_MODEL * 10,
# i.e. x' = x, y' = z, z' = -y (VoxelPose's convention; a proper rotation, det = +1).
PANOPTIC_TO_MODEL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
CM_TO_MM = 10.0


@dataclass
class Camera:
    """A calibrated camera in the model frame.

    K: (3, 3) intrinsics in pixels; R: (3, 3) world->camera rotation; t: (3,) translation in mm;
    dist: (5,) k1, k2, p1, p2, k3; resolution: (width, height) of the original image in pixels.
    """

    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    resolution: tuple[int, int] = (1920, 1080)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        dist = np.zeros(5)
        given = np.asarray(self.dist, dtype=np.float64).reshape(-1)[:5]
        dist[: len(given)] = given
        self.dist = dist
        self.resolution = (int(self.resolution[0]), int(self.resolution[1]))

    @property
    def center(self) -> np.ndarray:
        """Camera centre in the world frame, mm, shape (3,)."""
        return -self.R.T @ self.t

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (lists), inverse of `Camera.from_dict`."""
        return {"name": self.name, "K": self.K.tolist(), "R": self.R.tolist(), "t": self.t.tolist(),
                "dist": self.dist.tolist(), "resolution": list(self.resolution)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Camera:
        """Build from `to_dict` output."""
        return cls(name=data["name"], K=data["K"], R=data["R"], t=data["t"], dist=data["dist"],
                   resolution=tuple(data["resolution"]))

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) in mm -> distorted pixel coordinates (..., 2)."""
        return project_points(points, self)


def camera_from_panoptic(entry: dict[str, Any]) -> Camera:
    """Convert one Panoptic calibration entry (K, R, t in cm, distCoef, resolution) to the model frame."""
    R_pan = np.asarray(entry["R"], dtype=np.float64)
    t_pan = np.asarray(entry["t"], dtype=np.float64).reshape(3)
    return Camera(
        name=str(entry.get("name", "")),
        K=entry["K"],
        R=R_pan @ PANOPTIC_TO_MODEL,
        t=t_pan * CM_TO_MM,
        dist=entry.get("distCoef", np.zeros(5)),
        resolution=tuple(entry.get("resolution", (1920, 1080))),
    )


def camera_to_panoptic(camera: Camera, panel: int = 0, node: int = 0) -> dict[str, Any]:
    """Inverse of `camera_from_panoptic`: a Panoptic calibration entry (cm, Panoptic axes)."""
    return {
        "name": camera.name, "type": "hd", "resolution": list(camera.resolution), "panel": panel,
        "node": node, "K": camera.K.tolist(), "distCoef": camera.dist.tolist(),
        "R": (camera.R @ PANOPTIC_TO_MODEL.T).tolist(), "t": (camera.t / CM_TO_MM).reshape(3, 1).tolist(),
    }


def panoptic_points_to_model(points_cm: np.ndarray) -> np.ndarray:
    """Panoptic world points (..., 3) in cm -> model frame (..., 3) in mm."""
    return np.asarray(points_cm, dtype=np.float64) @ PANOPTIC_TO_MODEL * CM_TO_MM


def model_points_to_panoptic(points_mm: np.ndarray) -> np.ndarray:
    """Model frame points (..., 3) in mm -> Panoptic world (..., 3) in cm."""
    return np.asarray(points_mm, dtype=np.float64) @ PANOPTIC_TO_MODEL.T / CM_TO_MM


def camera_from_shelf_campus(name: str, entry: dict[str, Any], resolution: tuple[int, int]) -> Camera:
    """Shelf/Campus calibration entry {R, T (3x1 camera centre, mm), fx, fy, cx, cy, k (3), p (2)}."""
    R = np.asarray(entry["R"], dtype=np.float64).reshape(3, 3)
    centre = np.asarray(entry["T"], dtype=np.float64).reshape(3)
    K = np.array([[entry["fx"], 0.0, entry["cx"]], [0.0, entry["fy"], entry["cy"]], [0.0, 0.0, 1.0]])
    k = np.asarray(entry["k"], dtype=np.float64).reshape(-1)
    p = np.asarray(entry["p"], dtype=np.float64).reshape(-1)
    return Camera(name=name, K=K, R=R, t=-R @ centre, dist=np.array([k[0], k[1], p[0], p[1], k[2]]),
                  resolution=resolution)


def distort_normalized(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Apply (k1, k2, p1, p2, k3) to normalised image coordinates (..., 2)."""
    k1, k2, p1, p2, k3 = dist
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def project_points(points: np.ndarray, camera: Camera) -> np.ndarray:
    """World points (..., 3) mm -> pixels (..., 2), with distortion (matches cv2.projectPoints)."""
    pts = np.asarray(points, dtype=np.float64)
    cam = pts @ camera.R.T + camera.t
    depth = np.where(np.abs(cam[..., 2:3]) < 1e-6, 1e-6, cam[..., 2:3])
    xy = distort_normalized(cam[..., :2] / depth, camera.dist)
    return xy @ camera.K[:2, :2].T + camera.K[:2, 2]


def camera_depth(points: np.ndarray, camera: Camera) -> np.ndarray:
    """Depth (z in camera coordinates, mm) of world points (..., 3) -> (...)."""
    return (np.asarray(points, dtype=np.float64) @ camera.R.T + camera.t)[..., 2]


def stack_cameras(cameras: list[Camera], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Stack V cameras into tensors: K (V,3,3), R (V,3,3), t (V,3), dist (V,5), resolution (V,2)."""
    return {
        "K": torch.tensor(np.stack([c.K for c in cameras]), dtype=dtype),
        "R": torch.tensor(np.stack([c.R for c in cameras]), dtype=dtype),
        "t": torch.tensor(np.stack([c.t for c in cameras]), dtype=dtype),
        "dist": torch.tensor(np.stack([c.dist for c in cameras]), dtype=dtype),
        "resolution": torch.tensor([c.resolution for c in cameras], dtype=dtype),
    }


def project_points_torch(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                         dist: torch.Tensor) -> torch.Tensor:
    """Differentiable batched projection.

    points: (..., V, N, 3) world mm (or (N, 3), broadcast over views); K, R: (..., V, 3, 3);
    t: (..., V, 3); dist: (..., V, 5). Returns distorted pixels (..., V, N, 2).
    Points behind or on the camera plane get depth clamped to 1 mm, so gradients stay finite.
    """
    cam = torch.einsum("...ij,...nj->...ni", R, points) + t.unsqueeze(-2)
    depth = cam[..., 2:3].clamp(min=1.0)
    xy = cam[..., :2] / depth
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))
    x, y = xy[..., 0], xy[..., 1]
    r2 = (x * x + y * y).clamp(max=4.0)  # keep the polynomial sane far outside the image
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    u = K[..., 0, 0, None] * xd + K[..., 0, 1, None] * yd + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * yd + K[..., 1, 2, None]
    return torch.stack([u, v], dim=-1)
