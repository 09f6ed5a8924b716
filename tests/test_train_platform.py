"""Ray Train + MLflow + S3 training platform against REAL processes: a local Ray instance (once per session),
the moto S3 endpoint and the MLflow server fixtures, and the `sp3d train` / `sp3d eval` CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from conftest import micro_overrides
from mlflow.tracking import MlflowClient
from sp3d.cli import app
from sp3d.run_tracking import EPOCH_METRIC, FINAL_TAG, RESUME_TAG
from sp3d.settings import load_settings
from sp3d.storage import s3_client
from typer.testing import CliRunner

from selfpose3d.config import load_config
from selfpose3d.engine.checkpoint import load_checkpoint

RAY_BUCKET = "sp3d-test-ray"
# 2 epochs (backbone_2d, then pose_net with evaluation), 1 step each, 2 views, one shared backbone
RAY_EXTRA = {"train.max_iters_per_epoch": 1, "train.root_net.epochs": 0, "dataset.num_views": 2,
             "model.attn_backbone": "shared"}


pytestmark = pytest.mark.usefixtures("isolated_platform_env")


def _ray_config(root: Path):
    return load_config("tiny", micro_overrides(root, **RAY_EXTRA))


def _keys(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _assert_no_duplicate_steps(client: MlflowClient, run_id: str) -> None:
    for key in client.get_run(run_id).data.metrics:
        steps = _steps(client, run_id, key)
        assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {steps}"


@pytest.mark.slow
def test_ray_train_two_workers_s3_storage_mlflow_server(ray_session, s3_server: str, mlflow_server: str,
                                                        mlflow_server_bucket: str, synthetic_tiny_root: Path,
                                                        tmp_path: Path) -> None:
    from sp3d.train_loop import run_training

    settings = load_settings(state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server, s3_endpoint=s3_server)
    result = run_training(_ray_config(synthetic_tiny_root), run_name="ray-s3", storage=f"s3://{RAY_BUCKET}/ray",
                          experiment="train-platform", workers=2, cpus_per_worker=1, settings=settings,
                          progress=False)
    assert result.checkpoint and result.checkpoint.startswith(f"s3://{RAY_BUCKET}/ray/ray-s3/")
    assert "eval/ap25" in result.metrics and "train/total" in result.metrics

    s3 = s3_client(settings)
    ray_keys = _keys(s3, RAY_BUCKET, "ray/ray-s3/")
    assert any(k.endswith("/model.pt") for k in ray_keys), ray_keys
    info_key = next(k for k in ray_keys if k.endswith("/sp3d_run.json") and "epoch_0001" in k)
    info = json.loads(s3.get_object(Bucket=RAY_BUCKET, Key=info_key)["Body"].read())
    assert info["mlflow_run_id"] == result.mlflow_run_id and info["global_epoch"] == 1

    art_keys = [k for k in _keys(s3, mlflow_server_bucket, "mlartifacts/") if result.mlflow_run_id in k]
    for name in ("checkpoints/final.pt", "checkpoints/best.pt", "plots/learning_curves.png",
                 "plots/pose_snapshot.png", "config.yaml"):
        assert any(k.endswith(name) for k in art_keys), (name, art_keys)

    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["train-platform"], filter_string="tags.mlflow.runName = 'ray-s3'",
                              output_format="list")
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_iters_per_epoch"] == "1" and run.data.tags["sp3d.config_hash"]
    client = MlflowClient(mlflow_server)
    assert _steps(client, run.info.run_id, "train/total") == [0, 1]
    assert _steps(client, run.info.run_id, "eval/ap25") == [1]  # only pose_net epochs are evaluated
    assert "sp3d-test-secret" not in json.dumps({**run.data.params, **run.data.tags})


@pytest.mark.slow
def test_non_finite_loss_on_ray_fails_once_and_is_not_retrained(ray_session, synthetic_tiny_root: Path,
                                                                  tmp_path: Path) -> None:
    from ray.train import TrainingFailedError
    from sp3d.train_loop import FAILED_FILE, root_cause, run_training

    from selfpose3d.engine.trainer import NonFiniteLossError

    cfg = load_config("tiny", micro_overrides(synthetic_tiny_root, **{**RAY_EXTRA, "train.max_iters_per_epoch": 3,
                                                                       "train.backbone_2d.lr": 1e20}))
    settings = load_settings(state_dir=tmp_path / "state")
    kwargs = {"run_name": "diverges", "storage": tmp_path / "runs", "experiment": "train-nan", "settings": settings,
              "progress": False, "cpus_per_worker": 1}
    with pytest.raises(TrainingFailedError) as failed:
        run_training(cfg, max_failures=2, **kwargs)
    cause = root_cause(failed.value)
    # the worker group Ray restarted read the recorded failure and stopped at once instead of retraining
    assert isinstance(cause, NonFiniteLossError) and "recorded by an earlier attempt" in str(cause), cause
    assert "stage backbone_2d, epoch 0, step 1: l_2d" in str(cause)
    assert json.loads((tmp_path / "runs" / "diverges" / FAILED_FILE).read_text())["error"].startswith("non-finite")
    with pytest.raises(NonFiniteLossError, match="not retried"):  # a re-run fails before Ray starts anything
        run_training(cfg, max_failures=2, **kwargs)
    client = MlflowClient(settings.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("train-nan").experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_with_one_mlflow_run(ray_session, synthetic_tiny_root: Path,
                                                                   tmp_path: Path) -> None:
    from sp3d.train_loop import run_training

    settings = load_settings(state_dir=tmp_path / "state")  # local sqlite tracking
    marker = tmp_path / "rank1-exited"
    kwargs = {"run_name": "killed", "storage": tmp_path / "runs", "experiment": "train-kill", "workers": 2,
              "cpus_per_worker": 1, "settings": settings, "progress": False}
    cfg = _ray_config(synthetic_tiny_root)
    result = run_training(cfg, max_failures=2, fault_injection={"rank": 1, "global_epoch": 1, "marker": str(marker),
                                                          "run_dir": str(tmp_path / "runs" / "killed")},
                          **kwargs)
    assert marker.is_file(), "the fault was not injected"
    client = MlflowClient(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("train-kill").experiment_id])
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id]
    run_id = result.mlflow_run_id
    # the restarted worker group started at epoch 1 (after the epoch-0 checkpoint), not from scratch
    assert client.get_run(run_id).data.tags[RESUME_TAG] == "0,1"
    assert _steps(client, run_id, EPOCH_METRIC) == [0, 1]
    _assert_no_duplicate_steps(client, run_id)
    final = load_checkpoint(Path(result.checkpoint) / "model.pt")
    assert [h["global_epoch"] for h in final["history"]] == [0, 1]

    # the same name + storage again: Ray restores the finished run, nothing is retrained or re-logged
    again = run_training(cfg, **kwargs)
    assert again.mlflow_run_id == run_id
    run = client.get_run(run_id)
    assert run.data.tags[RESUME_TAG] == "0,1,2" and run.data.tags[FINAL_TAG] == "1"
    assert run.info.status == "FINISHED"
    assert _steps(client, run_id, EPOCH_METRIC) == [0, 1]
    _assert_no_duplicate_steps(client, run_id)


@pytest.mark.slow
def test_cli_train_local_then_eval(synthetic_tiny_root: Path, tmp_path: Path, s3_server: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sets = [f"{k}={json.dumps(v)}" for k, v in micro_overrides(synthetic_tiny_root, **RAY_EXTRA).items()]
    args = ["train", "--local", "-c", "tiny", "--storage", str(tmp_path / "runs"), "--name", "cli-local",
            "--experiment", "cli"]
    for item in sets:
        args += ["-s", item]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    for text in ("AP25", "MPJPE", "MLflow: experiment cli", "mlflow ui --backend-store-uri sqlite:///"):
        assert text in out.output, out.output
    ckpt = tmp_path / "runs" / "cli-local" / "checkpoint" / "model.pt"
    assert [h["global_epoch"] for h in load_checkpoint(ckpt)["history"]] == [0, 1]
    client = MlflowClient(load_settings().tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert _steps(client, run.info.run_id, EPOCH_METRIC) == [0, 1]

    report = tmp_path / "eval.json"
    out = CliRunner().invoke(app, ["eval", "--checkpoint", str(ckpt), "--per-sequence", "--out", str(report)])
    assert out.exit_code == 0, out.output
    assert "| sequence |" in out.output and "synth_test1" in out.output
    data = json.loads(report.read_text())
    assert "ap25" in data and "synth_test1" in data["sequences"]

    # the checkpoint directory, the same directory in S3, and the file in S3 give the same numbers
    monkeypatch.setenv("SP3D_S3_ENDPOINT", s3_server)
    s3 = s3_client(load_settings())
    s3.create_bucket(Bucket="sp3d-test-eval")
    s3.upload_file(str(ckpt), "sp3d-test-eval", "runs/cli-local/checkpoint/model.pt")
    for where in (ckpt.parent, "s3://sp3d-test-eval/runs/cli-local/checkpoint",
                  "s3://sp3d-test-eval/runs/cli-local/checkpoint/model.pt", f"runs:/{run.info.run_id}/checkpoints/final.pt"):
        again = tmp_path / "again.json"
        out = CliRunner().invoke(app, ["eval", "--checkpoint", str(where), "--out", str(again)])
        assert out.exit_code == 0, out.output
        assert json.loads(again.read_text())["ap25"] == data["ap25"]
    out = CliRunner().invoke(app, ["eval", "--checkpoint", "s3://sp3d-test-eval/runs/nope"])
    assert out.exit_code == 1 and "s3://sp3d-test-eval/runs/nope: no checkpoint there" in _error_line(out)


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output  # one clean line, no traceback
    return lines[0]


def test_train_rejects_malformed_yaml_and_unknown_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    out = CliRunner().invoke(app, ["train", "--local", "-c", str(bad)])
    assert out.exit_code == 2
    assert "bad.yaml" in _error_line(out) and "YAML" in _error_line(out)

    out = CliRunner().invoke(app, ["train", "--local", "-c", "tiny", "-s", "train.bogus_key=3"])
    assert out.exit_code == 2
    assert "train.bogus_key" in _error_line(out)


def test_train_missing_dataset_without_synth(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["train", "--local", "--no-synth", "-s", f"dataset.root={tmp_path / 'nothing'}"])
    assert out.exit_code == 1
    assert "DatasetError" in _error_line(out) and "nothing" in _error_line(out)


def test_train_warns_about_an_older_synthetic_render_and_rejects_a_corrupt_manifest(
        synthetic_tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sp3d.commands.train import ensure_dataset

    from selfpose3d.data.synthetic import MANIFEST

    root = tmp_path / "old"
    shutil.copytree(synthetic_tiny_root, root)
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["renderer_version"]  # as written before renderer 2
    (root / MANIFEST).write_text(json.dumps(manifest))
    ensure_dataset(load_config("tiny", {"dataset.root": str(root)}), synth_if_missing=False)
    assert "older synthetic renderer" in capsys.readouterr().out

    (root / MANIFEST).write_text("{not json")
    out = CliRunner().invoke(app, ["train", "--local", "--no-synth", "-s", f"dataset.root={root}"])
    assert out.exit_code == 1
    line = _error_line(out)
    assert "DatasetError" in line and str(root / MANIFEST) in line


def test_eval_rejects_corrupt_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"\x80\x02not a checkpoint at all")
    out = CliRunner().invoke(app, ["eval", "--checkpoint", str(ckpt)])
    assert out.exit_code == 1
    line = _error_line(out)
    assert "CheckpointError" in line and str(ckpt) in line


def test_best_epoch_summary_and_epoch_metrics() -> None:
    from sp3d.run_tracking import best_epoch, epoch_metrics, summary_metrics

    history = [
        {"stage": "backbone_2d", "stage_epoch": 0, "global_epoch": 0, "train/total": 3.0},
        {"stage": "pose_net", "stage_epoch": 0, "global_epoch": 1, "train/total": 2.0, "eval/ap_mean": 0.4,
         "eval/mpjpe": 90.0},
        {"stage": "pose_net", "stage_epoch": 1, "global_epoch": 2, "train/total": 1.0, "eval/ap_mean": 0.4,
         "eval/mpjpe": 70.0},
        {"stage": "finetune", "stage_epoch": 0, "global_epoch": 3, "train/total": 0.5},
    ]
    assert best_epoch(history) == 2  # same AP, lower MPJPE
    assert best_epoch(history[:1]) is None
    summary = summary_metrics(history)
    assert summary["train/total"] == 0.5 and summary["eval/mpjpe"] == 70.0 and summary["global_epoch"] == 3
    logged = epoch_metrics("pose_net", 2, {"eval/pizza@1/ap25": 0.5, "stage": "pose_net", "flag": True})
    assert logged == {"eval/pizza_1/ap25": 0.5, "epoch": 2.0, "stage_index": 2.0}


def test_plots_draw_learning_curves_and_skeletons() -> None:
    import numpy as np
    from sp3d.plots import learning_curves, pose_snapshot

    from selfpose3d.data.joints import LIMBS
    from selfpose3d.evaluation import FrameResult

    history = [{"stage": "backbone_2d", "global_epoch": 0, "train/total": 1.0},
               {"stage": "pose_net", "global_epoch": 1, "train/total": 0.5, "eval/ap25": 0.2, "eval/mpjpe": 80.0}]
    fig = learning_curves(history, "run")
    loss_ax, ap_ax, mpjpe_ax = fig.axes
    assert list(loss_ax.lines[0].get_ydata()) == [1.0, 0.5]
    assert list(ap_ax.lines[0].get_ydata()) == [20.0]  # AP in percent
    assert list(mpjpe_ax.lines[0].get_xdata()) == [1]
    rng = np.random.default_rng(0)
    frame = FrameResult(pred_poses=rng.normal(size=(3, 15, 3)) * 500, pred_scores=np.ones(3),
                        pred_valid=np.array([True, False, True]), gt_poses=rng.normal(size=(2, 15, 3)) * 500)
    ax = pose_snapshot(frame).axes[0]
    assert len(ax.lines) == len(LIMBS) * (2 + 2)  # 2 GT + 2 valid predictions
    assert "2 predicted, 2 GT" in ax.get_title()
