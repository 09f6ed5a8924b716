"""The synthetic capture dome: HD cameras on a ring and people moving inside it over time.

Everything is in the model frame (mm, z up). The capture space is centred on the Panoptic space centre
(x = 0, y = -500 mm); people walk within `walk_radius` of it; an optional extra person stands outside the
dome (visible to some cameras, never in the ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfpose3d.config.schema import SynthConfig
from selfpose3d.data.synthetic.skeleton import BodyShape, PoseState, pose_joints19, random_body
from selfpose3d.geometry.cameras import Camera

SPACE_CENTRE = np.array([0.0, -500.0])  # floor position of the Panoptic space centre, mm
HD_NODES = [3, 6, 12, 13, 23, 1, 9, 16, 19, 28]  # the first `synth.cameras` are written
REFERENCE_WIDTH, REFERENCE_HEIGHT = 1920.0, 1080.0
MAX_WALK_RADIUS = 2500.0
MIN_SEPARATION = 750.0  # people steer apart when closer than this (mm)


@dataclass
class SequencePeople:
    """Joints over time: ``inside`` (P, T, 19, 3) mm, ``outside`` (T, 19, 3) mm or None."""

    inside: np.ndarray
    outside: np.ndarray | None

    @property
    def outside_position(self) -> list[float] | None:
        """Floor position (x, y) in mm of the outside-dome person, or None."""
        return None if self.outside is None else [round(float(v), 1) for v in self.outside[0, 2, :2]]


def walk_radius(synth: SynthConfig) -> float:
    """Radius (mm) around the space centre that people walk within: half the dome radius, at most 2.5 m."""
    return min(MAX_WALK_RADIUS, 0.5 * synth.dome_radius_mm)


def _look_at(centre: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """World->camera rotation (3, 3) for an OpenCV camera (x right, y down, z forward)."""
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    spin = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return spin @ np.stack([x, y, z])


def _intrinsics(rng: np.random.Generator, resolution: tuple[int, int]) -> np.ndarray:
    """K (3, 3): a 1920x1080 HD camera's focal length / principal point scaled to ``resolution``."""
    sx, sy = resolution[0] / REFERENCE_WIDTH, resolution[1] / REFERENCE_HEIGHT
    focal = rng.uniform(1350.0, 1500.0)
    cx = REFERENCE_WIDTH / 2 + rng.uniform(-15.0, 15.0)
    cy = REFERENCE_HEIGHT / 2 + rng.uniform(-12.0, 12.0)
    return np.array([[focal * sx, 0.0, cx * sx], [0.0, focal * sy * rng.uniform(0.998, 1.002), cy * sy],
                     [0.0, 0.0, 1.0]])


def camera_azimuths(count: int, offset: float) -> np.ndarray:
    """Evenly spaced azimuths (count,) in rad starting at ``offset``."""
    return offset + 2 * np.pi * np.arange(count) / count


def make_cameras(synth: SynthConfig, rng: np.random.Generator) -> tuple[list[Camera], list[int], np.ndarray]:
    """Ring of ``synth.cameras`` HD cameras looking at the space centre.

    Returns (cameras named ``00_XX``, their node ids, azimuths (V,) rad). Cameras sit at
    ``dome_radius_mm`` (+-2 %) from the centre, ``camera_height_mm`` (+-250 mm) high, with small
    distortion (k1 in [-0.06, -0.02]) and roll.
    """
    offset = rng.uniform(0, 2 * np.pi / synth.cameras)
    azimuths = camera_azimuths(synth.cameras, offset) + rng.uniform(-0.08, 0.08, synth.cameras)
    cameras = []
    for node, az in zip(HD_NODES[: synth.cameras], azimuths, strict=True):
        radius = synth.dome_radius_mm * rng.uniform(0.98, 1.02)
        centre = np.array([SPACE_CENTRE[0] + radius * np.cos(az), SPACE_CENTRE[1] + radius * np.sin(az),
                           synth.camera_height_mm + rng.uniform(-250.0, 250.0)])
        target = np.array([SPACE_CENTRE[0], SPACE_CENTRE[1], 1000.0]) + rng.uniform(-150.0, 150.0, 3)
        R = _look_at(centre, target, rng.uniform(-0.025, 0.025))
        dist = np.array([rng.uniform(-0.06, -0.02), rng.uniform(0.0, 0.03), rng.uniform(-5e-4, 5e-4),
                         rng.uniform(-5e-4, 5e-4), 0.0])
        cameras.append(Camera(name=f"00_{node:02d}", K=_intrinsics(rng, synth.image_resolution), R=R,
                              t=-R @ centre, dist=dist, resolution=synth.image_resolution))
    return cameras, list(HD_NODES[: synth.cameras]), azimuths


