"""Cross-scene generalisation study (SelfPose3d supplementary Tables 9 and 10): evaluate a model trained on
one dataset / camera rig (A) on other datasets / rigs (B), without fine-tuning.

A (the trained model): an engine checkpoint file, or an MLflow run (id or run name) whose
``checkpoints/best.pt`` (or ``final.pt``) artifact, as logged by `sp3d.run_tracking`, is downloaded.
B (each test set): a preset (panoptic, shelf, campus, tiny) or YAML plus ``--set KEY=VALUE`` overrides.

The evaluation config of a test set is composed from both sides:

- from A (the network): every ``model.*`` key except the root space, and ``dataset.image_size`` /
  ``dataset.heatmap_size`` (the network input; B's images are letterboxed into it, whatever their
  resolution). A ``--set`` of one of those keys is an error.
- from B (the scene): the dataset (kind, root, cameras, views, frames), ``eval.*`` and
  ``model.root_space`` — the voxel grid the root net searches for people. The root space is geometry, not
  learned weights: the projection and V2V nets are fully convolutional and the grid only says where B's
  floor area lies, so it must cover B's scene (A's grid would miss B's people). A different voxel SIZE
  (mm per voxel) from A's is allowed and reported as a note (the learned filters then see the scene at
  another scale). Inference-only knobs (``model.max_proposals``, ``model.proposal_threshold``,
  ``model.nms_kernel``) keep A's values unless given with ``--set``.
- compatibility: the skeleton must match (A's ``model.num_joints`` / ``model.root_joint`` against the test
  data's Panoptic-15 joints) and B's root grid must suit V2V (each axis divisible by 4); otherwise
  `CrossSceneError` names the key.

Metrics: Shelf / Campus -> PCP per actor and the average of actors 1-3 (Table 9; predictions mapped to the
14-joint skeleton with `panoptic15_to_shelf14`); Panoptic / synthetic -> AP@25..150, MPJPE, Recall@500
(Table 10). Rendering and logging: `sp3d.cross_scene_report`.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from selfpose3d.config import Config, config_hash, config_to_dict, load_config, parse_overrides
from selfpose3d.data.dataset import build_dataset
from selfpose3d.data.joints import NUM_JOINTS, ROOT_JOINT
from selfpose3d.data.shelf_campus import panoptic15_to_shelf14
from selfpose3d.engine.checkpoint import CheckpointError, load_checkpoint
from selfpose3d.engine.evaluate import predict_frames
from selfpose3d.engine.trainer import pick_device
from selfpose3d.evaluation import EvaluationError, FrameResult, evaluate_pcp, evaluate_poses
from selfpose3d.models import SelfPose3dModel
from selfpose3d.models.model import ModelConfigError

PCP_KINDS = ("shelf", "campus")
ARTIFACT_DIR = "checkpoints"  # where sp3d.run_tracking logs best.pt / final.pt
ARTIFACTS = ("best", "final")
NETWORK_INPUT_KEYS = ("image_size", "heatmap_size")  # dataset.* keys that belong to the network
TEST_MODEL_KEYS = ("root_space", "max_proposals", "proposal_threshold", "nms_kernel")  # settable for B
RUN_ID = re.compile(r"[0-9a-f]{32}")
TABLE_ACTORS = 3  # Table 9 reports actors 1-3 (and their average)
VOXEL_SIZE_TOLERANCE = 0.01  # relative difference of mm-per-voxel reported as a note


class CrossSceneError(ValueError):
    """The cross-scene study cannot run; the message is one line naming the input (file, run, key)."""


@dataclass
class TrainedModel:
    """Side A. source: as given; checkpoint: local path or ``runs:/<id>/checkpoints/<which>.pt``;
    config: the embedded training config; state: the model state dict; run_id: MLflow run (or None)."""

    source: str
    checkpoint: str
    config: Config
    state: dict[str, torch.Tensor]
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SceneSpec:
    """Side B: a preset name or YAML path, its ``KEY=VALUE`` overrides and a unique row label."""

    spec: str
    sets: list[str]
    label: str


@dataclass
class SceneResult:
    """One row: protocol "pcp" (metrics actor1.., average, recall500, bone groups as fractions) or "ap"
    (ap25..ap150 and recall fractions, mpjpe mm); frames evaluated; views used; notes on the composition."""

    spec: SceneSpec
    kind: str
    protocol: str
    metrics: dict[str, float]
    frames: int
    views: int
    root_space: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass
class CrossSceneResult:
    """The study: its name, side A and one `SceneResult` per test set (in the order given)."""

    name: str
    train: TrainedModel
    rows: list[SceneResult]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (metrics as fractions / mm, exactly as computed)."""
        cfg = self.train.config
        return {
            "study": "cross-scene", "name": self.name,
            "train": {"source": self.train.source, "checkpoint": self.train.checkpoint, "run_id": self.train.run_id,
                      "config": cfg.name, "config_hash": config_hash(cfg), "kind": cfg.dataset.kind,
                      "num_views": cfg.dataset.num_views, "root_space": config_to_dict(cfg)["model"]["root_space"],
                      "notes": self.train.notes},
            "tests": [{"label": r.spec.label, "config": r.spec.spec, "sets": r.spec.sets, "kind": r.kind,
                       "protocol": r.protocol, "frames": r.frames, "num_views": r.views, "root_space": r.root_space,
                       "metrics": r.metrics, "notes": r.notes} for r in self.rows],
        }


