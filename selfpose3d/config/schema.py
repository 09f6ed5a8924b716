"""Typed experiment configuration (pydantic).

The defaults of every field are the paper-scale values of SelfPose3d on CMU Panoptic (see DESIGN.md);
presets in ``presets/*.yaml`` only override what differs. Unknown keys and wrong types are rejected
with the dotted key path in the message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JointCount = 15
PANOPTIC_TRAIN_SEQUENCES = [
    "160422_ultimatum1", "160224_haggling1", "160226_haggling1", "161202_haggling1",
    "160906_ian1", "160906_ian2", "160906_ian3", "160906_band1", "160906_band2",
]
PANOPTIC_TEST_SEQUENCES = ["160906_pizza1", "160422_haggling1", "160906_ian5", "160906_band4"]


class Strict(BaseModel):
    """Base model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(Strict):
    """Where the multi-view data lives and how it is read."""

    kind: Literal["synthetic", "panoptic", "shelf", "campus"] = "panoptic"
    root: str = "data/panoptic"  # local path; nothing is ever downloaded
    train_sequences: list[str] = Field(default_factory=lambda: list(PANOPTIC_TRAIN_SEQUENCES))
    test_sequences: list[str] = Field(default_factory=lambda: list(PANOPTIC_TEST_SEQUENCES))
    camera_nodes: list[int] = Field(default_factory=lambda: [3, 6, 12, 13, 23])  # HD camera node ids
    num_views: int = Field(5, ge=1, le=31)  # first num_views of camera_nodes are used
    train_stride: int = Field(3, ge=1)
    test_stride: int = Field(12, ge=1)
    image_size: tuple[int, int] = (960, 512)  # network input (width, height), pixels
    heatmap_size: tuple[int, int] = (240, 128)  # (width, height), pixels
    heatmap_sigma_px: float = Field(3.0, gt=0)
    root_conf_threshold: float = 0.1  # GT person kept if its root confidence is above this
    joint_vis_threshold: float = 0.1  # GT joint visible if its confidence is above this
    pseudo_label_file: str = "pseudo_2d/{seq}.json"  # relative to root; {seq} is the sequence name
    max_people: int = Field(10, ge=1)  # padding size for GT / pseudo people per sample

    @model_validator(mode="after")
    def _views_fit_nodes(self) -> DatasetConfig:
        if self.kind in ("synthetic", "panoptic") and self.num_views > len(self.camera_nodes):
            raise ValueError(
                f"dataset.num_views={self.num_views} exceeds len(dataset.camera_nodes)={len(self.camera_nodes)}"
            )
        return self


class SynthConfig(Strict):
    """Synthetic multi-view world written in the real Panoptic on-disk layout (`sp3d data synth`)."""

    sequences: list[str] = Field(default_factory=lambda: ["synth_train1", "synth_train2", "synth_test1"])
    frames: int = Field(60, ge=1)  # frames per sequence
    min_persons: int = Field(1, ge=1, le=6)
    max_persons: int = Field(3, ge=1, le=6)
    cameras: int = Field(5, ge=1, le=10)  # HD cameras on a dome ring, node ids 0..cameras-1 mapped to nodes
    image_resolution: tuple[int, int] = (1920, 1080)  # written jpg size (width, height), pixels
    dome_radius_mm: float = 4500.0
    camera_height_mm: float = 2200.0
    outside_dome_prob: float = Field(0.1, ge=0, le=1)  # chance a sequence has a person outside the dome
    detector_jitter_px: float = Field(4.0, ge=0)
    detector_miss_prob: float = Field(0.08, ge=0, le=1)
    detector_swap_prob: float = Field(0.03, ge=0, le=1)
    detector_false_positive_rate: float = Field(0.05, ge=0)  # expected false persons per image
    seed: int = 0

    @model_validator(mode="after")
    def _persons_order(self) -> SynthConfig:
        if self.min_persons > self.max_persons:
            raise ValueError(f"synth.min_persons={self.min_persons} > synth.max_persons={self.max_persons}")
        return self


class SpaceConfig(Strict):
    """A voxel grid: physical size and centre in mm, voxel counts per axis."""

    size_mm: tuple[float, float, float] = (8000.0, 8000.0, 2000.0)
    center_mm: tuple[float, float, float] = (0.0, -500.0, 800.0)
    voxels: tuple[int, int, int] = (80, 80, 20)


