"""`sp3d study cross-scene` (SelfPose3d supplementary Tables 9 / 10): a micro model (random weights, saved as
an engine checkpoint) evaluated on a synthetic dataset with ANOTHER camera rig (AP / MPJPE) and on a tiny
Shelf-format folder (PCP); the PCP / AP code path checked with a ground-truth oracle; CLI outputs, MLflow
source + study run, and the one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import torch
import typer
from conftest import micro_overrides, use_sqlite_store
from dataset_builders import make_shelf
from mlflow.tracking import MlflowClient
from sp3d import tracking
from sp3d.commands.study_cross_scene import add_to
from sp3d.cross_scene import (
    CrossSceneError,
    SceneSpec,
    compose_test_config,
    evaluate_test,
    load_trained,
    parse_tests,
)
from typer.testing import CliRunner

from selfpose3d.config import load_config
from selfpose3d.data.synthetic import generate_dataset
from selfpose3d.engine.checkpoint import save_checkpoint
from selfpose3d.models import SelfPose3dModel

RIG_SEQ = "rig_b"
SMALL_GRID = "model.root_space.voxels=[16,16,4]"


def _save_micro(path: Path, **extra: object) -> Path:
    """A micro `tiny` model (96x64 input, 5 views, random weights) saved as an engine checkpoint."""
    cfg = load_config("tiny", micro_overrides(path.parent / "unused-train-root", **extra))
    torch.manual_seed(0)
    return save_checkpoint(path, cfg=cfg, model=SelfPose3dModel(cfg).state_dict())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A micro checkpoint (trained-side rig: 5 cameras, 4.5 m dome), a synthetic test set from another rig
    (3 cameras on a 3.2 m dome at 1.6 m, other seed and resolution) and a tiny Shelf folder."""
    root = tmp_path_factory.mktemp("cross_scene")
    rig = load_config("tiny", {"synth.sequences": [RIG_SEQ], "synth.frames": 3, "synth.cameras": 3, "synth.seed": 7,
                               "synth.image_resolution": [192, 112], "synth.dome_radius_mm": 3200.0,
                               "synth.camera_height_mm": 1600.0, "synth.outside_dome_prob": 0.0})
    generate_dataset(rig, root / "rig_b")
    make_shelf(root / "shelf", "shelf")
    return SimpleNamespace(root=root, checkpoint=_save_micro(root / "micro.pt"), rig=root / "rig_b",
                           shelf=root / "shelf")


def rig_sets(w: SimpleNamespace, label: str | None = None) -> list[str]:
    """Overrides that point the `tiny` preset at the 3-camera rig."""
    scope = f"{label}:" if label else ""
    return [f"{scope}{s}" for s in (f"dataset.root={w.rig}", "dataset.num_views=3", f"dataset.test_sequences=[{RIG_SEQ}]",
                                    "dataset.test_stride=1", SMALL_GRID)]


def shelf_sets(w: SimpleNamespace, label: str | None = None) -> list[str]:
    """Overrides that point the `shelf` preset at the `make_shelf` folder (3 cameras)."""
    scope = f"{label}:" if label else ""
    return [f"{scope}{s}" for s in (f"dataset.root={w.shelf}", "dataset.camera_nodes=[0,1,2]", "dataset.num_views=3",
                                    "dataset.pseudo_label_file=pred_shelf.pkl", SMALL_GRID)]


def cli() -> typer.Typer:
    """A root app with only the `study cross-scene` command (no Ray import)."""
    app, study = typer.Typer(), typer.Typer()
    add_to(study)
    app.add_typer(study, name="study")
    return app


def invoke(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli(), ["study", "cross-scene", *args])


class Oracle(torch.nn.Module):
    """Predicts the batch's ground truth (optionally shifted by ``offset_mm``): one valid proposal per GT person."""

    def __init__(self, offset_mm: float = 0.0) -> None:
        super().__init__()
        self.offset = offset_mm

    def forward(self, batch: dict) -> dict:
        gt, count = batch["gt_3d"], batch["gt_count"]
        valid = (torch.arange(gt.shape[1])[None] < count[:, None]).float()
        proposals = torch.zeros(*gt.shape[:2], 5)
        proposals[..., :3], proposals[..., 3], proposals[..., 4] = gt[:, :, 2], valid, valid
        return {"proposals": proposals, "poses": gt + self.offset}