# ------------------------------------------------------------------------------------------ test specs
def _label(spec: str) -> str:
    path = Path(spec)
    return path.stem if path.suffix in (".yaml", ".yml") else spec


def _scope(text: str) -> tuple[str | None, str]:
    """``"shelf:dataset.root=/x"`` -> ("shelf", "dataset.root=/x"); unscoped -> (None, text)."""
    key = text.split("=", 1)[0]
    if ":" in key:
        scope, rest = text.split(":", 1)
        return scope.strip(), rest
    return None, text


def parse_tests(tests: Sequence[str], sets: Sequence[str] = ()) -> list[SceneSpec]:
    """``--test`` values + ``--set`` overrides -> `SceneSpec` list. A ``KEY=VALUE`` applies to every test set,
    ``LABEL:KEY=VALUE`` only to the one labelled LABEL (preset name or YAML stem; repeated labels get -2, -3).
    Raises `CrossSceneError` for no test set or an unknown LABEL."""
    if not tests:
        raise CrossSceneError("no test set: pass --test PRESET_OR_YAML (shelf, campus, panoptic, tiny or a file)")
    bases = [_label(spec) for spec in tests]
    labels = [b if bases[:i].count(b) == 0 else f"{b}-{bases[:i].count(b) + 1}" for i, b in enumerate(bases)]
    specs = [SceneSpec(spec, [], label) for spec, label in zip(tests, labels, strict=True)]
    for text in sets:
        scope, item = _scope(text)
        targets = [s for s in specs if scope is None or s.label == scope]
        if not targets:
            raise CrossSceneError(f"--set {text!r}: no test set labelled {scope!r} (labels: {', '.join(labels)})")
        for s in targets:
            s.sets.append(item)
    return specs


# ------------------------------------------------------------------------------------------- side A
def _from_payload(source: str, checkpoint: str, payload: dict[str, Any], run_id: str | None = None) -> TrainedModel:
    return TrainedModel(source=source, checkpoint=checkpoint, config=payload["config"], state=payload["model"],
                        run_id=run_id)


def _looks_like_path(source: str) -> bool:
    return Path(source).exists() or "/" in source or source.endswith((".pt", ".pth"))


def load_trained(source: str, which: str = "best", tracking_uri: str | None = None) -> TrainedModel:
    """Side A from a local checkpoint file, else an MLflow run id / run name (artifact
    ``checkpoints/<which>.pt``, falling back to the other of best / final). Raises `CheckpointError`
    (missing / corrupt file) or `CrossSceneError` (unknown run, no checkpoint artifact, MLflow unreachable)."""
    if which not in ARTIFACTS:
        raise CrossSceneError(f"--artifact {which!r}: expected one of {', '.join(ARTIFACTS)}")
    if _looks_like_path(source):
        return _from_payload(source, str(source), load_checkpoint(source, map_location="cpu"))
    return _load_from_mlflow(source, which, tracking_uri)