class ModelConfig(Strict):
    """Network shapes. Backbone weights are only ever loaded from a local path."""

    num_joints: int = JointCount
    root_joint: int = 2  # mid-hip
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    attn_backbone: Literal["resnet18", "resnet34", "resnet50", "shared"] = "resnet18"
    pretrained_backbone: str | None = None  # local .pth state dict for heatmap_net_2d's ResNet
    deconv_layers: int = Field(3, ge=1)
    deconv_channels: int = Field(256, ge=1)
    root_input: Literal["root", "all"] = "root"  # root heatmap only (SelfPose3d) or all (VoxelPose)
    root_space: SpaceConfig = Field(default_factory=SpaceConfig)
    pose_cube_mm: tuple[float, float, float] = (2000.0, 2000.0, 2000.0)
    pose_cube_voxels: tuple[int, int, int] = (64, 64, 64)
    v2v_width: int = Field(32, ge=1)  # base channel count of the V2V net (32 in VoxelPose)
    max_proposals: int = Field(10, ge=1)  # top-K roots
    proposal_threshold: float = 0.3
    nms_kernel: int = Field(3, ge=1)
    softargmax_beta: float = 100.0


class LossConfig(Strict):
    """Loss weights and the pseudo-label strategy (paper Eq. 11 and Sec. 4)."""

    mode: Literal["self_supervised", "supervised"] = "self_supervised"
    heatmap_2d_weight: float = Field(1.0, ge=0)
    attn_sigma: float = Field(0.1, ge=0)  # sigma: weight of l_attn = MSE(A, 1)
    joint_lambda: float = Field(0.01, ge=0)  # lambda: weight of the L1 joint loss
    joint_lambda_start_epoch: int = Field(0, ge=0)  # pose_net epoch from which lambda is applied
    synthetic_root_weight: float = Field(100.0, ge=0)
    root_consistency_weight: float = Field(1.0, ge=0)
    root_target_sigma_mm: float = Field(200.0, gt=0)
    synthetic_roots_max: int = Field(10, ge=1)
    synthetic_root_z_mm: tuple[float, float] = (500.0, 1200.0)  # sampled mid-hip height range (model z)
    synthetic_root_noise_std: float = Field(0.02, ge=0)  # noise added to rendered synthetic root heatmaps
    supervised_match_mm: float = Field(500.0, gt=0)  # supervised: proposal <-> GT root matching radius
    label_strategy: Literal["soft", "hard", "soft_hard"] = "soft_hard"
    hard_threshold: float = Field(0.7, ge=0, le=1)
    hard_min_joints: int = Field(3, ge=0)
    hard_last_epochs: int = Field(2, ge=0)  # soft_hard: hard labels for the last N pose_net epochs
    aug_rotation_deg: float = Field(45.0, ge=0)
    aug_scale: tuple[float, float] = (0.8, 1.2)
    aug_per_view: bool = False  # False: one rotation/scale per copy for all views (SelfPose3d code); True: per view


class StageConfig(Strict):
    """One training stage: epochs and an Adam schedule (lr multiplied by lr_factor at each step)."""

    epochs: int = Field(0, ge=0)
    lr: float = Field(1e-4, gt=0)
    lr_steps: list[int] = Field(default_factory=list)
    lr_factor: float = Field(0.1, gt=0)


class TrainConfig(Strict):
    """Stage-wise schedule and run-level settings."""

    seed: int = 0
    batch_size: int = Field(1, ge=1)
    loader_workers: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_iters_per_epoch: int | None = Field(None, ge=1)  # cap for quick runs; None = full epoch
    backbone_2d: StageConfig = Field(default_factory=lambda: StageConfig(epochs=20, lr=1e-3, lr_steps=[15, 18]))
    root_net: StageConfig = Field(default_factory=lambda: StageConfig(epochs=3, lr=1e-4))
    pose_net: StageConfig = Field(default_factory=lambda: StageConfig(epochs=8, lr=1e-4, lr_steps=[5, 7]))
    finetune: StageConfig = Field(default_factory=lambda: StageConfig(epochs=0, lr=1e-5))
    grad_clip: float | None = 1.0


class EvalConfig(Strict):
    """Evaluation protocol (VoxelPose / SelfPose3d)."""

    ap_thresholds_mm: list[float] = Field(default_factory=lambda: [25.0, 50.0, 75.0, 100.0, 125.0, 150.0])
    recall_threshold_mm: float = 500.0
    max_test_frames: int | None = Field(None, ge=1)


class Config(Strict):
    """The whole experiment: one object, serialisable to YAML and embedded in checkpoints."""

    name: str = "panoptic"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
