"""Write a synthetic multi-view dataset in the real CMU Panoptic on-disk layout.

``<root>/<seq>/hdImgs/00_XX/00_XX_%08d.jpg``, ``<root>/<seq>/hdPose3d_stage1_coco19/body3DScene_%08d.json``
(cm, Panoptic world frame), ``<root>/<seq>/calibration_<seq>.json``, ``<root>/pseudo_2d/<seq>.json``
(COCO-17, original pixels) and ``<root>/synth_manifest.json``. The dataset is built in a temp dir next
to the target and renamed into place, so an interrupted run never leaves half a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from selfpose3d.config.loader import config_to_dict
from selfpose3d.config.schema import Config, SynthConfig
from selfpose3d.data.io import DatasetError
from selfpose3d.data.synthetic.detector import DETECTOR_NAME, DetectionCounts, detect_view
from selfpose3d.data.synthetic.render import (
    NOISE_BANK,
    make_background,
    make_noise_bank,
    person_colours,
    project_person,
    render_view,
)
from selfpose3d.data.synthetic.world import SequencePeople, make_cameras, make_people, walk_radius
from selfpose3d.geometry.cameras import Camera, camera_to_panoptic, model_points_to_panoptic

FORMAT_VERSION = 1
# what the people look like; 2 = heads with hair and a face (front/back visible), 1 = plain skin discs
RENDERER_VERSION = 2
MANIFEST = "synth_manifest.json"
GT_DIR = "hdPose3d_stage1_coco19"
PSEUDO_DIR = "pseudo_2d"
INVISIBLE_PROB = 0.03  # chance a GT joint (not the root) is marked invisible in a frame
INVISIBLE_CONF = 0.05
JPEG_QUALITY = 90
Progress = Callable[[int, int], None]


class DatasetExistsError(FileExistsError):
    """The output directory exists and may not be replaced."""


class SyntheticConfigError(ValueError):
    """``cfg.synth`` cannot be written (e.g. duplicate or unsafe sequence names)."""


def _check_sequences(names: list[str]) -> None:
    """Sequence names become directory names: non-empty, unique, letters / digits / ``_.-`` only."""
    if not names:
        raise SyntheticConfigError("synth.sequences: expected at least one sequence name")
    for name in names:
        if not name or name.startswith(".") or not all(ch.isalnum() or ch in "_.-" for ch in name):
            raise SyntheticConfigError(f"synth.sequences: {name!r} is not a valid directory name "
                                       "(letters, digits, '_', '.', '-')")
        if name == PSEUDO_DIR or names.count(name) > 1:
            raise SyntheticConfigError(f"synth.sequences: {name!r} is duplicated or reserved")


class _Sink:
    """Writes files under a root and remembers each file's sha256 (for the dataset fingerprint)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hashes: dict[str, str] = {}

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.hashes[rel] = hashlib.sha256(data).hexdigest()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write(rel, json.dumps(obj, separators=(",", ":")).encode())

    def fingerprint(self) -> str:
        lines = "".join(f"{rel}\t{digest}\n" for rel, digest in sorted(self.hashes.items()))
        return hashlib.sha256(lines.encode()).hexdigest()


