"""Dataset readers, pseudo labels, augmentation and collate, on tiny Panoptic / Shelf / Campus folders
written by the helpers in `dataset_builders` (real on-disk formats, cameras built in the model frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from dataset_builders import (
    FRAMES,
    INPUT,
    RES,
    ROOT_J,
    SEQ,
    blob_position,
    make_panoptic,
    make_shelf,
    neck_at_shoulders,
    panoptic_cfg,
    shelf_cfg,
    standing_person,
)

from selfpose3d.config.loader import load_config
from selfpose3d.config.schema import LossConfig
from selfpose3d.data.augment import mask_outside
from selfpose3d.data.dataset import DatasetError, build_dataset, collate_samples
from selfpose3d.data.pseudo_labels import filter_pseudo, label_mode_for_epoch
from selfpose3d.data.shelf_campus import panoptic15_to_shelf14, shelf14_to_panoptic15
from selfpose3d.geometry.cameras import project_points
from selfpose3d.geometry.transforms import apply_affine, resize_affine


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