def _candidate_runs(client: Any, source: str, uri: str) -> list[Any]:
    """The run with id ``source``, else the runs named ``source`` (sweep / study parents left out), finished
    ones first, newest first. Raises `CrossSceneError` when there is none."""
    from mlflow.exceptions import MlflowException

    from sp3d.redact import scrub_text

    if RUN_ID.fullmatch(source):
        try:
            return [client.get_run(source)]
        except MlflowException:
            pass
    runs = []
    if "'" not in source:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.`mlflow.runName` = '{source}'",
                                  order_by=["attributes.start_time DESC"], max_results=50) if experiments else []
    runs = [r for r in runs if r.data.tags.get("sp3d.kind") not in ("sweep", "study")]
    if not runs:
        raise CrossSceneError(f"--train {source!r}: no such checkpoint file and no MLflow run with that id or "
                              f"name at {scrub_text(uri)}")
    return sorted(runs, key=lambda r: r.info.status != "FINISHED")


def _load_from_mlflow(source: str, which: str, tracking_uri: str | None) -> TrainedModel:
    import mlflow.artifacts

    from sp3d.compare_source import CompareError, open_client

    try:
        client, uri = open_client(tracking_uri)
    except CompareError as err:
        raise CrossSceneError(f"--train {source!r} is not a file; {err}") from None
    order = [which] + [a for a in ARTIFACTS if a != which]
    for run in _candidate_runs(client, source, uri):
        logged = {Path(a.path).stem for a in client.list_artifacts(run.info.run_id, ARTIFACT_DIR)}
        pick = next((a for a in order if a in logged), None)
        if pick is not None:
            break
    else:
        raise CrossSceneError(f"--train {source!r}: run {run.info.run_id} has no {ARTIFACT_DIR}/best.pt or "
                              "final.pt artifact")
    run_id, artifact = run.info.run_id, f"{ARTIFACT_DIR}/{pick}.pt"
    with tempfile.TemporaryDirectory(prefix="sp3d-cross-scene-") as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp,
                                                   tracking_uri=uri)
        trained = _from_payload(source, f"runs:/{run_id}/{artifact}", load_checkpoint(path, map_location="cpu"),
                                run_id)
    if pick != which:
        trained.notes.append(f"run {run_id} has no {ARTIFACT_DIR}/{which}.pt; used {pick}.pt")
    return trained


# ------------------------------------------------------------------------------------ config composing
def _set_keys(sets: Sequence[str]) -> list[str]:
    parse_overrides(list(sets))  # raises ConfigError on a malformed item
    return [s.split("=", 1)[0].strip() for s in sets]


def _check_set_keys(keys: Sequence[str], label: str) -> None:
    for key in keys:
        parts = key.split(".")
        network = (parts[0] == "model" and (len(parts) < 2 or parts[1] not in TEST_MODEL_KEYS)) or (
            parts[0] == "dataset" and len(parts) > 1 and parts[1] in NETWORK_INPUT_KEYS)
        if network:
            raise CrossSceneError(
                f"{label}: --set {key}: a network setting, taken from the trained model; the test side may set "
                f"dataset.*, eval.* and model.{{{','.join(TEST_MODEL_KEYS)}}} (not dataset.image_size/heatmap_size)")


def check_skeleton(train_cfg: Config, test_cfg: Config, label: str) -> None:
    """Raise `CrossSceneError` unless the trained network's joints match the test data's (Panoptic-15)."""
    a, b = train_cfg.model, test_cfg.model
    joints = {NUM_JOINTS, b.num_joints} - {a.num_joints}
    if joints:
        raise CrossSceneError(
            f"{label}: incompatible skeleton: the trained model has model.num_joints={a.num_joints}, the test data "
            f"has {min(joints)} joints (Panoptic-{NUM_JOINTS}); cross-scene evaluation needs the same joints")
    roots = {ROOT_JOINT, b.root_joint} - {a.root_joint}
    if roots:
        raise CrossSceneError(f"{label}: incompatible root joint: the trained model has model.root_joint="
                              f"{a.root_joint}, the test data uses joint {min(roots)} (mid-hip)")


