"""Multi-view augmentation: per-copy random affines (t1, t2) and the identity letterbox (t3), image
warping + ImageNet normalisation, and masking of pseudo joints that leave the network input."""

from __future__ import annotations

import numpy as np

from selfpose3d.config.schema import LossConfig
from selfpose3d.geometry.transforms import apply_affine, resize_affine, warp_image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
COPIES = ("t1", "t2", "t3")


def letterbox_affines(resolutions: list[tuple[int, int]], image_size: tuple[int, int]) -> np.ndarray:
    """Identity (letterbox-only) affines for V views -> (V, 2, 3): original px -> input px."""
    return np.stack([resize_affine(res, image_size) for res in resolutions])


def random_affines(rng: np.random.Generator, resolutions: list[tuple[int, int]], image_size: tuple[int, int],
                   loss: LossConfig, per_view: bool) -> np.ndarray:
    """Random affines for V views -> (V, 2, 3).

    Rotation uniform in +-``loss.aug_rotation_deg`` (degrees), zoom uniform in ``loss.aug_scale``, both
    about the centre of the letterboxed input. ``per_view=False`` draws one (rotation, scale) for all views
    (as SelfPose3d's JointsDatasetSSV does per copy); True draws one per view.
    """
    draws = len(resolutions) if per_view else 1
    rotations = rng.uniform(-loss.aug_rotation_deg, loss.aug_rotation_deg, size=draws)
    scales = rng.uniform(loss.aug_scale[0], loss.aug_scale[1], size=draws)
    return np.stack([
        resize_affine(res, image_size, float(rotations[i % draws]), float(scales[i % draws]))
        for i, res in enumerate(resolutions)
    ])


def copy_affines(rng: np.random.Generator, resolutions: list[tuple[int, int]], image_size: tuple[int, int],
                 loss: LossConfig, per_view: bool) -> dict[str, np.ndarray]:
    """Affines of the three training copies: ``{"t1", "t2"}`` random, ``"t3"`` letterbox; each (V, 2, 3)."""
    return {
        "t1": random_affines(rng, resolutions, image_size, loss, per_view),
        "t2": random_affines(rng, resolutions, image_size, loss, per_view),
        "t3": letterbox_affines(resolutions, image_size),
    }


def to_network_input(image_rgb: np.ndarray, affine: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Warp an (H0, W0, 3) uint8 RGB image with a 2x3 affine and normalise -> (3, H, W) float32 (ImageNet mean/std)."""
    warped = warp_image(image_rgb, affine, image_size).astype(np.float32) / 255.0
    return np.ascontiguousarray(((warped - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))


def denormalise(image: np.ndarray) -> np.ndarray:
    """Inverse of the normalisation: (3, H, W) float32 -> (H, W, 3) uint8 RGB (for visualisation / tests)."""
    rgb = image.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def mask_outside(pseudo: np.ndarray, affine: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Zero the confidence of pseudo joints (P, 15, 3) [original px + conf] that the 2x3 ``affine`` maps
    outside the network input of ``image_size`` = (w, h). Positions are kept in original pixels."""
    out = np.array(pseudo, copy=True)
    mapped = apply_affine(out[..., :2], affine)
    inside = (mapped[..., 0] >= 0) & (mapped[..., 0] < image_size[0]) & (mapped[..., 1] >= 0) & (
        mapped[..., 1] < image_size[1])
    out[..., 2] = np.where(inside, out[..., 2], 0.0)
    return out