# ------------------------------------------------------------------------------------------ library
def test_compose_takes_network_from_train_and_scene_from_test(world: SimpleNamespace) -> None:
    trained = load_trained(str(world.checkpoint))
    spec = parse_tests(["shelf"], [*shelf_sets(world), "model.root_space.voxels=[32,32,8]"])[0]
    cfg, notes = compose_test_config(trained.config, spec)
    a = trained.config
    assert cfg.dataset.kind == "shelf" and cfg.dataset.root == str(world.shelf) and cfg.dataset.num_views == 3
    assert cfg.dataset.image_size == a.dataset.image_size == (96, 64) and cfg.dataset.heatmap_size == (24, 16)
    assert cfg.model.root_space.center_mm == load_config("shelf").model.root_space.center_mm != a.model.root_space.center_mm
    assert cfg.model.root_space.voxels == (32, 32, 8)
    assert cfg.model.model_dump(exclude={"root_space"}) == a.model.model_dump(exclude={"root_space"})
    assert any("dataset.image_size" in n and "[800, 640]" in n for n in notes)
    trained_voxel = (np.array(a.model.root_space.size_mm) / np.array(a.model.root_space.voxels)).round(1).tolist()
    assert any(f"voxel size [250.0, 250.0, 250.0] mm vs {trained_voxel} mm" in n for n in notes)


def test_parse_tests_labels_and_scoped_sets() -> None:
    specs = parse_tests(["tiny", "shelf", "cfg/rig.yaml", "tiny"], ["eval.max_test_frames=2", "shelf:dataset.root=/x"])
    assert [s.label for s in specs] == ["tiny", "shelf", "rig", "tiny-2"]
    assert specs[1].sets == ["eval.max_test_frames=2", "dataset.root=/x"] and specs[0].sets == ["eval.max_test_frames=2"]
    with pytest.raises(CrossSceneError, match="no test set labelled 'campus'"):
        parse_tests(["tiny"], ["campus:dataset.root=/x"])


def test_network_keys_cannot_be_overridden(world: SimpleNamespace) -> None:
    trained = load_trained(str(world.checkpoint))
    for key in ("model.backbone=resnet34", "dataset.image_size=[192,128]"):
        with pytest.raises(CrossSceneError, match=f"--set {key.split('=')[0]}: a network setting"):
            compose_test_config(trained.config, SceneSpec("tiny", [key], "tiny"))
    cfg, _ = compose_test_config(trained.config, SceneSpec("tiny", ["model.proposal_threshold=0.5"], "tiny"))
    assert cfg.model.proposal_threshold == 0.5  # inference-only knob: allowed