def _voxel_mm(space: dict[str, Any]) -> np.ndarray:
    return np.asarray(space["size_mm"], float) / np.asarray(space["voxels"], float)


def _space_note(train_space: dict[str, Any], test_space: dict[str, Any], label: str) -> list[str]:
    a, b = _voxel_mm(train_space), _voxel_mm(test_space)
    note = (f"model.root_space from {label}: centre {test_space['center_mm']} mm, size {test_space['size_mm']} mm, "
            f"voxels {test_space['voxels']}")
    if np.any(np.abs(b - a) > VOXEL_SIZE_TOLERANCE * a):
        note += f"; voxel size {np.round(b, 1).tolist()} mm vs {np.round(a, 1).tolist()} mm in training"
    return [note]


def compose_test_config(train_cfg: Config, spec: SceneSpec) -> tuple[Config, list[str]]:
    """The evaluation config of one test set (rules: module docstring) and notes on what was taken from
    where. Raises `ConfigError` (bad preset / override value) or `CrossSceneError` (network key set,
    incompatible skeleton, unusable root grid)."""
    keys = _set_keys(spec.sets)
    _check_set_keys(keys, spec.label)
    test_cfg = load_config(spec.spec, spec.sets)
    check_skeleton(train_cfg, test_cfg, spec.label)
    a, b = config_to_dict(train_cfg), config_to_dict(test_cfg)
    model = dict(a["model"], root_space=b["model"]["root_space"], pretrained_backbone=None)
    for key in {k.split(".")[1] for k in keys if k.startswith("model.")} - {"root_space"}:
        model[key] = b["model"][key]
    notes = _space_note(a["model"]["root_space"], b["model"]["root_space"], spec.label)
    for key in NETWORK_INPUT_KEYS:
        if b["dataset"][key] != a["dataset"][key]:
            notes.append(f"dataset.{key}: {spec.label} says {b['dataset'][key]}, using the trained model's "
                         f"{a['dataset'][key]} (network input)")
        b["dataset"][key] = a["dataset"][key]
    b["model"] = model
    try:
        return Config.model_validate(b), notes
    except ValidationError as err:
        first = err.errors()[0]
        raise CrossSceneError(f"{spec.label}: composed config: {'.'.join(map(str, first['loc']))}: "
                              f"{first['msg']}") from None


def build_model(trained: TrainedModel, cfg: Config, device: torch.device, label: str) -> SelfPose3dModel:
    """A's weights in a network built for ``cfg`` (A's shapes, B's root space) on ``device``, in eval mode."""
    try:
        model = SelfPose3dModel(cfg)
    except ModelConfigError as err:
        raise CrossSceneError(f"{label}: {err}") from None
    try:
        model.load_state_dict(trained.state)
    except RuntimeError as err:
        raise CheckpointError(f"{trained.checkpoint}: weights do not fit the config's model "
                              f"({str(err).splitlines()[0]})") from None
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------ metrics
def shelf_pcp(frames: Sequence[FrameResult], metas: Sequence[dict[str, Any]], num_actors: int,
              recall_threshold_mm: float | None = None) -> dict[str, float]:
    """Shelf / Campus PCP of Panoptic-15 predictions (Table 9 protocol, `evaluate_pcp`).

    frames[f].pred_poses (K, 15, 3) mm with pred_valid; metas[f]: the reader's ``gt_shelf14`` (M, 14, 3) mm
    and ``gt_ids`` (M actor indices < num_actors). Predictions go to Shelf-14 with `panoptic15_to_shelf14`.
    Returns actor1..actorN, average (actors 1-3), recall500 and bone groups, as fractions in [0, 1].
    """
    if len(frames) != len(metas):
        raise EvaluationError(f"shelf_pcp: {len(frames)} frames but {len(metas)} metas")
    preds, valid, actors, present = [], [], [], []
    for fr, meta in zip(frames, metas, strict=True):
        gt = np.full((num_actors, 14, 3), np.nan)
        ids = [int(i) for i in meta.get("gt_ids", [])]
        if ids:
            gt[ids] = np.asarray(meta["gt_shelf14"], float).reshape(len(ids), 14, 3)
        actors.append(gt)
        present.append(np.isfinite(gt).all(axis=(1, 2)))
        preds.append(panoptic15_to_shelf14(fr.pred_poses) if len(fr.pred_poses) else np.zeros((0, 14, 3)))
        valid.append(fr.pred_valid)
    return evaluate_pcp(preds, actors, present, valid, recall_threshold_mm=recall_threshold_mm)