def _gt_confidence(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """(P, T, 19) GT confidences: 1, or INVISIBLE_CONF for occasionally invisible non-root joints."""
    conf = np.where(rng.uniform(size=shape) < INVISIBLE_PROB, INVISIBLE_CONF, 1.0)
    conf[:, :, 2] = 1.0
    return conf


def _gt_scene(joints_mm: np.ndarray, conf: np.ndarray, frame: int) -> dict:
    """Panoptic body3DScene dict for joints (P, 19, 3) mm and confidences (P, 19)."""
    pan = np.round(model_points_to_panoptic(joints_mm), 3)
    bodies = [{"id": p, "joints19": np.concatenate([pan[p], conf[p, :, None]], 1).reshape(-1).tolist()}
              for p in range(len(pan))]
    return {"version": 0.7, "univTime": round(frame * 1000 / 29.97, 3), "fpsType": "hd_29_97", "bodies": bodies}


def _calibration(name: str, cameras: list[Camera], nodes: list[int]) -> dict:
    return {"calibDataSource": name,
            "cameras": [camera_to_panoptic(cam, panel=0, node=node) for cam, node in zip(cameras, nodes, strict=True)]}


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a JPEG")
    return buf.tobytes()


def _sequence_rngs(seed: int, name: str) -> list[np.random.Generator]:
    """Independent world / render / detector streams, so changing detector settings keeps GT and images."""
    seq = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
    return [np.random.default_rng(child) for child in seq.spawn(3)]


def _frame_people(people: SequencePeople, t: int) -> tuple[list[np.ndarray], int | None]:
    everyone = [people.inside[p, t] for p in range(len(people.inside))]
    if people.outside is None:
        return everyone, None
    return everyone + [people.outside[t]], len(everyone)


def _write_sequence(synth: SynthConfig, name: str, sink: _Sink, tick: Callable[[], None]) -> dict:
    """Generate and write one sequence; returns its manifest entry."""
    world_rng, render_rng, det_rng = _sequence_rngs(synth.seed, name)
    cameras, nodes, azimuths = make_cameras(synth, world_rng)
    people = make_people(synth, world_rng, azimuths)
    gt_conf = _gt_confidence(world_rng, people.inside.shape[:3])
    count_all = len(people.inside) + (people.outside is not None)
    colours = [person_colours(render_rng) for _ in range(count_all)]
    backgrounds = [make_background(render_rng, cam) for cam in cameras]
    noise = make_noise_bank(render_rng, synth.image_resolution)
    sink.write_json(f"{name}/calibration_{name}.json", _calibration(name, cameras, nodes))
    counts, frames = DetectionCounts(), {}
    for t in range(synth.frames):
        key = f"{t:08d}"
        sink.write_json(f"{name}/{GT_DIR}/body3DScene_{key}.json", _gt_scene(people.inside[:, t], gt_conf[:, t], t))
        everyone, outside_index = _frame_people(people, t)
        frames[key] = {}
        for v, cam in enumerate(cameras):
            projections = [project_person(joints, cam) for joints in everyone]
            image, ids = render_view(backgrounds[v], noise[(3 * t + v) % NOISE_BANK], cam, projections, colours)
            sink.write(f"{name}/hdImgs/{cam.name}/{cam.name}_{key}.jpg", _jpeg(image))
            frames[key][cam.name] = detect_view(det_rng, synth, cam, projections, ids, outside_index, counts)
        tick()
    sink.write_json(f"{PSEUDO_DIR}/{name}.json", {"joint_format": "coco17", "detector": DETECTOR_NAME,
                                                  "frames": frames})
    return {"name": name, "frames": synth.frames, "first_frame": 0, "cameras": [c.name for c in cameras],
            "nodes": nodes, "persons": len(people.inside), "outside_dome": people.outside is not None,
            "outside_dome_position_mm": people.outside_position, "detections": counts.detections,
            "false_positives": counts.false_positives, "outside_dome_detections": counts.outside_dome,
            "gt_invisible_joints": int((gt_conf < 1.0).sum())}


def _check_target(out_dir: Path, overwrite: bool) -> None:
    """Raise `DatasetExistsError` unless ``out_dir`` is absent, empty, or a synthetic dataset we may replace."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DatasetExistsError(f"{out_dir}: exists and is not a directory")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise DatasetExistsError(f"{out_dir}: exists and is not empty (use --force / overwrite=True to replace it)")
    if not (out_dir / MANIFEST).is_file():
        raise DatasetExistsError(f"{out_dir}: not a synthetic dataset (no {MANIFEST}); refusing to replace it")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temp dir to ``out_dir``, replacing an existing one (old copy removed after)."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rename(out_dir, trash / "old")
    try:
        os.rename(tmp, out_dir)
    except OSError:
        os.rename(trash / "old", out_dir)  # put the old dataset back
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _manifest(cfg: Config, entries: list[dict], fingerprint: str) -> dict:
    keys = ("detections", "false_positives", "outside_dome_detections", "gt_invisible_joints")
    totals = {key: sum(e[key] for e in entries) for key in keys}
    totals.update(sequences=len(entries), frames=sum(e["frames"] for e in entries),
                  images=sum(e["frames"] * len(e["cameras"]) for e in entries))
    return {"generator": "selfpose3d.data.synthetic", "format_version": FORMAT_VERSION,
            "renderer_version": RENDERER_VERSION, "layout": "panoptic",
            "seed": cfg.synth.seed, "synth": config_to_dict(cfg)["synth"], "walk_radius_mm": walk_radius(cfg.synth),
            "sequences": entries, "totals": totals, "fingerprint": fingerprint}


def written_renderer_version(root: Path) -> int:
    """The renderer version recorded in ``root``'s manifest (1 for manifests from before it was recorded).
    Compare with `RENDERER_VERSION`: an older dataset reads fine but its people look different. Raises
    `DatasetError` naming the manifest if it is missing or unreadable."""
    path = Path(root) / MANIFEST
    try:
        return int(json.loads(path.read_text()).get("renderer_version", 1))
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise DatasetError(f"{path}: unreadable synthetic-dataset manifest ({type(err).__name__}: {err})") from None


def generate_dataset(cfg: Config, out_dir: Path, progress: Progress | None = None, *,
                     overwrite: bool = False) -> dict:
    """Generate ``cfg.synth`` into ``out_dir`` (Panoptic layout) and return the manifest dict.

    progress(done, total) is called after every frame (total = frames x sequences). Deterministic in
    ``cfg.synth`` (incl. seed): identical JSON bytes and images for identical settings. Raises
    `DatasetExistsError` if ``out_dir`` is non-empty and ``overwrite`` is False (or it is not a dataset
    this generator wrote). The target only changes once everything has been written.
    """
    out_dir = Path(out_dir)
    _check_sequences(cfg.synth.sequences)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        sink, total, done = _Sink(tmp), cfg.synth.frames * len(cfg.synth.sequences), [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        entries = [_write_sequence(cfg.synth, name, sink, tick) for name in cfg.synth.sequences]
        manifest = _manifest(cfg, entries, sink.fingerprint())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
