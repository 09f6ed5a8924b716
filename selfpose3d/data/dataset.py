"""`build_dataset` (dispatch on ``dataset.kind``), the multi-view torch Dataset, and `collate_samples`.

A dataset item is a `MultiViewSample` (test / supervised) or, for self-supervised training, a dict
``{"t1", "t2", "t3"}`` of samples of the same frame: t1, t2 with random affines, t3 letterbox only.
Pseudo labels stay in original pixels; the label strategy is applied with ``dataset.label_mode``
(settable, see `label_mode_for_epoch`), persons are sorted by detector score, joints that a copy's
affine maps outside the network input get confidence 0, and persons left with no joint are dropped.
GT and pseudo persons are zero-padded to ``dataset.max_people`` (extra persons are dropped with a warning).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from selfpose3d.config.schema import Config
from selfpose3d.data.augment import copy_affines, letterbox_affines, mask_outside, to_network_input
from selfpose3d.data.io import DatasetError, FrameRecord, read_image
from selfpose3d.data.joints import NUM_JOINTS
from selfpose3d.data.panoptic import PanopticReader
from selfpose3d.data.pseudo_labels import (
    LABEL_MODES,
    Detections,
    LabelMode,
    label_mode_for_epoch,
    pad_people,
    panoptic_pseudo,
)
from selfpose3d.data.shelf_campus import ShelfCampusReader
from selfpose3d.data.types import MultiViewSample
from selfpose3d.geometry.cameras import stack_cameras

__all__ = ["DatasetError", "MultiViewDataset", "build_dataset", "collate_samples", "label_mode_for_epoch"]
log = logging.getLogger(__name__)
Item = MultiViewSample | dict[str, MultiViewSample]


class FrameReader(Protocol):
    """What `MultiViewDataset` needs from a reader."""

    def __len__(self) -> int: ...

    def record(self, index: int) -> FrameRecord: ...


class MultiViewDataset(Dataset):
    """Multi-view frames of one reader as `MultiViewSample` (``copies=False``) or ``{"t1","t2","t3"}`` dicts."""

    def __init__(self, cfg: Config, reader: FrameReader, copies: bool, label_mode: LabelMode = "soft") -> None:
        self.cfg = cfg
        self.reader = reader
        self.copies = copies
        self.label_mode = label_mode

    @property
    def label_mode(self) -> LabelMode:
        """Pseudo-label strategy applied by `__getitem__`: "soft" or "hard"."""
        return self._label_mode

    @label_mode.setter
    def label_mode(self, mode: LabelMode) -> None:
        if mode not in LABEL_MODES:
            raise ValueError(f"dataset.label_mode must be one of {LABEL_MODES}, got {mode!r}")
        self._label_mode = mode

    def __len__(self) -> int:
        """Number of frames."""
        return len(self.reader)

    def __getitem__(self, index: int) -> Item:
        """Load frame ``index``: images warped per copy, pseudo labels filtered, GT padded."""
        rec = self.reader.record(index)
        ds = self.cfg.dataset
        images = [read_image(path, cam.resolution) for path, cam in zip(rec.image_paths, rec.cameras, strict=True)]
        resolutions = [cam.resolution for cam in rec.cameras]
        if self.copies:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
            affines = copy_affines(rng, resolutions, ds.image_size, self.cfg.loss, self.cfg.loss.aug_per_view)
        else:
            affines = {"t3": letterbox_affines(resolutions, ds.image_size)}
        pseudo = [panoptic_pseudo_view(rec, v, self.label_mode, self.cfg) for v in range(len(rec.cameras))]
        samples = {name: self._sample(rec, images, aff, pseudo, name) for name, aff in affines.items()}
        return samples if self.copies else samples["t3"]

    def _sample(self, rec: FrameRecord, images: list[np.ndarray], affines: np.ndarray,
                pseudo: list[np.ndarray], copy: str) -> MultiViewSample:
        """One `MultiViewSample` of ``rec`` for the affines (V, 2, 3) of one copy."""
        ds = self.cfg.dataset
        inputs = np.stack([to_network_input(img, aff, ds.image_size) for img, aff in zip(images, affines, strict=True)])
        views = [_visible_people(mask_outside(p, aff, ds.image_size)) for p, aff in zip(pseudo, affines, strict=True)]
        padded = [pad_people(p, ds.max_people) for p in views]
        gt_3d, gt_vis, gt_count = _pad_gt(rec, ds.max_people)
        meta = {"dataset": ds.kind, "sequence": rec.sequence, "frame": rec.frame, "copy": copy,
                "cameras": [c.name for c in rec.cameras], "image_paths": [str(p) for p in rec.image_paths],
                "label_mode": self.label_mode, **rec.meta}
        return MultiViewSample(
            images=inputs, cameras=rec.cameras, affines=affines,
            pseudo_2d=np.stack([p for p, _ in padded]), pseudo_count=np.array([c for _, c in padded]),
            gt_3d=gt_3d, gt_vis=gt_vis, gt_count=gt_count, meta=meta,
        )


def panoptic_pseudo_view(rec: FrameRecord, view: int, mode: LabelMode, cfg: Config) -> np.ndarray:
    """Filtered Panoptic-15 pseudo poses (P, 15, 3) of one view, sorted by detector score."""
    det = Detections(rec.pseudo_coco[view], rec.pseudo_scores[view])
    return panoptic_pseudo(det, mode, cfg.loss)[0]


def _visible_people(poses: np.ndarray) -> np.ndarray:
    """Drop persons (P, 15, 3) whose confidences are all zero."""
    return poses[poses[..., 2].max(axis=-1, initial=0.0) > 0] if len(poses) else poses


def _pad_gt(rec: FrameRecord, max_people: int) -> tuple[np.ndarray, np.ndarray, int]:
    """GT (M, 15, 3) / (M, 15) -> zero-padded (max_people, 15, 3) float32, (max_people, 15) bool, count."""
    count = min(len(rec.gt_3d), max_people)
    if len(rec.gt_3d) > max_people:
        log.warning("%s frame %d: %d GT persons > dataset.max_people=%d, extra dropped",
                    rec.sequence, rec.frame, len(rec.gt_3d), max_people)
    gt_3d = np.zeros((max_people, NUM_JOINTS, 3), np.float32)
    gt_vis = np.zeros((max_people, NUM_JOINTS), bool)
    gt_3d[:count], gt_vis[:count] = rec.gt_3d[:count], rec.gt_vis[:count]
    return gt_3d, gt_vis, count


def build_dataset(cfg: Config, split: Literal["train", "test"], copies: bool | None = None) -> MultiViewDataset:
    """Build the dataset of ``split`` for ``cfg.dataset.kind`` (synthetic uses the Panoptic reader).

    copies: return ``{"t1","t2","t3"}`` items; default True only for self-supervised training. Pseudo
    labels are required for self-supervised training and optional otherwise. Raises `DatasetError`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ds = cfg.dataset
    self_sup_train = split == "train" and cfg.loss.mode == "self_supervised"
    copies = self_sup_train if copies is None else copies
    stride = ds.train_stride if split == "train" else ds.test_stride
    reader: FrameReader
    if ds.kind in ("synthetic", "panoptic"):
        sequences = ds.train_sequences if split == "train" else ds.test_sequences
        reader = PanopticReader(cfg, sequences, stride, need_pseudo=self_sup_train)
    else:
        reader = ShelfCampusReader(cfg, split, stride, need_pseudo=self_sup_train)
    mode: LabelMode = "hard" if cfg.loss.label_strategy == "hard" else "soft"
    return MultiViewDataset(cfg, reader, copies=copies, label_mode=mode)


