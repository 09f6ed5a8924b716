"""Articulated 19-joint skeletons (Panoptic coco19 order) posed from a small gait / gesture state.

Frame: model frame, millimetres, z up. A body is built in a local frame (x forward, y to the person's
left, z up), then rotated by its heading and placed on the floor. Joints 0..14 follow
`selfpose3d.data.joints.JOINT_NAMES`; 15..18 are l-eye, l-ear, r-eye, r-ear (Panoptic joints19).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_JOINTS19 = 19
FORWARD = np.array([1.0, 0.0, 0.0])
LEFT = np.array([0.0, 1.0, 0.0])
UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class BodyShape:
    """Bone lengths of one person in mm (a 1.75 m adult times ``scale``)."""

    scale: float
    spine: float = 520.0  # mid-hip -> neck
    head: float = 130.0  # neck -> nose (up)
    nose_forward: float = 70.0
    shoulder_half: float = 180.0
    shoulder_drop: float = 25.0
    upper_arm: float = 290.0
    forearm: float = 265.0
    hip_half: float = 100.0
    thigh: float = 430.0
    shin: float = 420.0
    ankle_height: float = 80.0

    def length(self, name: str) -> float:
        """A bone length in mm, already multiplied by ``scale``."""
        return float(getattr(self, name)) * self.scale


@dataclass(frozen=True)
class PoseState:
    """What drives a pose at one instant.

    x, y: floor position of the mid-hip (mm); heading: facing direction (rad, from +x towards +y);
    phase: gait phase (rad); gait: walking strength in [0, 1] (0 = standing);
    gesture_l / gesture_r: arm abduction (rad, 0 = hanging); head_yaw: head turn (rad); lean: torso lean (rad).
    """

    x: float
    y: float
    heading: float
    phase: float = 0.0
    gait: float = 0.0
    gesture_l: float = 0.0
    gesture_r: float = 0.0
    head_yaw: float = 0.0
    lean: float = 0.0


def random_body(rng: np.random.Generator) -> BodyShape:
    """A body with an overall size in [0.9, 1.1] x 1.75 m and slightly varied proportions."""
    scale = float(rng.uniform(0.9, 1.1))
    return BodyShape(scale=scale, shoulder_half=float(rng.uniform(165.0, 195.0)),
                     hip_half=float(rng.uniform(90.0, 110.0)), upper_arm=float(rng.uniform(275.0, 305.0)))


def _sagittal(angle: float, abduction: float = 0.0, side: float = 0.0) -> np.ndarray:
    """Unit limb direction: swung forward by ``angle`` from hanging down, raised sideways by ``abduction``."""
    down_swing = np.sin(angle) * FORWARD - np.cos(angle) * UP
    return np.cos(abduction) * down_swing + np.sin(abduction) * side * LEFT


def _leg(body: BodyShape, hip: np.ndarray, flexion: float, knee_bend: float) -> tuple[np.ndarray, np.ndarray]:
    knee = hip + body.length("thigh") * _sagittal(flexion)
    ankle = knee + body.length("shin") * _sagittal(flexion - knee_bend)
    return knee, ankle


def _arm(body: BodyShape, shoulder: np.ndarray, flexion: float, elbow_bend: float, abduction: float,
         side: float) -> tuple[np.ndarray, np.ndarray]:
    elbow = shoulder + body.length("upper_arm") * _sagittal(flexion, abduction, side)
    wrist = elbow + body.length("forearm") * _sagittal(flexion + elbow_bend, abduction * 0.8, side)
    return elbow, wrist


def _local_pose(body: BodyShape, s: PoseState) -> np.ndarray:
    """Joints (19, 3) in the local frame with the mid-hip at the origin."""
    j = np.zeros((NUM_JOINTS19, 3))
    amp = 0.45 * s.gait
    for hip_idx, knee_idx, ankle_idx, side, phase in ((6, 7, 8, 1.0, s.phase), (12, 13, 14, -1.0, s.phase + np.pi)):
        j[hip_idx] = side * body.length("hip_half") * LEFT
        knee_bend = 0.08 + 1.1 * s.gait * max(0.0, np.cos(phase)) ** 2
        j[knee_idx], j[ankle_idx] = _leg(body, j[hip_idx], amp * np.sin(phase), knee_bend)
    j[0] = body.length("spine") * (np.sin(s.lean) * FORWARD + np.cos(s.lean) * UP)
    for sh, el, wr, side, phase, gesture in ((3, 4, 5, 1.0, s.phase, s.gesture_l),
                                             (9, 10, 11, -1.0, s.phase + np.pi, s.gesture_r)):
        j[sh] = j[0] + side * body.length("shoulder_half") * LEFT - body.length("shoulder_drop") * UP
        flexion = -0.8 * amp * np.sin(phase)
        j[el], j[wr] = _arm(body, j[sh], flexion, 0.25 + 0.4 * s.gait * max(0.0, -np.sin(phase)), gesture, side)
    yaw = np.array([np.cos(s.head_yaw), np.sin(s.head_yaw), 0.0])
    yaw_left = np.array([-np.sin(s.head_yaw), np.cos(s.head_yaw), 0.0])
    j[1] = j[0] + body.length("head") * UP + body.length("nose_forward") * yaw
    sc = body.scale
    for idx, side, fwd, lat, up in ((15, 1, -20, 32, 35), (16, 1, -95, 75, 10), (17, -1, -20, 32, 35),
                                    (18, -1, -95, 75, 10)):
        j[idx] = j[1] + sc * (fwd * yaw + side * lat * yaw_left + up * UP)
    return j


def pose_joints19(body: BodyShape, state: PoseState) -> np.ndarray:
    """World joints (19, 3) in mm for a body in a state; the lower ankle rests at ankle height."""
    local = _local_pose(body, state)
    lift = body.length("ankle_height") - min(local[8, 2], local[14, 2])
    c, s = np.cos(state.heading), np.sin(state.heading)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return local @ rot.T + np.array([state.x, state.y, lift])


def random_standing_pose(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """A random person (19, 3) mm standing somewhere within ``radius`` mm of ``centre`` (2,) on the floor."""
    r = radius * np.sqrt(rng.uniform())
    a = rng.uniform(0, 2 * np.pi)
    state = PoseState(x=float(centre[0] + r * np.cos(a)), y=float(centre[1] + r * np.sin(a)),
                      heading=float(rng.uniform(-np.pi, np.pi)), phase=float(rng.uniform(0, 2 * np.pi)),
                      gait=float(rng.uniform(0, 1)), gesture_l=float(rng.uniform(0, 1.2)),
                      gesture_r=float(rng.uniform(0, 1.2)))
    return pose_joints19(random_body(rng), state)