def evaluate_test(model: torch.nn.Module, cfg: Config, device: torch.device, label: str,
                  max_frames: int | None = None) -> tuple[str, dict[str, float], int]:
    """Predict B's test split -> (protocol "pcp" | "ap", metrics, frames evaluated). Raises `DatasetError`
    from the readers and `CrossSceneError` when the frames hold no ground truth."""
    dataset = build_dataset(cfg, "test", copies=False)
    frames = predict_frames(model, dataset, cfg, device, max_frames)
    try:
        if cfg.dataset.kind in PCP_KINDS:
            metas = [dataset.reader.record(i).meta for i in range(len(frames))]
            num_actors = max(len(dataset.reader.joints), TABLE_ACTORS)  # absent actors -> NaN, as Table 9 shows 1-3
            return "pcp", shelf_pcp(frames, metas, num_actors, cfg.eval.recall_threshold_mm), len(frames)
        return "ap", evaluate_poses(frames, cfg.eval.ap_thresholds_mm, cfg.eval.recall_threshold_mm), len(frames)
    except EvaluationError as err:
        raise CrossSceneError(f"{label}: cannot score {len(frames)} test frames of {cfg.dataset.root}: {err}") from None


def run_cross_scene(train: str, tests: Sequence[str], sets: Sequence[str] = (), *, which: str = "best",
                    name: str | None = None, max_frames: int | None = None, device: str = "auto",
                    tracking_uri: str | None = None,
                    on_test: Callable[[SceneSpec, Config], None] | None = None) -> CrossSceneResult:
    """Load A, then for every test set compose its config, rebuild the network and evaluate it.

    train: checkpoint path / MLflow run id or name; tests: presets / YAML paths; sets: ``[LABEL:]KEY=VALUE``;
    which: "best" | "final" artifact of an MLflow run; name: study name (default ``<A config>-to-<labels>``);
    max_frames: test frames per set (default: each test config's eval.max_test_frames); on_test: called
    before each evaluation. Returns the `CrossSceneResult`.
    """
    specs = parse_tests(tests, sets)
    trained = load_trained(train, which, tracking_uri)
    torch_device = pick_device(device)
    rows = []
    for spec in specs:
        cfg, notes = compose_test_config(trained.config, spec)
        if on_test is not None:
            on_test(spec, cfg)
        model = build_model(trained, cfg, torch_device, spec.label)
        protocol, metrics, frames = evaluate_test(model, cfg, torch_device, spec.label, max_frames)
        rows.append(SceneResult(spec=spec, kind=cfg.dataset.kind, protocol=protocol, metrics=metrics, frames=frames,
                               views=cfg.dataset.num_views, root_space=config_to_dict(cfg)["model"]["root_space"],
                               notes=notes))
    study = name or f"{trained.config.name}-to-{'+'.join(s.label for s in specs)}"
    return CrossSceneResult(name=study, train=trained, rows=rows)


__all__ = [
    "CrossSceneError", "CrossSceneResult", "SceneResult", "SceneSpec", "TrainedModel", "build_model",
    "check_skeleton", "compose_test_config", "evaluate_test", "load_trained", "parse_tests", "run_cross_scene",
    "shelf_pcp",
]