def test_gt_oracle_scores_full_pcp_and_ap_through_the_study_path(world: SimpleNamespace) -> None:
    trained = load_trained(str(world.checkpoint))
    shelf_cfg, _ = compose_test_config(trained.config, parse_tests(["shelf"], shelf_sets(world))[0])
    protocol, pcp, frames = evaluate_test(Oracle(), shelf_cfg, torch.device("cpu"), "shelf")
    assert protocol == "pcp" and frames == 3
    assert pcp["actor1"] == pcp["actor2"] == pcp["average"] == 1.0 and math.isnan(pcp["actor3"])  # 2 actors only
    _, shifted, _ = evaluate_test(Oracle(offset_mm=150.0), shelf_cfg, torch.device("cpu"), "shelf")
    assert shifted["average"] < 1.0  # short bones (lower arms ~250 mm) fail at 150 mm error
    rig_cfg, _ = compose_test_config(trained.config, parse_tests(["tiny"], rig_sets(world))[0])
    protocol, ap, frames = evaluate_test(Oracle(), rig_cfg, torch.device("cpu"), "tiny")
    assert protocol == "ap" and frames == 3
    assert ap["ap25"] == ap["ap50"] == ap["ap100"] == 1.0 and ap["mpjpe"] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_evaluates_on_another_rig_and_on_shelf(world: SimpleNamespace, tmp_path: Path) -> None:
    result = invoke("--train", str(world.checkpoint), "--test", "tiny", "--test", "shelf", *sum(
        (["--set", s] for s in rig_sets(world, "tiny") + shelf_sets(world, "shelf")), []),
        "--set", "model.proposal_threshold=-1",  # random weights: keep every proposal so pose_net runs on rig B
        "--out", str(tmp_path / "out"), "--no-track", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for text in ("Table 9 layout", "Table 10 layout", "Actor 3", "Average", "AP25", "MPJPE", "tiny-to-tiny+shelf"):
        assert text in result.output
    report = json.loads((tmp_path / "out" / "cross_scene.json").read_text())
    rig, shelf = report["tests"]
    assert report["train"]["config"] == "tiny" and report["train"]["num_views"] == 5
    assert rig["protocol"] == "ap" and rig["num_views"] == 3 and rig["frames"] == 3
    assert rig["metrics"]["num_gt"] > 0 and rig["metrics"]["num_pred"] == 3 * 4  # 3 frames x model.max_proposals
    for key in ("ap25", "ap50", "ap100"):
        assert 0.0 <= rig["metrics"][key] <= 1.0
    mpjpe = float(rig["metrics"]["mpjpe"])
    assert mpjpe > 0 and (math.isfinite(mpjpe) or rig["metrics"]["ap100"] == 0.0)  # inf only when nothing matched
    assert shelf["protocol"] == "pcp" and shelf["kind"] == "shelf" and shelf["frames"] == 3
    for key in ("actor1", "actor2", "average"):
        assert 0.0 <= shelf["metrics"][key] <= 1.0
    assert shelf["metrics"]["actor3"] == "nan"  # not in this folder: shown as "-"
    md = (tmp_path / "out" / "cross_scene.md").read_text()
    assert "| shelf | shelf | 3 | 3 |" in md and "![cross-scene](cross_scene.png)" in md and "SelfPose3d" in md
    assert matplotlib.image.imread(tmp_path / "out" / "cross_scene.png").shape[2] in (3, 4)


def _error_line(result) -> str:  # noqa: ANN001
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    return lines[0]


def test_cli_errors_are_one_line(world: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--test", "tiny", *sum((["--set", s] for s in rig_sets(world)), []), "--no-track"]
    line = _error_line(invoke("--train", str(tmp_path / "nope.pt"), *args))
    assert "nope.pt: checkpoint file not found" in line
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file at all")
    assert "corrupt.pt: not a readable checkpoint" in _error_line(invoke("--train", str(tmp_path / "corrupt.pt"), *args))
    fourteen = _save_micro(tmp_path / "j14.pt", **{"model.num_joints": 14})
    line = _error_line(invoke("--train", str(fourteen), *args))
    assert "incompatible skeleton" in line and "model.num_joints=14" in line
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates an empty store
    line = _error_line(invoke("--train", "0" * 32, *args, "--tracking-uri", uri))
    assert "no MLflow run with that id or name" in line
    assert "dataset.num_views" in _error_line(invoke("--train", str(world.checkpoint), "--test", "tiny",
                                                     "--set", "dataset.num_views=zero", "--no-track"))


@pytest.fixture()
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty sqlite MLflow store in tmp_path; sp3d settings point at it."""
    uri = use_sqlite_store(monkeypatch, tmp_path)
    try:
        yield uri
    finally:
        tracking.reset()


def test_cli_train_from_mlflow_run_and_study_run(world: SimpleNamespace, mlflow_store: str, tmp_path: Path) -> None:
    import mlflow

    final = tmp_path / "ckpt" / "final.pt"
    final.parent.mkdir()
    final.write_bytes(world.checkpoint.read_bytes())
    tracking.configure()
    with tracking.start_run("sp3d-train", "micro-train", reuse=False) as run:
        tracking.log_artifact_file(final, "checkpoints")  # like run_tracking: no best.pt (never evaluated)
    with tracking.start_run("sp3d-train", "micro-train", reuse=False):
        pass  # a newer run of the same name without checkpoints: skipped
    assert mlflow.active_run() is None
    result = invoke("--train", "micro-train", "--test", "tiny", *sum((["--set", s] for s in rig_sets(world)), []),
                    "--name", "rig-study", "--experiment", "studies", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "has no checkpoints/best.pt; used final.pt" in result.output
    assert (tmp_path / "reports" / "cross-scene-rig-study" / "cross_scene.md").is_file()
    client = MlflowClient(tracking_uri=mlflow_store)
    study = client.search_runs([client.get_experiment_by_name("studies").experiment_id])[0]
    assert study.info.status == "FINISHED" and study.info.run_name == "rig-study"
    assert study.data.tags["sp3d.kind"] == "study" and study.data.tags["sp3d.study"] == "cross-scene"
    assert study.data.params["train.run_id"] == run.info.run_id
    assert study.data.params["test.tiny.config"] == "tiny" and "dataset.num_views=3" in study.data.params["test.tiny.sets"]
    assert 0.0 <= study.data.metrics["tiny/ap50"] <= 1.0
    logged = {Path(a.path).name for a in client.list_artifacts(study.info.run_id, "cross_scene")}
    assert logged == {"cross_scene.md", "cross_scene.json", "cross_scene.png"}
    by_id = invoke("--train", run.info.run_id, "--artifact", "final", "--test", "tiny",
                   *sum((["--set", s] for s in rig_sets(world)), []), "--no-track", "--out", str(tmp_path / "b"))
    assert by_id.exit_code == 0, by_id.output
    np.testing.assert_allclose(json.loads((tmp_path / "b" / "cross_scene.json").read_text())["tests"][0]["metrics"]["ap50"],
                               study.data.metrics["tiny/ap50"])


def test_sp3d_study_group_lists_cross_scene() -> None:
    from sp3d.cli import app

    listing = CliRunner().invoke(app, ["study", "--help"])
    assert listing.exit_code == 0 and "robustness" in listing.output and "cross-scene" in listing.output
    detail = CliRunner().invoke(app, ["study", "cross-scene", "--help"])
    assert detail.exit_code == 0 and "--no-track" in detail.output and "--artifact" in detail.output
