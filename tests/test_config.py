"""Config schema, presets, YAML loading, overrides and error messages."""

from __future__ import annotations

import pytest

from selfpose3d.config import (
    PRESETS,
    ConfigError,
    config_hash,
    dump_config,
    flatten_config,
    load_config,
)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.model.num_joints == 15


def test_panoptic_preset_is_paper_scale() -> None:
    cfg = load_config("panoptic")
    assert cfg.dataset.image_size == (960, 512) and cfg.dataset.heatmap_size == (240, 128)
    assert cfg.model.backbone == "resnet50" and cfg.model.attn_backbone == "resnet18"
    assert cfg.model.root_space.voxels == (80, 80, 20) and cfg.model.pose_cube_voxels == (64, 64, 64)
    assert cfg.model.root_space.center_mm == (0.0, -500.0, 800.0)
    assert cfg.dataset.camera_nodes == [3, 6, 12, 13, 23]
    assert cfg.loss.joint_lambda == 0.01 and cfg.loss.attn_sigma == 0.1
    assert cfg.train.pose_net.epochs == 8 and cfg.train.pose_net.lr_steps == [5, 7]


def test_tiny_is_small() -> None:
    cfg = load_config("tiny")
    assert cfg.dataset.kind == "synthetic"
    assert cfg.dataset.image_size[0] * cfg.dataset.image_size[1] < 960 * 512 / 10


def test_overrides_parse_yaml_values() -> None:
    cfg = load_config("tiny", ["loss.joint_lambda=0.1", "model.attn_backbone=shared", "dataset.num_views=3"])
    assert cfg.loss.joint_lambda == 0.1 and cfg.model.attn_backbone == "shared" and cfg.dataset.num_views == 3
    cfg2 = load_config("tiny", {"loss.attn_sigma": 1.0})
    assert cfg2.loss.attn_sigma == 1.0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.bogus=1", "model.bogus"),
        ("train.pose_net.epochs=abc", "train.pose_net.epochs"),
        ("model.attn_backbone=resnet101", "model.attn_backbone"),
        ("dataset.num_views=9", "num_views"),
        ("loss.joint_lambda=-1", "loss.joint_lambda"),
    ],
)
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config("tiny", [override])


def test_yaml_file_with_base_and_errors(tmp_path) -> None:
    good = tmp_path / "exp.yaml"
    good.write_text("base: tiny\nloss:\n  joint_lambda: 0.5\n")
    assert load_config(good).loss.joint_lambda == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("base: tiny\nloss:\n  joint_lamda: 0.5\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: loss.joint_lamda"):
        load_config(typo)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("tiny", ["loss.joint_lambda"])


def test_dump_roundtrip_and_hash(tmp_path) -> None:
    cfg = load_config("tiny", ["loss.joint_lambda=0.2"])
    path = tmp_path / "full.yaml"
    dump_config(cfg, path)
    again = load_config(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert config_hash(load_config("tiny")) != config_hash(cfg)
    flat = flatten_config(cfg)
    assert flat["loss.joint_lambda"] == 0.2 and flat["model.root_space.voxels"] == [32, 32, 8]