def _pad_stack(arrays: list[np.ndarray], size: int) -> np.ndarray:
    """Stack arrays whose axis 0 (persons) may differ, zero-padding each to ``size``."""
    out = np.zeros((len(arrays), size) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a[:size]
    return out


def _collate(samples: list[MultiViewSample]) -> dict[str, Any]:
    """Batch of `MultiViewSample` -> the tensor dict of docs/architecture.md."""
    cams = [stack_cameras(s.cameras) for s in samples]
    people = max(s.pseudo_2d.shape[1] for s in samples)
    gts = [s.gt_3d if s.gt_3d is not None else np.zeros((0, NUM_JOINTS, 3), np.float32) for s in samples]
    vis = [s.gt_vis if s.gt_vis is not None else np.zeros((0, NUM_JOINTS), bool) for s in samples]
    gt_people = max([len(g) for g in gts] + [1])
    pseudo = np.stack([_pad_stack(list(s.pseudo_2d), people) for s in samples])
    return {
        "images": torch.from_numpy(np.stack([s.images for s in samples]).astype(np.float32)),
        **{key: torch.stack([c[key] for c in cams]) for key in ("K", "R", "t", "dist")},
        "affine": torch.from_numpy(np.stack([s.affines for s in samples]).astype(np.float32)),
        "pseudo_2d": torch.from_numpy(pseudo.astype(np.float32)),
        "pseudo_count": torch.from_numpy(np.stack([s.pseudo_count for s in samples]).astype(np.int64)),
        "gt_3d": torch.from_numpy(_pad_stack(gts, gt_people).astype(np.float32)),
        "gt_vis": torch.from_numpy(_pad_stack(vis, gt_people).astype(bool)),
        "gt_count": torch.tensor([s.gt_count for s in samples], dtype=torch.long),
        "meta": [s.meta for s in samples],
    }


def collate_samples(items: list[Item]) -> dict[str, Any]:
    """Collate dataset items: samples -> batch dict (see docs/architecture.md); copy dicts -> ``{copy: batch}``.

    Person axes are zero-padded to the largest in the batch (datasets already pad to dataset.max_people).
    """
    if not items:
        raise ValueError("collate_samples: empty batch")
    if isinstance(items[0], dict):
        return {name: _collate([item[name] for item in items]) for name in items[0]}
    return _collate(list(items))