def _start_positions(rng: np.random.Generator, count: int, radius: float) -> np.ndarray:
    """(count, 2) floor positions within ``radius`` of the centre, kept apart by rejection sampling."""
    points: list[np.ndarray] = []
    for _ in range(count):
        for _attempt in range(50):
            r, a = 0.8 * radius * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            p = SPACE_CENTRE + r * np.array([np.cos(a), np.sin(a)])
            if all(np.linalg.norm(p - q) > 1.5 * MIN_SEPARATION for q in points):
                break
        points.append(p)
    return np.stack(points)


def _steer(pos: np.ndarray, heading: float, index: int, others: np.ndarray, radius: float) -> tuple[float, float]:
    """Heading correction (rad) away from the boundary and other people, and a speed factor in [0.3, 1]."""
    desired = np.zeros(2)
    offset = pos - SPACE_CENTRE
    if np.linalg.norm(offset) > 0.8 * radius:
        desired -= offset / np.linalg.norm(offset)
    slow = 1.0
    for j, q in enumerate(others):
        gap = np.linalg.norm(pos - q)
        if j != index and gap < MIN_SEPARATION * 1.3:
            desired += (pos - q) / max(gap, 1.0)
            slow = 0.3
    if not desired.any():
        return 0.0, slow
    turn = np.angle(np.exp(1j * (np.arctan2(desired[1], desired[0]) - heading)))
    return float(np.clip(turn, -0.15, 0.15)), slow


def _simulate(rng: np.random.Generator, bodies: list[BodyShape], frames: int, radius: float) -> np.ndarray:
    """Walk / turn / gesture ``len(bodies)`` people for ``frames`` steps -> joints (P, T, 19, 3) mm."""
    count = len(bodies)
    pos = _start_positions(rng, count, radius)
    heading = rng.uniform(-np.pi, np.pi, count)
    walker = rng.uniform(size=count) < 0.7
    speed = np.where(walker, rng.uniform(20.0, 45.0, count), rng.uniform(0.0, 4.0, count))  # mm / frame
    turn_rate = np.zeros(count)
    phase = rng.uniform(0, 2 * np.pi, count)
    gesture_freq = rng.uniform(0.03, 0.12, (count, 2))
    gesture_amp = np.where(walker[:, None], 0.15, 1.1) * rng.uniform(0.3, 1.0, (count, 2))
    head_freq, head_amp = rng.uniform(0.02, 0.08, count), rng.uniform(0.1, 0.5, count)
    out = np.zeros((count, frames, 19, 3))
    for t in range(frames):
        for p, body in enumerate(bodies):
            correction, slow = _steer(pos[p], heading[p], p, pos, radius)
            turn_rate[p] = np.clip(turn_rate[p] + rng.normal(0, 0.01), -0.06, 0.06)
            heading[p] += turn_rate[p] + correction
            step = speed[p] * slow
            pos[p] += step * np.array([np.cos(heading[p]), np.sin(heading[p])])
            phase[p] += 2 * np.pi * step / (1400.0 * body.scale)
            gesture = gesture_amp[p] * (0.5 - 0.5 * np.cos(2 * np.pi * gesture_freq[p] * t))
            state = PoseState(x=pos[p, 0], y=pos[p, 1], heading=heading[p], phase=phase[p],
                              gait=min(1.0, step / 35.0), gesture_l=gesture[0], gesture_r=gesture[1],
                              head_yaw=head_amp[p] * np.sin(2 * np.pi * head_freq[p] * t),
                              lean=0.06 * min(1.0, step / 35.0))
            out[p, t] = pose_joints19(body, state)
    return out


def _outside_person(rng: np.random.Generator, synth: SynthConfig, azimuths: np.ndarray, frames: int) -> np.ndarray:
    """A person standing (swaying, gesturing) outside the walk area, between two cameras: (T, 19, 3) mm."""
    k = int(rng.integers(len(azimuths)))
    az = azimuths[k] + np.pi / len(azimuths) + rng.uniform(-0.1, 0.1)
    r = synth.dome_radius_mm * rng.uniform(0.68, 0.8)
    x, y = SPACE_CENTRE + r * np.array([np.cos(az), np.sin(az)])
    body = random_body(rng)
    facing = az + np.pi + rng.uniform(-0.5, 0.5)  # roughly facing the centre
    poses = [pose_joints19(body, PoseState(x=x, y=y, heading=facing + 0.1 * np.sin(0.05 * t),
                                           gesture_l=0.4 + 0.3 * np.sin(0.1 * t), gesture_r=0.2))
             for t in range(frames)]
    return np.stack(poses)


def make_people(synth: SynthConfig, rng: np.random.Generator, azimuths: np.ndarray) -> SequencePeople:
    """People of one sequence: ``min_persons..max_persons`` walkers, plus an outside-dome person with
    probability ``synth.outside_dome_prob``."""
    count = int(rng.integers(synth.min_persons, synth.max_persons + 1))
    bodies = [random_body(rng) for _ in range(count)]
    inside = _simulate(rng, bodies, synth.frames, walk_radius(synth))
    has_outside = rng.uniform() < synth.outside_dome_prob
    outside = _outside_person(rng, synth, azimuths, synth.frames) if has_outside else None
    return SequencePeople(inside=inside, outside=outside)
