"""Render synthetic camera images: a textured static background with a floor grid, people drawn as
thick coloured limbs / torso polygons / heads, depth-ordered so nearer people occlude farther ones.

A head is a hair-coloured disc with a skin-coloured face disc on its front, drawn only when the face is
turned towards the camera. Without it a person seen from the back is the mirror image of one seen from the
front, and no single view can tell their left limbs from their right ones (docs/results.md).

Besides the BGR image the renderer returns a person-id map (0 = background, p + 1 = person p on top),
which the simulated detector uses to lower confidences of occluded joints.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from selfpose3d.geometry.cameras import Camera, camera_depth, project_points

SHIFT = 4  # cv2 sub-pixel bits
MIN_DEPTH_MM = 100.0
MAX_NORMALISED_RADIUS2 = 1.5  # beyond this the distortion polynomial is meaningless: not drawn
# (joint a, joint b, width mm, part) ; part 0 = shirt, 1 = skin, 2 = trousers, 3 = hair
LIMB_PARTS = [(3, 4, 95.0, 0), (4, 5, 75.0, 1), (9, 10, 95.0, 0), (10, 11, 75.0, 1), (6, 7, 150.0, 2),
              (7, 8, 115.0, 2), (12, 13, 150.0, 2), (13, 14, 115.0, 2), (0, 1, 90.0, 1)]
HEAD_RADIUS_MM = 105.0
FACE_RADIUS_MM = 75.0
EYES, EARS = (15, 17), (16, 18)  # Panoptic joints19: l/r eye, l/r ear
NOISE_BANK = 4


@dataclass
class Projection:
    """One person seen by one camera: pixels (J, 2), depth (J,) mm, drawable (J,) bool."""

    pixels: np.ndarray
    depth: np.ndarray
    drawable: np.ndarray


def project_person(joints: np.ndarray, camera: Camera) -> Projection:
    """Project world joints (J, 3) mm; a joint is drawable if in front of the camera and not so far
    off-axis that the distortion model folds over."""
    depth = camera_depth(joints, camera)
    cam = joints @ camera.R.T + camera.t
    r2 = np.sum((cam[:, :2] / np.maximum(depth[:, None], 1e-6)) ** 2, axis=1)
    drawable = (depth > MIN_DEPTH_MM) & (r2 < MAX_NORMALISED_RADIUS2)
    return Projection(pixels=project_points(joints, camera), depth=depth, drawable=drawable)


def person_colours(rng: np.random.Generator) -> np.ndarray:
    """(4, 3) uint8 BGR colours for shirt, skin, trousers and hair."""
    shirt = rng.integers(40, 256, 3)
    skin = np.array([rng.uniform(60, 140), rng.uniform(110, 180), rng.uniform(150, 230)])
    trousers = rng.integers(20, 160, 3)
    hair = rng.uniform(10, 80) * rng.uniform(0.6, 1.0, 3)
    return np.stack([shirt, skin, trousers, hair]).astype(np.uint8)


def _floor_grid(image: np.ndarray, camera: Camera) -> None:
    """Draw 1 m floor grid lines (z = 0) over +-4 m around the space centre, in place."""
    ticks = np.linspace(-4000.0, 4000.0, 9)
    samples = np.linspace(-4000.0, 4000.0, 41)
    for tick in ticks:
        for line in (np.stack([np.full_like(samples, tick), samples - 500.0, 0 * samples], 1),
                     np.stack([samples, np.full_like(samples, tick - 500.0), 0 * samples], 1)):
            proj = project_person(line, camera)
            pts = proj.pixels[proj.drawable]
            if len(pts) >= 2:
                cv2.polylines(image, [np.round(pts * (1 << SHIFT)).astype(np.int32)], False, (150, 150, 140),
                              1, cv2.LINE_AA, SHIFT)


def make_background(rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """Static textured background (H, W, 3) uint8 for one camera: blotchy tinted field, floor grid, grain."""
    w, h = camera.resolution
    tint = rng.uniform(70, 170, 3)
    coarse = (tint + rng.uniform(-45, 45, (6, 10, 1)) + rng.uniform(-15, 15, (6, 10, 3))).astype(np.float32)
    image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    _floor_grid(image, camera)
    return image


def make_noise_bank(rng: np.random.Generator, resolution: tuple[int, int]) -> np.ndarray:
    """(NOISE_BANK, H, W, 3) int16 per-frame sensor noise (std 3 grey levels), reused cyclically."""
    w, h = resolution
    return np.round(rng.normal(0, 3, (NOISE_BANK, h, w, 3))).astype(np.int16)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << SHIFT)).astype(np.int32)


def _thickness(camera: Camera, width_mm: float, depth: float) -> int:
    return max(1, int(round(camera.K[0, 0] * width_mm / max(depth, MIN_DEPTH_MM))))


def _person_elements(proj: Projection, camera: Camera) -> list[tuple[float, str, tuple]]:
    """Drawable parts of one person as (depth, kind, args), to be drawn far to near."""
    items: list[tuple[float, str, tuple]] = []
    torso = [3, 9, 12, 6]
    if proj.drawable[torso].all():
        items.append((float(proj.depth[torso].mean()), "poly", (proj.pixels[torso], 0)))
    for a, b, width, part in LIMB_PARTS:
        if proj.drawable[a] and proj.drawable[b]:
            depth = float((proj.depth[a] + proj.depth[b]) / 2)
            items.append((depth, "line", (proj.pixels[a], proj.pixels[b], _thickness(camera, width, depth), part)))
    items += _head_elements(proj, camera)
    return sorted(items, key=lambda item: -item[0])


def _head_elements(proj: Projection, camera: Camera) -> list[tuple[float, str, tuple]]:
    """The head as (depth, kind, args) items: a hair disc around the ears' midpoint and, if the face is
    turned towards the camera (the eyes nearer than the ears), a smaller face disc at the eyes' midpoint.
    Falls back to one skin disc at the nose for 15-joint skeletons (no eyes / ears)."""
    if len(proj.depth) <= max(EARS):
        if not proj.drawable[1]:
            return []
        radius = _thickness(camera, HEAD_RADIUS_MM, float(proj.depth[1]))
        return [(float(proj.depth[1]) - 1.0, "head", (proj.pixels[1], radius, 1))]
    ears, eyes = list(EARS), list(EYES)
    if not proj.drawable[ears + eyes].all():
        return []
    centre_depth, face_depth = float(proj.depth[ears].mean()), float(proj.depth[eyes].mean())
    hair = _thickness(camera, HEAD_RADIUS_MM, centre_depth)
    items = [(centre_depth - 1.0, "head", (proj.pixels[ears].mean(axis=0), hair, 3))]
    if face_depth < centre_depth:  # facing the camera: the face is drawn over the hair
        face = _thickness(camera, FACE_RADIUS_MM, face_depth)
        items.append((centre_depth - 2.0, "head", (proj.pixels[eyes].mean(axis=0), face, 1)))
    return items


def _draw(target: np.ndarray, kind: str, args: tuple, colour: tuple, line_type: int) -> None:
    if kind == "poly":
        cv2.fillConvexPoly(target, _fixed(args[0]), colour, line_type, SHIFT)
    elif kind == "line":
        cv2.line(target, tuple(_fixed(args[0])), tuple(_fixed(args[1])), colour, args[2], line_type, SHIFT)
    else:
        cv2.circle(target, tuple(_fixed(args[0])), args[1] << SHIFT, colour, -1, line_type, SHIFT)


def render_view(background: np.ndarray, noise: np.ndarray, camera: Camera, people: list[Projection],
                colours: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``people`` (projections into ``camera``) over ``background`` (H, W, 3) uint8, person p in the
    (4, 3) uint8 `person_colours` ``colours[p]``.

    People are drawn far to near by root depth; returns the BGR image (H, W, 3) uint8 (with ``noise``
    (H, W, 3) int16 added) and the id map (H, W) uint8 (p + 1 where person p is visible on top).
    """
    image = background.copy()
    ids = np.zeros(image.shape[:2], np.uint8)
    order = sorted(range(len(people)), key=lambda p: -float(people[p].depth[2]))
    for p in order:
        for _depth, kind, args in _person_elements(people[p], camera):
            part = args[-1]
            _draw(image, kind, args[:-1], tuple(int(c) for c in colours[p][part]), cv2.LINE_AA)
            _draw(ids, kind, args[:-1], (p + 1,), cv2.LINE_8)  # no anti-aliasing: ids must stay exact
    noisy = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return noisy, ids
