"""Dataset readers, pseudo labels, augmentation and collate, on tiny Panoptic / Shelf / Campus folders
written by the helpers below (real on-disk formats, cameras built in the model frame)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from selfpose3d.config.loader import load_config
from selfpose3d.config.schema import Config, LossConfig
from selfpose3d.data.augment import denormalise, mask_outside
from selfpose3d.data.dataset import DatasetError, build_dataset, collate_samples
from selfpose3d.data.joints import panoptic_to_coco
from selfpose3d.data.pseudo_labels import filter_pseudo, label_mode_for_epoch
from selfpose3d.data.shelf_campus import panoptic15_to_shelf14, shelf14_to_panoptic15
from selfpose3d.geometry.cameras import Camera, camera_to_panoptic, model_points_to_panoptic, project_points
from selfpose3d.geometry.transforms import apply_affine, resize_affine

RES = (80, 60)  # original image (w, h) px
INPUT = (96, 64)  # network input (w, h) px
NODES = (3, 6)
FRAMES = (0, 1, 2)
SEQ = "seqA"
ROOT_J = 2


# ----------------------------------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------------------------------- Panoptic
def test_panoptic_test_sample_gt_cameras_and_geometry(tmp_path: Path) -> None:
    world = make_panoptic(tmp_path)
    ds = build_dataset(panoptic_cfg(tmp_path), "test")
    assert len(ds) == len(FRAMES)
    sample = ds[1]
    assert sample.images.shape == (2, 3, INPUT[1], INPUT[0]) and sample.images.dtype == np.float32
    assert [c.name for c in sample.cameras] == ["00_03", "00_06"]  # HD nodes, not the VGA decoy
    for loaded, written in zip(sample.cameras, world["cameras"], strict=True):
        np.testing.assert_allclose(loaded.R, written.R, atol=1e-9)
        np.testing.assert_allclose(loaded.t, written.t, atol=1e-6)
    assert sample.gt_count == 1  # the low-root-confidence body is dropped
    np.testing.assert_allclose(sample.gt_3d[0], world["people"][1], atol=1e-3)
    assert sample.gt_vis[0, :14].all() and not sample.gt_vis[0, 14]
    assert not sample.gt_3d[1:].any()
    for v, cam in enumerate(sample.cameras):
        inp = apply_affine(project_points(sample.gt_3d[0], cam), sample.affines[v])
        assert (inp >= 0).all() and (inp[:, 0] < INPUT[0]).all() and (inp[:, 1] < INPUT[1]).all()
        assert np.linalg.norm(blob_position(sample.images[v]) - inp[ROOT_J]) < 1.5


def test_panoptic_frames_need_every_view_and_follow_stride(tmp_path: Path) -> None:
    make_panoptic(tmp_path)
    (tmp_path / SEQ / "hdImgs" / "00_06" / "00_06_00000001.jpg").unlink()
    assert [ds_frame for _, ds_frame in build_dataset(panoptic_cfg(tmp_path), "test").reader.frames] == [0, 2]
    (tmp_path / SEQ / "hdImgs" / "00_06" / "00_06_00000002.jpg").unlink()
    cfg = panoptic_cfg(tmp_path, **{"dataset.test_stride": 2})
    assert [f for _, f in build_dataset(cfg, "test").reader.frames] == [0]


def test_panoptic_errors_name_the_file(tmp_path: Path) -> None:
    make_panoptic(tmp_path)
    calib = tmp_path / SEQ / f"calibration_{SEQ}.json"
    with pytest.raises(DatasetError, match="camera node 12 not in calibration"):
        build_dataset(panoptic_cfg(tmp_path, **{"dataset.camera_nodes": [3, 12]}), "test")
    text = calib.read_text()
    calib.write_text("{not json")
    with pytest.raises(DatasetError, match=f"calibration_{SEQ}.json: bad json"):
        build_dataset(panoptic_cfg(tmp_path), "test")
    calib.unlink()
    with pytest.raises(DatasetError, match=f"calibration_{SEQ}.json: missing"):
        build_dataset(panoptic_cfg(tmp_path), "test")
    calib.write_text(text)
    (tmp_path / "pseudo_2d" / f"{SEQ}.json").rename(tmp_path / "moved.json")
    with pytest.raises(DatasetError, match="missing pseudo-label json"):
        build_dataset(panoptic_cfg(tmp_path), "train")
    ds = build_dataset(panoptic_cfg(tmp_path), "test")  # test split: pseudo labels optional
    assert ds[0].pseudo_count.tolist() == [0, 0]
    (tmp_path / SEQ / "hdPose3d_stage1_coco19" / "body3DScene_00000000.json").write_text('{"bodies": [{"id": 0}]}')
    with pytest.raises(DatasetError, match=r"body3DScene_00000000.json: bodies\[0\].joints19"):
        ds[0]
    (tmp_path / SEQ / "hdImgs" / "00_03" / "00_03_00000001.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="00_03_00000001.jpg: missing image"):
        ds[1]


def test_pseudo_labels_soft_and_hard_in_the_dataset(tmp_path: Path) -> None:
    make_panoptic(tmp_path)
    ds = build_dataset(panoptic_cfg(tmp_path, **{"loss.label_strategy": "soft_hard"}), "test")
    assert ds.label_mode == "soft"
    soft = ds[0]
    assert soft.pseudo_count.tolist() == [2, 2] and soft.pseudo_2d.shape == (2, 4, 15, 3)
    assert soft.pseudo_2d[0, 0, 0, 2] == pytest.approx(0.9)  # sorted by score: the confident person first
    pix = soft.pseudo_2d[0, 0]
    np.testing.assert_allclose(pix[0, :2], (pix[3, :2] + pix[9, :2]) / 2, atol=1e-4)  # neck = mid-shoulders
    assert np.isclose(soft.pseudo_2d[0, 1, 5, 2], 0.3)
    ds.label_mode = "hard"
    hard = ds[0]
    assert hard.pseudo_count.tolist() == [1, 1]  # weak person has 2 joints >= 0.7 -> dropped
    assert set(np.unique(hard.pseudo_2d[..., 2])) <= {0.0, 1.0} and hard.pseudo_2d[0, 0, :, 2].all()
    with pytest.raises(ValueError, match="label_mode"):
        ds.label_mode = "medium"


def test_filter_pseudo_hard_threshold_and_min_joints() -> None:
    loss = LossConfig(hard_threshold=0.7, hard_min_joints=3)
    kp = np.zeros((3, 15, 3))
    kp[0, :, 2] = np.linspace(0.0, 1.0, 15)  # 5 joints >= 0.7 (0.714 ...)
    kp[1, :3, 2] = 0.8  # exactly 3 -> kept
    kp[2, :2, 2] = 0.99  # 2 -> dropped
    out, scores = filter_pseudo(kp, np.array([0.5, 0.4, 0.3]), "hard", loss)
    assert len(out) == 2 and scores.tolist() == [0.5, 0.4]
    np.testing.assert_array_equal(out[0, :, 2], (kp[0, :, 2] >= 0.7).astype(float))
    assert out[1, :, 2].sum() == 3
    soft, _ = filter_pseudo(kp, np.zeros(3), "soft", loss)
    np.testing.assert_array_equal(soft, kp)


def test_label_mode_for_epoch() -> None:
    cfg = load_config("tiny", {"train.pose_net.epochs": 8, "loss.hard_last_epochs": 2})
    modes = [label_mode_for_epoch(cfg, "pose_net", e) for e in range(8)]
    assert modes == ["soft"] * 6 + ["hard"] * 2
    assert label_mode_for_epoch(cfg, "backbone_2d", 19) == "soft"
    assert label_mode_for_epoch(load_config("tiny", {"loss.label_strategy": "hard"}), "root_net", 0) == "hard"
    assert label_mode_for_epoch(load_config("tiny", {"loss.label_strategy": "soft"}), "pose_net", 7) == "soft"
    with pytest.raises(ValueError, match="stage"):
        label_mode_for_epoch(cfg, "warmup", 0)


def test_training_copies_affines_and_warps(tmp_path: Path) -> None:
    world = make_panoptic(tmp_path)
    ds = build_dataset(panoptic_cfg(tmp_path, **{"loss.aug_per_view": True}), "train")
    item = ds[2]
    assert set(item) == {"t1", "t2", "t3"}
    for v, cam in enumerate(world["cameras"]):
        np.testing.assert_allclose(item["t3"].affines[v], resize_affine(cam.resolution, INPUT))
    assert not np.allclose(item["t1"].affines, item["t2"].affines)
    assert not np.allclose(item["t1"].affines[0, :, :2], item["t1"].affines[1, :, :2])  # per-view draws
    root = world["people"][2][ROOT_J]
    for name, sample in item.items():
        for v, cam in enumerate(sample.cameras):
            target = apply_affine(project_points(root, cam), sample.affines[v])
            if 2 <= target[0] < INPUT[0] - 2 and 2 <= target[1] < INPUT[1] - 2:
                assert np.linalg.norm(blob_position(sample.images[v]) - target) < 1.5, name
    shared = build_dataset(panoptic_cfg(tmp_path), "train")[0]["t1"].affines
    lin = shared[:, :, :2]
    np.testing.assert_allclose(lin[0], lin[1])  # default: one rotation/scale per copy (same resolutions)


def test_mask_outside_zeroes_joints_leaving_the_input() -> None:
    affine = resize_affine(RES, INPUT)
    pseudo = np.zeros((1, 15, 3))
    pseudo[0, :, :2] = [40, 30]
    pseudo[0, :, 2] = 0.8
    pseudo[0, 3, :2] = [-20, 30]  # letterbox offset is ~5 px: -20 leaves the input
    out = mask_outside(pseudo, affine, INPUT)
    assert out[0, 3, 2] == 0 and (np.delete(out[0, :, 2], 3) == 0.8).all()
    np.testing.assert_array_equal(out[..., :2], pseudo[..., :2])


def test_collate_shapes_match_the_architecture_table(tmp_path: Path) -> None:
    make_panoptic(tmp_path)
    test_ds = build_dataset(panoptic_cfg(tmp_path), "test")
    batch = collate_samples([test_ds[0], test_ds[1]])
    B, V, P, H, W = 2, 2, 4, INPUT[1], INPUT[0]
    expected = {"images": (B, V, 3, H, W), "K": (B, V, 3, 3), "R": (B, V, 3, 3), "t": (B, V, 3),
                "dist": (B, V, 5), "affine": (B, V, 2, 3), "pseudo_2d": (B, V, P, 15, 3), "pseudo_count": (B, V),
                "gt_3d": (B, P, 15, 3), "gt_vis": (B, P, 15), "gt_count": (B,)}
    for key, shape in expected.items():
        assert tuple(batch[key].shape) == shape, key
    assert batch["pseudo_count"].dtype.is_floating_point is False and batch["gt_vis"].dtype.is_floating_point is False
    assert batch["gt_count"].tolist() == [1, 1] and [m["frame"] for m in batch["meta"]] == [0, 1]
    assert batch["meta"][0]["cameras"] == ["00_03", "00_06"]
    train_ds = build_dataset(panoptic_cfg(tmp_path), "train")
    copies = collate_samples([train_ds[0], train_ds[2]])
    assert set(copies) == {"t1", "t2", "t3"}
    assert tuple(copies["t2"]["images"].shape) == (B, V, 3, H, W)
    assert not copies["t1"]["affine"].equal(copies["t3"]["affine"])


# ----------------------------------------------------------------------------------- Shelf / Campus
def test_shelf_reader_gt_cameras_and_geometry(tmp_path: Path) -> None:
    world = make_shelf(tmp_path, "shelf")
    ds = build_dataset(shelf_cfg(tmp_path, "shelf"), "test")
    assert ds.reader.frames == [300, 301, 302]
    sample = ds[1]  # frame 301: actor 2 absent (odd frame)
    assert sample.gt_count == 1 and sample.meta["gt_ids"] == [0]
    np.testing.assert_allclose(sample.meta["gt_shelf14"][0], world["shelf14"][0], atol=1e-3)
    np.testing.assert_allclose(sample.gt_3d[0], neck_at_shoulders(world["actors"][0]), atol=1e-3)
    assert ds[0].gt_count == 2
    for v, cam in enumerate(sample.cameras):
        np.testing.assert_allclose(cam.R, world["cameras"][v].R, atol=1e-9)
        np.testing.assert_allclose(cam.t, world["cameras"][v].t, atol=1e-6)
        assert cam.resolution == RES
        inp = apply_affine(project_points(sample.gt_3d[0], cam), sample.affines[v])
        assert (inp >= 0).all() and (inp[:, 0] < INPUT[0]).all() and (inp[:, 1] < INPUT[1]).all()
        assert np.linalg.norm(blob_position(sample.images[v]) - inp[ROOT_J]) < 1.5
    assert sample.pseudo_count.tolist() == [1, 1, 1]


def test_campus_naming_and_test_ranges(tmp_path: Path) -> None:
    with_campus_frames = (0, 350, 470, 471, 650)
    make_shelf(tmp_path, "campus", frames=with_campus_frames, num_frames=700)
    ds = build_dataset(shelf_cfg(tmp_path, "campus"), "test")
    assert ds.reader.frames == [350, 470, 650]
    assert ds[0].meta["image_paths"][1].endswith("Camera1/campus4-c1-00350.png")
    train = build_dataset(shelf_cfg(tmp_path, "campus"), "train")
    assert train.reader.frames == [0, 471]
    assert set(train[0]) == {"t1", "t2", "t3"}


def test_shelf_errors_name_the_file(tmp_path: Path) -> None:
    make_shelf(tmp_path, "shelf")
    with pytest.raises(DatasetError, match="camera node 7 not in calibration"):
        build_dataset(shelf_cfg(tmp_path, **{"dataset.camera_nodes": [0, 7, 2]}), "test")
    scipy.io.savemat(str(tmp_path / "actorsGT.mat"), {"other": np.zeros(3)})
    with pytest.raises(DatasetError, match="actorsGT.mat: mat without 'actor3D'"):
        build_dataset(shelf_cfg(tmp_path), "test")
    (tmp_path / "calibration_shelf.json").unlink()
    with pytest.raises(DatasetError, match="calibration_shelf.json: missing"):
        build_dataset(shelf_cfg(tmp_path), "test")
    make_shelf(tmp_path / "empty", "shelf", frames=(0, 1))
    with pytest.raises(DatasetError, match="no usable test frames"):
        build_dataset(shelf_cfg(tmp_path / "empty"), "test")


def test_shelf_panoptic_joint_mapping_round_trip() -> None:
    pose15 = standing_person(300.0, -200.0)
    shelf = panoptic15_to_shelf14(pose15)
    back = shelf14_to_panoptic15(shelf)
    # limbs 1:1, neck / mid-hip = midpoints, nose recovered exactly from the bottom-head rule
    np.testing.assert_allclose(back, neck_at_shoulders(pose15), atol=1e-9)
    np.testing.assert_allclose(panoptic15_to_shelf14(back)[:13], shelf[:13], atol=1e-9)
    assert shelf[13, 2] > shelf[12, 2] > pose15[0, 2]  # top of head above bottom of head above the neck


# -------------------------------------------------------------------------------------- synthetic
def test_synthetic_tiny_dataset_builds(request: pytest.FixtureRequest) -> None:
    try:
        root = request.getfixturevalue("synthetic_tiny_root")
    except pytest.FixtureLookupError:
        pytest.skip("synthetic_tiny_root fixture not available yet")
    cfg = load_config("tiny", {"dataset.root": str(root)})
    ds = build_dataset(cfg, "train")
    item = ds[0]
    V = cfg.dataset.num_views
    assert item["t1"].images.shape == (V, 3, cfg.dataset.image_size[1], cfg.dataset.image_size[0])
    batch = collate_samples([item])
    assert tuple(batch["t3"]["pseudo_2d"].shape) == (1, V, cfg.dataset.max_people, 15, 3)
    test = build_dataset(cfg, "test")[0]
    assert test.gt_count >= 1
    for v, cam in enumerate(test.cameras):
        inp = apply_affine(project_points(test.gt_3d[: test.gt_count], cam), test.affines[v])
        assert np.isfinite(inp).all()
