"""Camera loaders and projection: numpy vs cv2.projectPoints, torch vs numpy, frame conversions, gradients."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from selfpose3d.geometry.cameras import (
    Camera,
    camera_from_panoptic,
    camera_from_shelf_campus,
    camera_to_panoptic,
    model_points_to_panoptic,
    panoptic_points_to_model,
    project_points,
    project_points_torch,
    stack_cameras,
)
from selfpose3d.geometry.transforms import apply_affine, resize_affine


def _random_camera(seed: int) -> Camera:
    rng = np.random.default_rng(seed)
    R, _ = cv2.Rodrigues(rng.normal(size=3) * 0.3)
    return Camera("c", K=[[1400, 0, 950], [0, 1390, 545], [0, 0, 1]], R=R,
                  t=[rng.normal() * 100, rng.normal() * 100, 5000], dist=rng.normal(size=5) * [0.1, 0.02, 1e-3, 1e-3, 0.01])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_projection_matches_cv2(seed: int) -> None:
    cam = _random_camera(seed)
    pts = np.random.default_rng(seed).normal(size=(100, 3)) * 700
    ours = project_points(pts, cam)
    ref = cv2.projectPoints(pts, cv2.Rodrigues(cam.R)[0], cam.t, cam.K, cam.dist)[0][:, 0]
    assert np.abs(ours - ref).max() < 1e-8


def test_torch_projection_matches_numpy_batched_over_views() -> None:
    cams = [_random_camera(s) for s in range(3)]
    pts = np.random.default_rng(5).normal(size=(40, 3)) * 700
    t = {k: v.double() for k, v in stack_cameras(cams, dtype=torch.float64).items()}
    out = project_points_torch(torch.tensor(pts), t["K"], t["R"], t["t"], t["dist"])
    assert out.shape == (3, 40, 2)
    for v, cam in enumerate(cams):
        assert np.abs(out[v].numpy() - project_points(pts, cam)).max() < 1e-8


def test_torch_projection_gradcheck() -> None:
    cams = [_random_camera(s) for s in range(2)]
    t = stack_cameras(cams, dtype=torch.float64)
    pts = (torch.randn(2, 5, 3, dtype=torch.float64) * 500).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: project_points_torch(p, t["K"], t["R"], t["t"], t["dist"]), (pts,))


def test_panoptic_roundtrip_and_frame_conversion() -> None:
    cam = _random_camera(3)
    entry = camera_to_panoptic(cam, node=3)
    assert np.asarray(entry["t"]).shape == (3, 1)
    back = camera_from_panoptic(entry)
    pts_mm = np.random.default_rng(0).normal(size=(10, 3)) * 600
    assert np.allclose(back.project(pts_mm), cam.project(pts_mm))
    pts_cm = model_points_to_panoptic(pts_mm)
    assert np.allclose(panoptic_points_to_model(pts_cm), pts_mm)
    # Panoptic y points down: a point 170 cm above the floor has y = -170 and z' = +1700 mm.
    assert np.allclose(panoptic_points_to_model([0.0, -170.0, 0.0]), [0.0, 0.0, 1700.0])


def test_projection_in_panoptic_frame_equals_model_frame() -> None:
    """Projecting Panoptic-frame cm points with the raw Panoptic camera equals the converted pipeline."""
    cam = _random_camera(4)
    entry = camera_to_panoptic(cam)
    R_p, t_p = np.asarray(entry["R"]), np.asarray(entry["t"]).reshape(3)
    pts_cm = np.random.default_rng(1).normal(size=(10, 3)) * 60
    raw = cv2.projectPoints(pts_cm, cv2.Rodrigues(R_p)[0], t_p, cam.K, cam.dist)[0][:, 0]
    ours = camera_from_panoptic(entry).project(panoptic_points_to_model(pts_cm))
    assert np.abs(raw - ours).max() < 1e-6


def test_shelf_campus_camera() -> None:
    R, _ = cv2.Rodrigues(np.array([0.1, -0.2, 0.05]))
    centre = np.array([1000.0, -2000.0, 1500.0])
    entry = {"R": R.tolist(), "T": centre.reshape(3, 1).tolist(), "fx": 1000.0, "fy": 1001.0, "cx": 320.0,
             "cy": 240.0, "k": [[0.01], [0.001], [0.0]], "p": [[0.0], [0.0]]}
    cam = camera_from_shelf_campus("0", entry, (640, 480))
    assert np.allclose(cam.center, centre)
    assert np.allclose(cam.dist, [0.01, 0.001, 0.0, 0.0, 0.0])


def test_letterbox_affine() -> None:
    A = resize_affine((1920, 1080), (960, 512))
    corners = apply_affine(np.array([[0, 0], [1920, 1080]]), A)
    assert np.allclose(corners[:, 1], [0, 512])  # height fills (1080 * 512/1080); width letterboxed
    assert corners[0, 0] > 0 and corners[1, 0] < 960
    rot = resize_affine((1920, 1080), (960, 512), rotation_deg=90)
    centre = apply_affine(np.array([[960, 540]]), rot)
    assert np.allclose(centre, [[480, 256]])
