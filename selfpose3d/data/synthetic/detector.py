"""A simulated off-the-shelf 2D pose detector writing COCO-17 keypoints with confidences.

Per camera image it sees every rendered person (including one standing outside the dome, which real
detectors happily detect) and makes the usual mistakes: Gaussian pixel jitter (truncated at 3 sigma),
lower confidence for occluded joints, missed joints (low confidence, wrong place), left/right limb swaps,
out-of-image joints clipped to the border with near-zero confidence, and false-positive persons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfpose3d.config.schema import SynthConfig
from selfpose3d.data.joints import panoptic_to_coco
from selfpose3d.data.synthetic.render import Projection, project_person
from selfpose3d.data.synthetic.skeleton import random_standing_pose
from selfpose3d.data.synthetic.world import SPACE_CENTRE
from selfpose3d.geometry.cameras import Camera

DETECTOR_NAME = "sp3d-simulated-detector"
MIN_VISIBLE_JOINTS = 4
MIN_PERSON_PX = 8.0
CLEAN_CONF = (0.7, 0.98)  # confidence of a clean joint; anything lower was occluded, missed or off-image
OCCLUDED_FACTOR = (0.25, 0.6)
OCCLUDED_JITTER = 2.0  # occluded joints jitter twice as much
JITTER_TRUNCATION = 3.0  # jitter is clipped at this many sigma (per coordinate)
SWAP_GROUPS = [((3, 4, 5), (9, 10, 11)), ((6, 7, 8), (12, 13, 14))]  # arms, legs
COCO_FACE_FROM_JOINTS19 = {1: 15, 2: 17, 3: 16, 4: 18}  # COCO l_eye, r_eye, l_ear, r_ear <- joints19


@dataclass
class DetectionCounts:
    """Per-sequence detector bookkeeping written to the manifest."""

    detections: int = 0
    false_positives: int = 0
    outside_dome: int = 0


def _inside(pixels: np.ndarray, drawable: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    w, h = resolution
    return drawable & (pixels[:, 0] >= 0) & (pixels[:, 0] < w) & (pixels[:, 1] >= 0) & (pixels[:, 1] < h)


def _occluded(ids: np.ndarray, pixels: np.ndarray, inside: np.ndarray, index: int) -> np.ndarray:
    """(J,) bool: the id map shows another (nearer) person on top of the joint's pixel."""
    h, w = ids.shape
    cols = np.clip(np.round(pixels[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.round(pixels[:, 1]).astype(int), 0, h - 1)
    top = ids[rows, cols]
    return inside & (top != 0) & (top != index + 1)


def _corrupt(rng: np.random.Generator, synth: SynthConfig, pix: np.ndarray, inside: np.ndarray,
             occluded: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Noisy positions (J, 2) px and confidences (J,) for true pixels ``pix`` (J, 2)."""
    count = len(pix)
    conf = rng.uniform(*CLEAN_CONF, count)
    conf = np.where(occluded, conf * rng.uniform(*OCCLUDED_FACTOR, count), conf)
    sigma = synth.detector_jitter_px * np.where(occluded, OCCLUDED_JITTER, 1.0)[:, None]
    noisy = pix + np.clip(rng.normal(0, 1, (count, 2)), -JITTER_TRUNCATION, JITTER_TRUNCATION) * sigma
    missed = rng.uniform(size=count) < synth.detector_miss_prob
    noisy = np.where(missed[:, None], pix + rng.normal(0, 0.08 * size, (count, 2)), noisy)
    conf = np.where(missed, rng.uniform(0.0, 0.25, count), conf)
    conf = np.where(inside, conf, rng.uniform(0.0, 0.08, count))
    return noisy, conf


def _swap_limbs(rng: np.random.Generator, prob: float, keypoints: np.ndarray) -> np.ndarray:
    """Swap whole left/right arms or legs of Panoptic-15 keypoints (15, 3) with probability ``prob`` each."""
    out = keypoints.copy()
    for left, right in SWAP_GROUPS:
        if rng.uniform() < prob:
            out[list(left)], out[list(right)] = keypoints[list(right)], keypoints[list(left)]
    return out


def _to_record(coco: np.ndarray, resolution: tuple[int, int]) -> dict:
    """COCO-17 (17, 3) -> pseudo-label record with pixels clipped to the image, rounded for JSON."""
    w, h = resolution
    coco = coco.copy()
    coco[:, 0] = np.clip(coco[:, 0], 0, w - 1)
    coco[:, 1] = np.clip(coco[:, 1], 0, h - 1)
    rows = [[round(float(x), 2), round(float(y), 2), round(float(c), 3)] for x, y, c in coco]
    return {"keypoints": rows, "score": round(float(np.mean(coco[:, 2])), 3)}


def _detect_person(rng: np.random.Generator, synth: SynthConfig, proj: Projection, ids: np.ndarray,
                   index: int, resolution: tuple[int, int]) -> dict | None:
    """One person's detection record, or None if too little of it is in the image."""
    inside19 = _inside(proj.pixels, proj.drawable, resolution)
    inside = inside19[:15]
    if inside.sum() < MIN_VISIBLE_JOINTS:
        return None
    seen = proj.pixels[:15][inside]
    size = float(np.max(seen.max(0) - seen.min(0)))
    if size < MIN_PERSON_PX:
        return None
    occluded = _occluded(ids, proj.pixels, inside19, index)
    noisy, conf = _corrupt(rng, synth, proj.pixels, inside19, occluded, size)
    pan = _swap_limbs(rng, synth.detector_swap_prob, np.concatenate([noisy[:15], conf[:15, None]], 1))
    coco = panoptic_to_coco(pan)
    for coco_idx, j19 in COCO_FACE_FROM_JOINTS19.items():
        coco[coco_idx, :2] = noisy[j19]
        coco[coco_idx, 2] = min(coco[coco_idx, 2], conf[j19])
    return _to_record(coco, resolution)


def _false_positive(rng: np.random.Generator, synth: SynthConfig, camera: Camera) -> dict | None:
    """A hallucinated low-confidence person: a random skeleton seen by this camera only, heavily jittered."""
    proj = project_person(random_standing_pose(rng, SPACE_CENTRE, 3500.0), camera)
    inside = _inside(proj.pixels, proj.drawable, camera.resolution)
    if inside[:15].sum() < MIN_VISIBLE_JOINTS:
        return None
    noisy = proj.pixels + rng.normal(0, 3 * synth.detector_jitter_px + 2.0, proj.pixels.shape)
    conf = np.where(inside, rng.uniform(0.05, 0.5, len(inside)), rng.uniform(0.0, 0.05, len(inside)))
    coco = panoptic_to_coco(np.concatenate([noisy[:15], conf[:15, None]], 1))
    return _to_record(coco, camera.resolution)


def detect_view(rng: np.random.Generator, synth: SynthConfig, camera: Camera, people: list[Projection],
                ids: np.ndarray, outside_index: int | None, counts: DetectionCounts) -> list[dict]:
    """Detections for one image, sorted by score (highest first).

    people: projections (19 joints) of everyone rendered, in render order; ids: (H, W) id map from
    `render_view`; outside_index: position of the outside-dome person in ``people`` or None.
    Updates ``counts`` in place. Keypoints are COCO-17 [x, y, conf] in original image pixels.
    """
    records = []
    for index, proj in enumerate(people):
        record = _detect_person(rng, synth, proj, ids, index, camera.resolution)
        if record is not None:
            records.append(record)
            counts.outside_dome += int(index == outside_index)
    for _ in range(int(rng.poisson(synth.detector_false_positive_rate))):
        record = _false_positive(rng, synth, camera)
        if record is not None:
            records.append(record)
            counts.false_positives += 1
    counts.detections += len(records)
    return sorted(records, key=lambda r: -r["score"])
