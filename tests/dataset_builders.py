"""Writers of tiny datasets in the real on-disk formats, shared by the reader and study tests: a Panoptic
sequence (`make_panoptic`), a Shelf / Campus folder (`make_shelf`), cameras built in the model frame
(`look_at`), and the configs pointing at them (`panoptic_cfg`, `shelf_cfg`)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from selfpose3d.config.loader import load_config
from selfpose3d.config.schema import Config
from selfpose3d.data.augment import denormalise
from selfpose3d.data.joints import panoptic_to_coco
from selfpose3d.data.shelf_campus import panoptic15_to_shelf14
from selfpose3d.geometry.cameras import Camera, camera_to_panoptic, model_points_to_panoptic, project_points

RES = (80, 60)  # original image (w, h) px
INPUT = (96, 64)  # network input (w, h) px
NODES = (3, 6)
FRAMES = (0, 1, 2)
SEQ = "seqA"
ROOT_J = 2


def look_at(name: str, position: tuple[float, float, float], resolution: tuple[int, int] = RES,
            target: tuple[float, float, float] = (0.0, 0.0, 900.0), focal: float = 100.0) -> Camera:
    """A camera at ``position`` (mm, model frame, z up) looking at ``target``."""
    pos, tgt = np.asarray(position, float), np.asarray(target, float)
    forward = (tgt - pos) / np.linalg.norm(tgt - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    K = [[focal, 0, resolution[0] / 2], [0, focal, resolution[1] / 2], [0, 0, 1]]
    return Camera(name=name, K=K, R=R, t=-R @ pos, dist=[0.01, 0.0, 0.0, 0.0, 0.0], resolution=resolution)


def standing_person(x: float, y: float) -> np.ndarray:
    """A Panoptic-15 standing skeleton (15, 3) mm at floor position (x, y)."""
    local = np.array([
        [0, 0, 1450], [0, 60, 1600], [0, 0, 900], [-180, 0, 1420], [-200, 0, 1150], [-210, 0, 900],
        [-100, 0, 900], [-100, 0, 480], [-100, 0, 80], [180, 0, 1420], [200, 0, 1150], [210, 0, 900],
        [100, 0, 900], [100, 0, 480], [100, 0, 80],
    ], dtype=float)
    return local + [x, y, 0.0]


def neck_at_shoulders(pose: np.ndarray) -> np.ndarray:
    """What survives a trip through Shelf order: the neck becomes the mid-shoulder point."""
    out = np.array(pose, copy=True)
    out[0] = (pose[3] + pose[9]) / 2
    return out


def draw_blob(image: np.ndarray, xy: np.ndarray) -> None:
    """A bright 3x3 square at pixel ``xy`` (marks the projected root for warp checks)."""
    u, v = int(round(xy[0])), int(round(xy[1]))
    image[max(v - 1, 0): v + 2, max(u - 1, 0): u + 2] = 255


def pseudo_person(pixels: np.ndarray, conf: float | np.ndarray) -> dict:
    """A COCO-17 pseudo-label person dict from Panoptic-15 pixels (15, 2)."""
    pan = np.concatenate([pixels, np.broadcast_to(np.asarray(conf, float), (15,))[:, None]], axis=1)
    coco = panoptic_to_coco(pan)
    return {"keypoints": coco.tolist(), "score": float(np.mean(pan[:, 2]))}


def make_panoptic(root: Path, seq: str = SEQ) -> dict:
    """Write a tiny Panoptic-format sequence: 2 HD cameras (+1 VGA decoy), 3 frames, 1 kept person per
    frame (+1 with low root confidence), black jpgs with a blob at the projected root, pseudo labels with
    a confident person and a weak one. Returns the cameras and the kept person per frame."""
    seq_dir = root / seq
    cams = [look_at(f"00_{n:02d}", pos) for n, pos in zip(NODES, [(4000, -2000, 1500), (-3000, -3000, 1800)], strict=True)]
    calib = [camera_to_panoptic(c, 0, n) for c, n in zip(cams, NODES, strict=True)]
    calib.append({**camera_to_panoptic(look_at("01_03", (0, 4000, 1500)), 1, 3), "type": "vga"})
    seq_dir.mkdir(parents=True)
    (seq_dir / f"calibration_{seq}.json").write_text(json.dumps({"cameras": calib}))
    (seq_dir / "hdPose3d_stage1_coco19").mkdir()
    people, frames_json = {}, {}
    for f in FRAMES:
        person = standing_person(100.0 * f, 50.0)
        ghost = standing_person(-1500.0, 800.0)
        bodies = []
        for pid, (pose, conf) in enumerate([(person, 0.9), (ghost, 0.05)]):
            joints19 = np.zeros((19, 4))
            joints19[:15, :3] = model_points_to_panoptic(pose)
            joints19[:15, 3] = conf
            if pid == 0:
                joints19[14, 3] = 0.05  # r-ankle not visible
            bodies.append({"id": pid, "joints19": joints19.reshape(-1).tolist()})
        (seq_dir / "hdPose3d_stage1_coco19" / f"body3DScene_{f:08d}.json").write_text(json.dumps({"bodies": bodies}))
        people[f] = person
        views = {}
        for cam in cams:
            pixels = project_points(person, cam)
            image = np.zeros((RES[1], RES[0], 3), np.uint8)
            draw_blob(image, pixels[ROOT_J])
            folder = seq_dir / "hdImgs" / cam.name
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{cam.name}_{f:08d}.jpg"), image)
            weak = np.full(15, 0.3)
            weak[:2] = 0.95  # only 2 confident joints: dropped by hard filtering (min 3)
            views[cam.name] = [pseudo_person(pixels + 1.0, 0.9), pseudo_person(pixels - 3.0, weak)]
        frames_json[f"{f:08d}"] = views
    (root / "pseudo_2d").mkdir(exist_ok=True)
    (root / "pseudo_2d" / f"{seq}.json").write_text(
        json.dumps({"joint_format": "coco17", "detector": "test", "frames": frames_json}))
    return {"cameras": cams, "people": people}


def panoptic_cfg(root: Path, **extra: object) -> Config:
    """Tiny config pointing at a `make_panoptic` folder."""
    overrides = {
        "dataset.kind": "panoptic", "dataset.root": str(root), "dataset.train_sequences": [SEQ],
        "dataset.test_sequences": [SEQ], "dataset.camera_nodes": list(NODES), "dataset.num_views": 2,
        "dataset.train_stride": 1, "dataset.test_stride": 1, "dataset.image_size": list(INPUT),
        "dataset.heatmap_size": [24, 16], "dataset.max_people": 4,
    }
    overrides.update(extra)
    return load_config("tiny", overrides)


SHELF_CAMS = {"shelf": [(4000, -2500, 2000), (-3500, -3000, 2200), (0, 4500, 2000)],
              "campus": [(4000, -2500, 2000), (-3500, -3000, 2200), (0, 4500, 2000)]}


def shelf_image_name(kind: str, cam: int, frame: int) -> str:
    return f"campus4-c{cam}-{frame:05d}.png" if kind == "campus" else f"img_{frame:06d}.png"


def make_shelf(root: Path, kind: str = "shelf", frames: tuple[int, ...] = (0, 1, 300, 301, 302),
               num_frames: int = 305) -> dict:
    """Write a tiny Shelf/Campus folder: calibration json, actorsGT.mat (1 x P cell of F x 1 cells, metres,
    actor 1 absent in odd frames), VoxelPose-style detection pickle and png images."""
    root.mkdir(parents=True, exist_ok=True)
    cams = [look_at(str(i), pos) for i, pos in enumerate(SHELF_CAMS[kind])]
    calib = {c.name: {"R": c.R.tolist(), "T": c.center.reshape(3, 1).tolist(), "fx": c.K[0, 0], "fy": c.K[1, 1],
                      "cx": c.K[0, 2], "cy": c.K[1, 2], "k": [[c.dist[0]], [c.dist[1]], [c.dist[4]]],
                      "p": [[c.dist[2]], [c.dist[3]]]} for c in cams}
    (root / f"calibration_{kind}.json").write_text(json.dumps(calib))
    actors = [standing_person(0.0, 0.0), standing_person(900.0, 600.0)]
    shelf14 = [panoptic15_to_shelf14(a) for a in actors]
    actor3d = np.empty((1, 2), dtype=object)
    for p in range(2):
        cells = np.empty((num_frames, 1), dtype=object)
        for f in range(num_frames):
            cells[f, 0] = shelf14[p] / 1000.0 if (p == 0 or f % 2 == 0) else np.zeros((1, 0))
        actor3d[0, p] = cells
    scipy.io.savemat(str(root / "actorsGT.mat"), {"actor3D": actor3d})
    dets = {}
    for cam in cams:
        (root / f"Camera{cam.name}").mkdir(exist_ok=True)
        for f in frames:
            pixels = project_points(actors[0], cam)
            image = np.zeros((RES[1], RES[0], 3), np.uint8)
            draw_blob(image, pixels[ROOT_J])
            cv2.imwrite(str(root / f"Camera{cam.name}" / shelf_image_name(kind, int(cam.name), f)), image)
            coco = np.array(pseudo_person(pixels, 0.8)["keypoints"])
            dets[f"{cam.name}_{f}"] = [{"pred": coco}]
    with open(root / f"pred_{kind}.pkl", "wb") as handle:
        pickle.dump(dets, handle)
    return {"cameras": cams, "actors": actors, "shelf14": shelf14}


def shelf_cfg(root: Path, kind: str = "shelf", **extra: object) -> Config:
    """Shelf/Campus preset pointed at a `make_shelf` folder, 3 views, tiny input."""
    overrides = {"dataset.root": str(root), "dataset.camera_nodes": [0, 1, 2], "dataset.num_views": 3,
                 "dataset.image_size": list(INPUT), "dataset.heatmap_size": [24, 16], "dataset.test_stride": 1,
                 "dataset.train_stride": 1, "dataset.pseudo_label_file": f"pred_{kind}.pkl", "dataset.max_people": 4}
    overrides.update(extra)
    return load_config(kind, overrides)


def blob_position(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (x, y) px of the bright pixels of a normalised (3, H, W) input."""
    gray = denormalise(image).astype(float).mean(axis=2)
    weights = np.where(gray > 0.5 * gray.max(), gray, 0.0)
    ys, xs = np.mgrid[: gray.shape[0], : gray.shape[1]]
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()
