"""Synthetic Panoptic-format world: on-disk layout, determinism, geometry round trip, detector behaviour,
atomic writing, and the `sp3d data synth` / `sp3d data info` commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from selfpose3d.config.loader import load_config
from selfpose3d.config.schema import Config
from selfpose3d.data.joints import coco_to_panoptic
from selfpose3d.data.synthetic import (
    MANIFEST,
    DatasetExistsError,
    DatasetFormatError,
    SyntheticConfigError,
    generate_dataset,
    summarize_dataset,
)
from selfpose3d.data.synthetic.detector import CLEAN_CONF, JITTER_TRUNCATION, DetectionCounts, detect_view
from selfpose3d.data.synthetic.render import person_colours, project_person, render_view
from selfpose3d.data.synthetic.skeleton import BodyShape, PoseState, pose_joints19, random_standing_pose
from selfpose3d.data.synthetic.world import SPACE_CENTRE, make_cameras, walk_radius
from selfpose3d.data.synthetic.writer import RENDERER_VERSION, written_renderer_version
from selfpose3d.geometry.cameras import camera_from_panoptic, panoptic_points_to_model, project_points

IMAGE_RE = re.compile(r"^(?P<seq>[^/]+)/hdImgs/(?P<cam>00_\d\d)/(?P=cam)_(?P<frame>\d{8})\.jpg$")
GT_RE = re.compile(r"^(?P<seq>[^/]+)/hdPose3d_stage1_coco19/body3DScene_(?P<frame>\d{8})\.json$")


def small_config(**synth: object) -> Config:
    """tiny preset shrunk to 1 sequence x 4 frames x 3 cameras, with synth overrides."""
    overrides = {"synth.sequences": ["seq_a"], "synth.frames": 4, "synth.cameras": 3}
    overrides.update({f"synth.{key}": value for key, value in synth.items()})
    return load_config("tiny", overrides)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_cameras(root: Path, seq: str) -> dict:
    calib = read_json(root / seq / f"calibration_{seq}.json")
    return {entry["name"]: camera_from_panoptic(entry) for entry in calib["cameras"]}


def read_gt(root: Path, seq: str, frame: str) -> np.ndarray:
    """(P, 19, 4) GT: joints in mm (model frame) + confidence."""
    scene = read_json(root / seq / "hdPose3d_stage1_coco19" / f"body3DScene_{frame}.json")
    arr = np.array([b["joints19"] for b in scene["bodies"]], dtype=np.float64).reshape(-1, 19, 4)
    arr[..., :3] = panoptic_points_to_model(arr[..., :3])
    return arr


def files_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_matches_real_panoptic_format(synthetic_tiny_root: Path) -> None:
    root, cfg = synthetic_tiny_root, load_config("tiny")
    manifest = read_json(root / MANIFEST)
    assert [s["name"] for s in manifest["sequences"]] == cfg.synth.sequences
    assert written_renderer_version(root) == RENDERER_VERSION == 2
    rel = files_of(root)
    images = [m for m in map(IMAGE_RE.match, rel) if m]
    gts = [m for m in map(GT_RE.match, rel) if m]
    calibs = [f"{s}/calibration_{s}.json" for s in cfg.synth.sequences]
    pseudo = [f"pseudo_2d/{s}.json" for s in cfg.synth.sequences]
    # every file is one of the real Panoptic kinds (plus pseudo labels and the manifest)
    assert len(images) + len(gts) + len(calibs) + len(pseudo) + 1 == len(rel)
    assert set(calibs + pseudo + [MANIFEST]) <= set(rel)
    assert len(images) == len(cfg.synth.sequences) * cfg.synth.frames * cfg.synth.cameras
    assert len(gts) == len(cfg.synth.sequences) * cfg.synth.frames
    assert {m["cam"] for m in images} == {f"00_{n:02d}" for n in cfg.dataset.camera_nodes}
    height, width = cv2.imread(str(root / images[0].string)).shape[:2]
    assert (width, height) == tuple(cfg.synth.image_resolution)
    seq = cfg.synth.sequences[0]
    calib = read_json(root / seq / f"calibration_{seq}.json")
    for entry in calib["cameras"]:
        assert entry["type"] == "hd" and entry["panel"] == 0 and entry["name"] == f"00_{entry['node']:02d}"
        assert np.shape(entry["K"]) == (3, 3) and np.shape(entry["R"]) == (3, 3) and np.shape(entry["t"]) == (3, 1)
        assert len(entry["distCoef"]) == 5 and entry["resolution"] == list(cfg.synth.image_resolution)
    assert [e["node"] for e in calib["cameras"]] == cfg.dataset.camera_nodes[: cfg.synth.cameras]
    scene = read_json(root / gts[0].string)
    assert all(isinstance(b["id"], int) and len(b["joints19"]) == 76 for b in scene["bodies"])
    labels = read_json(root / pseudo[0])
    assert labels["joint_format"] == "coco17"
    assert sorted(labels["frames"]) == [f"{t:08d}" for t in range(cfg.synth.frames)]
    for dets in labels["frames"]["00000000"].values():
        for det in dets:
            kp = np.array(det["keypoints"])
            assert kp.shape == (17, 3) and 0 <= det["score"] <= 1
            assert (kp[:, 0] >= 0).all() and (kp[:, 0] < width).all() and (kp[:, 1] < height).all()
    assert not [p for p in root.parent.iterdir() if ".partial-" in p.name]


def test_gt_confidence_exercises_visibility_filtering(synthetic_tiny_root: Path) -> None:
    gt = np.concatenate([read_gt(synthetic_tiny_root, "synth_train1", f"{t:08d}") for t in range(40)])
    assert (gt[:, 2, 3] > 0.1).all()  # roots are always kept
    invisible = gt[:, :15, 3] <= 0.1
    assert 0 < invisible.mean() < 0.1


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    first = generate_dataset(small_config(seed=7), tmp_path / "a")
    generate_dataset(small_config(seed=7), tmp_path / "b")
    generate_dataset(small_config(seed=8), tmp_path / "c")
    names = files_of(tmp_path / "a")
    assert names == files_of(tmp_path / "b")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    gt = "seq_a/hdPose3d_stage1_coco19/body3DScene_00000000.json"
    assert (tmp_path / "a" / gt).read_bytes() != (tmp_path / "c" / gt).read_bytes()
    assert first["fingerprint"] == read_json(tmp_path / "b" / MANIFEST)["fingerprint"]
    assert first["fingerprint"] != read_json(tmp_path / "c" / MANIFEST)["fingerprint"]


def test_cameras_form_a_dome_ring_looking_at_the_centre() -> None:
    synth = small_config(cameras=10).synth
    cameras, nodes, _ = make_cameras(synth, np.random.default_rng(0))
    assert nodes == [3, 6, 12, 13, 23, 1, 9, 16, 19, 28]
    for cam in cameras:
        assert np.allclose(cam.R @ cam.R.T, np.eye(3)) and np.isclose(np.linalg.det(cam.R), 1.0)
        ring = np.linalg.norm(cam.center[:2] - SPACE_CENTRE)
        assert abs(ring - synth.dome_radius_mm) < 0.03 * synth.dome_radius_mm
        assert abs(cam.center[2] - synth.camera_height_mm) <= 250.0
        centre_px = project_points(np.array([*SPACE_CENTRE, 1000.0]), cam)
        assert np.linalg.norm(centre_px - np.array(cam.resolution) / 2) < 0.15 * cam.resolution[0]


def best_detection(dets: list[dict], truth: np.ndarray) -> tuple[np.ndarray, float]:
    """The detection (Panoptic-15, px + conf) closest to the projected truth (15, 2) by median error."""
    best, best_err = None, np.inf
    for det in dets:
        pan = coco_to_panoptic(np.array(det["keypoints"]))
        err = float(np.median(np.linalg.norm(pan[:, :2] - truth, axis=1)))
        if err < best_err:
            best, best_err = pan, err
    return best, best_err


def test_gt_round_trips_to_pixels_and_detections_within_jitter(tmp_path: Path) -> None:
    cfg = small_config(min_persons=2, max_persons=3, detector_swap_prob=0.0, detector_false_positive_rate=0.0,
                       outside_dome_prob=0.0)
    root = tmp_path / "d"
    generate_dataset(cfg, root)
    cameras = read_cameras(root, "seq_a")
    labels = read_json(root / "pseudo_2d" / "seq_a.json")["frames"]
    bound = JITTER_TRUNCATION * cfg.synth.detector_jitter_px + 0.02  # +rounding of the JSON values
    checked = 0
    for t in range(cfg.synth.frames):
        key = f"{t:08d}"
        gt = read_gt(root, "seq_a", key)
        radius = np.linalg.norm(gt[:, 2, :2] - SPACE_CENTRE, axis=1)
        assert (radius < walk_radius(cfg.synth) + 100).all()  # in-dome persons only
        for name, cam in cameras.items():
            w, h = cam.resolution
            for person in gt:
                truth = project_points(person[:15, :3], cam)
                root_px = truth[2]
                assert 0 <= root_px[0] < w and 0 <= root_px[1] < h
                det, err = best_detection(labels[key][name], truth)
                assert det is not None and err < 3 * bound
                clean = det[:, 2] >= CLEAN_CONF[0]
                assert np.abs(det[clean, :2] - truth[clean]).max() <= bound
                checked += int(clean.sum())
    assert checked > 100


def test_outside_dome_person_is_detected_but_not_in_gt(tmp_path: Path) -> None:
    cfg = small_config(cameras=5, min_persons=1, max_persons=1, outside_dome_prob=1.0,
                       detector_false_positive_rate=0.0)
    root = tmp_path / "d"
    manifest = generate_dataset(cfg, root)
    entry = manifest["sequences"][0]
    assert entry["outside_dome"] and entry["outside_dome_detections"] > 0
    outside_xy = np.array(entry["outside_dome_position_mm"])
    assert np.linalg.norm(outside_xy - SPACE_CENTRE) > walk_radius(cfg.synth) + 500
    cameras = read_cameras(root, "seq_a")
    labels = read_json(root / "pseudo_2d" / "seq_a.json")["frames"]
    for t in range(cfg.synth.frames):
        key = f"{t:08d}"
        gt = read_gt(root, "seq_a", key)
        assert len(gt) == 1
        assert np.linalg.norm(gt[0, 2, :2] - outside_xy) > 1000  # GT holds only the in-dome person
        hits = 0
        for name, cam in cameras.items():
            roots = [coco_to_panoptic(np.array(d["keypoints"]))[2, :2] for d in labels[key][name]]
            target = project_points(np.array([*outside_xy, 950.0]), cam)
            hits += any(np.linalg.norm(r - target) < 0.08 * cam.resolution[0] for r in roots)
        assert hits >= 1
    summary = summarize_dataset(root)["sequences"][0]
    assert summary["outside_dome"] is True and summary["unmatched_detections"] >= entry["outside_dome_detections"]


def _one_person_view(synth_cfg: Config) -> tuple:
    cam = make_cameras(synth_cfg.synth, np.random.default_rng(1))[0][0]
    proj = project_person(random_standing_pose(np.random.default_rng(2), SPACE_CENTRE, 300.0), cam)
    return cam, proj


def test_detector_occlusion_swaps_and_false_positives() -> None:
    cfg = small_config(detector_miss_prob=0.0, detector_swap_prob=0.0, detector_false_positive_rate=0.0)
    cam, proj = _one_person_view(cfg)
    h, w = cam.resolution[1], cam.resolution[0]
    rng = np.random.default_rng(0)
    free = detect_view(rng, cfg.synth, cam, [proj], np.ones((h, w), np.uint8), None, DetectionCounts())
    covered = detect_view(rng, cfg.synth, cam, [proj], np.full((h, w), 2, np.uint8), None, DetectionCounts())
    assert min(k[2] for k in free[0]["keypoints"]) >= CLEAN_CONF[0] * 0.9  # eyes/ears are 0.9 x nose
    assert max(k[2] for k in covered[0]["keypoints"]) < CLEAN_CONF[0]
    swapped_cfg = small_config(detector_miss_prob=0.0, detector_swap_prob=1.0, detector_false_positive_rate=0.0)
    swapped = detect_view(rng, swapped_cfg.synth, cam, [proj], np.ones((h, w), np.uint8), None, DetectionCounts())
    kp = np.array(swapped[0]["keypoints"])
    bound = JITTER_TRUNCATION * cfg.synth.detector_jitter_px + 0.02
    assert np.abs(kp[9, :2] - proj.pixels[11]).max() <= bound  # COCO l_wrist at the true right wrist
    assert np.abs(kp[15, :2] - proj.pixels[14]).max() <= bound  # COCO l_ankle at the true right ankle
    fp_cfg = small_config(detector_false_positive_rate=5.0)
    counts = DetectionCounts()
    dets = [detect_view(rng, fp_cfg.synth, cam, [], np.zeros((h, w), np.uint8), None, counts) for _ in range(5)]
    assert counts.false_positives > 5 and counts.detections == sum(len(d) for d in dets)
    assert all(d["score"] <= 0.5 for frame in dets for d in frame)


def test_interrupted_run_leaves_no_dataset_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "d"

    def boom(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(small_config(), target, boom)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    generate_dataset(small_config(seed=1), target)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(small_config(seed=2), target, boom, overwrite=True)
    assert read_json(target / MANIFEST)["seed"] == 1 and [p.name for p in tmp_path.iterdir()] == ["d"]
    with pytest.raises(DatasetExistsError, match="not empty"):
        generate_dataset(small_config(seed=2), target)
    with pytest.raises(SyntheticConfigError, match="synth.sequences"):
        generate_dataset(small_config(sequences=["a", "a"]), tmp_path / "e")


def test_summarize_dataset_counts(synthetic_tiny_root: Path, tmp_path: Path) -> None:
    summary = summarize_dataset(synthetic_tiny_root)
    manifest = read_json(synthetic_tiny_root / MANIFEST)
    assert summary["fingerprint"] == manifest["fingerprint"] and summary["totals"]["frames"] == 120
    for seq, entry in zip(summary["sequences"], sorted(manifest["sequences"], key=lambda e: e["name"]), strict=True):
        assert seq["name"] == entry["name"] and seq["frames"] == 40 and len(seq["cameras"]) == 5
        assert seq["persons_per_frame"]["max"] == entry["persons"] and seq["detections"] == entry["detections"]
        # outside-dome people match no GT person (except where one overlaps a GT person in the image)
        assert 0.9 * entry["outside_dome_detections"] <= seq["unmatched_detections"] <= seq["detections"]
    with pytest.raises(DatasetFormatError, match="not a Panoptic-layout dataset"):
        summarize_dataset(tmp_path)


@pytest.fixture()
def cli() -> typer.Typer:
    from sp3d.commands.data import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # keep `data` a sub-command group
    return app


SMALL_ARGS = ["--sequences", "seq_a", "--frames", "2", "--cameras", "2", "--persons", "1-2"]


def test_cli_synth_refuses_to_overwrite_without_force(cli: typer.Typer, tmp_path: Path) -> None:
    runner, out = CliRunner(), tmp_path / "ds"
    first = runner.invoke(cli, ["data", "synth", "--out", str(out), *SMALL_ARGS])
    assert first.exit_code == 0, first.output
    assert read_json(out / MANIFEST)["synth"]["cameras"] == 2
    again = runner.invoke(cli, ["data", "synth", "--out", str(out), *SMALL_ARGS, "--seed", "3"])
    assert again.exit_code == 1 and "--force" in again.output
    assert read_json(out / MANIFEST)["seed"] == 0
    forced = runner.invoke(cli, ["data", "synth", "--out", str(out), *SMALL_ARGS, "--seed", "3", "--force"])
    assert forced.exit_code == 0, forced.output
    assert read_json(out / MANIFEST)["seed"] == 3
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    refused = runner.invoke(cli, ["data", "synth", "--out", str(other), *SMALL_ARGS, "--force"])
    assert refused.exit_code == 1 and "not a synthetic dataset" in refused.output
    assert (other / "keep.txt").read_text() == "x"


@pytest.mark.parametrize(("args", "message"), [
    (["--persons", "2-x"], "--persons"),
    (["--persons", "3-1"], "min_persons"),
    (["--cameras", "11"], "--cameras"),
    (["--frames", "0"], "--frames"),
    (["--config", "no_such.yaml"], "no such config file"),
    (["--sequences", "bad/name"], "synth.sequences"),
])
def test_cli_bad_option_exits_nonzero_with_clear_message(cli: typer.Typer, tmp_path: Path, args: list[str],
                                                         message: str) -> None:
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "ds"), *args])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "ds").exists()


def test_cli_info_prints_summary(cli: typer.Typer, synthetic_tiny_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    table = runner.invoke(cli, ["data", "info", str(synthetic_tiny_root)])
    assert table.exit_code == 0 and "synth_train1" in table.output and "total" in table.output
    as_json = runner.invoke(cli, ["data", "info", str(synthetic_tiny_root), "--json"])
    assert json.loads(as_json.stdout)["totals"]["images"] == 600
    missing = runner.invoke(cli, ["data", "info", str(tmp_path)])
    assert missing.exit_code == 1 and "not a Panoptic-layout dataset" in missing.output


def test_face_shows_only_when_the_person_faces_the_camera() -> None:
    """Front and back views differ at the head (skin face vs hair), so a single view can tell left from right."""
    cam = make_cameras(small_config().synth, np.random.default_rng(1))[0][0]
    dx, dy = cam.center[:2] - SPACE_CENTRE
    towards = np.arctan2(dy, dx)  # heading (rad from +x towards +y) that faces the camera
    colours = [person_colours(np.random.default_rng(3))]
    skin, hair = colours[0][1].astype(int), colours[0][3].astype(int)
    background = np.zeros((cam.resolution[1], cam.resolution[0], 3), np.uint8)
    noise = np.zeros(background.shape, np.int16)

    def head_pixel(heading: float) -> np.ndarray:
        joints = pose_joints19(BodyShape(scale=1.0), PoseState(x=SPACE_CENTRE[0], y=SPACE_CENTRE[1], heading=heading))
        proj = project_person(joints, cam)
        image, ids = render_view(background, noise, cam, [proj], colours)
        u, v = np.round(proj.pixels[[15, 17]].mean(axis=0)).astype(int)  # between the eyes
        assert ids[v, u] == 1
        return image[v, u].astype(int)

    assert np.abs(head_pixel(towards) - skin).max() <= 2
    assert np.abs(head_pixel(towards + np.pi) - hair).max() <= 2

