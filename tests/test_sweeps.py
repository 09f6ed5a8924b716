"""`sp3d sweep` against REAL processes: Ray Tune over Ray Train (the session's local Ray, or a driver subprocess
with its own Ray), the moto S3 endpoint and the MLflow server fixtures; plus fast checks of the planning
logic and of the CLI's one-line errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import micro_overrides
from mlflow.tracking import MlflowClient
from sp3d.cli import app
from sp3d.resources import cpu_share
from sp3d.run_tracking import EPOCH_METRIC, RESUME_TAG
from sp3d.settings import load_settings
from sp3d.storage import ensure_bucket, s3_client
from sp3d.sweep import SweepError, parse_sets, plan_sweep, run_sweep
from sp3d.sweep_results import TrialRow, error_line, pick_best
from sp3d.sweep_trial import EPOCHS_KEY, TRAIN_SECONDS, split_trial_config, tune_result
from typer.testing import CliRunner

SWEEP_BUCKET = "sp3d-test-sweeps"
# 1 step per epoch, no root_net, 2 views, one shared backbone, no backbone_2d epoch: every epoch is evaluated
SWEEP_EXTRA = {"train.max_iters_per_epoch": 1, "train.root_net.epochs": 0, "dataset.num_views": 2,
               "model.attn_backbone": "shared", "train.backbone_2d.epochs": 0}
OPTUNA_SPACE = """
name: micro_lambda
description: test - lambda sampled by Optuna TPE
base_config: tiny
metric: ap50
mode: max
num_samples: 4
fixed: {loss.joint_lambda_start_epoch: 0}
params:
  loss.joint_lambda: {type: loguniform, low: 0.001, high: 1.0}
"""
GRID_SPACE = """
name: micro_grid
description: test - two lambdas, grid
base_config: tiny
metric: ap50
mode: max
params:
  loss.joint_lambda: {type: choice, values: [0.01, 0.1], grid: true}
"""
# ASHA: the 2nd trial trains 24 steps per epoch instead of 1, so its cost objective is clearly worse
ASHA_SPACE = """
name: micro_cost
description: test - a clearly slower trial for ASHA to stop
base_config: tiny
metric: train_seconds
mode: min
params:
  train.max_iters_per_epoch: {type: choice, values: [1, 24], grid: true}
"""


pytestmark = pytest.mark.usefixtures("isolated_platform_env")


def _sets(root: Path, drop: tuple[str, ...] = (), **extra: object) -> list[str]:
    items = micro_overrides(root, **{**SWEEP_EXTRA, **extra})
    return [f"{k}={json.dumps(v)}" for k, v in items.items() if k not in drop]


def _space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _children(client: MlflowClient, parent_id: str) -> list:
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# ---- fast: planning, result translation, CLI errors -------------------------------------------------------
def test_tune_result_names_objectives_and_skips_unevaluated_epochs() -> None:
    started = time.time() - 5
    assert tune_result({"train/total": 1.0, "epoch": 0.0}, ["ap50"], started) is None
    row = tune_result({"eval/ap50": 0.25, "eval/ap25": 0.1, "epoch": 2.0, "lr": 1e-3}, ["ap50", "mpjpe"], started)
    assert row["ap50"] == 0.25 and row["eval/ap25"] == 0.1 and "lr" not in row
    assert math.isnan(row["mpjpe"])  # not produced by the evaluation (no match): NaN, never a fake number
    assert row[EPOCHS_KEY] == 3 and row[TRAIN_SECONDS] >= 5
    summary = tune_result({"eval/mpjpe": 80.0, "global_epoch": 4}, ["mpjpe", TRAIN_SECONDS], started)
    assert summary["mpjpe"] == 80.0 and summary[EPOCHS_KEY] == 5 and summary[TRAIN_SECONDS] >= 5


def test_worker_cpu_share_fits_node_by_node() -> None:
    # two 1-CPU nodes, the drivers' 0.02 CPU on the first: 0.99 each would not fit both workers at once
    assert cpu_share([0.98, 1.0], 2) == 0.98
    assert cpu_share([3.98], 2) == 1.0 and cpu_share([1.98], 2) == 0.99  # one node: the old even split
    assert cpu_share([1.0, 0.5], 3) == 0.5  # 2 on the first node + 1 on the second
    assert cpu_share([1.0], 3) == 0.33 and cpu_share([0.0, 1.0], 1) == 1.0
    assert cpu_share([0.005], 1) == 0.01  # nothing fits: the minimum (Ray then waits for resources)


def test_node_cpus_reserve_driver_cpu_on_driver_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from sp3d.resources import node_cpus

    nodes = [{"Alive": True, "Resources": {"CPU": 1.0, "sp3d_driver": 2.0}},
             {"Alive": True, "Resources": {"CPU": 1.0, "worker_node": 1.0}},
             {"Alive": False, "Resources": {"CPU": 8.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    assert node_cpus(0.02, "sp3d_driver") == [0.98, 1.0]  # drivers only land on sp3d_driver nodes
    assert node_cpus(0.02, None) == [0.98, 0.98]  # no driver resource: any node may host them
    assert node_cpus() == [1.0, 1.0]


def test_trial_config_split_and_best_pick() -> None:
    sampled, repeat = split_trial_config({"loss.joint_lambda": 0.1, "sp3d.repeat": 2})
    assert sampled == {"loss.joint_lambda": 0.1} and repeat == 2
    sampled, _ = split_trial_config({"sp3d.grid_point": {"a.b": 1, "c.d": "x"}})
    assert sampled == {"a.b": 1, "c.d": "x"}
    rows = [TrialRow("t0", {}, {"ap50": 0.2}, 2, 2, "finished"),
            TrialRow("t1", {}, {"ap50": 0.5}, 1, 2, "stopped early"),
            TrialRow("t2", {}, {"ap50": 0.9}, 1, 2, "error"),
            TrialRow("t3", {}, {"ap50": float("nan")}, 2, 2, "finished")]
    assert pick_best(rows, "ap50", "max").trial_id == "t0"  # finished first; errored / NaN trials never win
    assert pick_best(rows[1:], "ap50", "max").trial_id == "t1"  # else the best trial stopped early
    assert pick_best(rows[2:], "ap50", "min") is None
    assert error_line("Traceback ...\n  File x\nValueError: bad lambda\n") == "ValueError: bad lambda"


def test_plan_sweep_rejects_bad_options(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    with pytest.raises(SweepError, match="grid of 4 points"):
        plan_sweep("lambda", samples=6, settings=settings)
    with pytest.raises(SweepError, match="--set loss.joint_lambda: is swept"):
        plan_sweep("lambda", sets=["loss.joint_lambda=0.5"], settings=settings)
    with pytest.raises(SweepError, match="--name"):
        plan_sweep("lambda", name="bad name/with slash", settings=settings)
    spec = plan_sweep("lambda", samples=8, sets=["train.pose_net.epochs=3"], settings=settings, name="ok")
    assert spec.samples == 8 and spec.sets["train.pose_net.epochs"] == 3 and spec.space_name == "lambda"
    assert Path(spec.sets["dataset.root"]).is_absolute()  # trials run in Tune's trial dirs, not here
    assert parse_sets(["a.b=[96, 64]", "c=x"]) == {"a.b": [96, 64], "c": "x"}


def test_search_setup_optuna_multi_objective_and_grids(tmp_path: Path) -> None:
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from sp3d.sweep import _search
    from sp3d.sweep_trial import GRID_POINT_KEY, REPEAT_KEY

    settings = load_settings(state_dir=tmp_path / "state")
    spec = plan_sweep("full", samples=3, concurrent=2, seed=7, settings=settings, name="full")
    searcher, param_space, num_samples = _search(spec, spec.search_space())
    assert isinstance(searcher, ConcurrencyLimiter) and param_space is None and num_samples == 3
    assert searcher.searcher.metric == ["ap50", "train_seconds"] and searcher.searcher.mode == ["max", "min"]
    space = spec.search_space()
    for i in range(3):  # what the seeded TPE proposes is a valid trial of the conditional space
        config = searcher.suggest(f"t{i}")
        overrides = space.to_overrides(split_trial_config(config)[0])
        assert ("loss.hard_threshold" in overrides) == (overrides["loss.label_strategy"] != "soft")
        searcher.on_trial_complete(f"t{i}", {"ap50": 0.1 * i, "train_seconds": 10.0 + i})

    spec = plan_sweep("lambda", samples=8, settings=settings, name="grid")
    generator, param_space, num_samples = _search(spec, spec.search_space())
    assert isinstance(generator, BasicVariantGenerator) and num_samples == 1
    assert param_space["loss.joint_lambda"] == {"grid_search": [0.001, 0.01, 0.1, 1.0]}
    assert param_space[REPEAT_KEY] == {"grid_search": [0, 1]}  # 8 trials = the grid twice, seeds 0 and 1
    conditional = _space(tmp_path, GRID_SPACE + "  loss.hard_threshold:\n    type: choice\n    values: [0.5, 0.7]\n"
                         "    grid: true\n    when: {loss.joint_lambda: 0.1}\n", "cond.yaml")
    spec = plan_sweep(conditional, settings=settings, name="cond")
    _, param_space, _ = _search(spec, spec.search_space())
    points = param_space[GRID_POINT_KEY]["grid_search"]
    assert points == [{"loss.joint_lambda": 0.01}, {"loss.joint_lambda": 0.1, "loss.hard_threshold": 0.5},
                      {"loss.joint_lambda": 0.1, "loss.hard_threshold": 0.7}]


def test_stale_ray_marker_of_a_dead_driver_is_cleared(tmp_path: Path) -> None:
    import socket

    from sp3d.ray_connect import OWNER, clear_stale_marker

    marker = tmp_path / "ray_current_cluster"
    marker.write_text("127.0.0.1:9")  # nothing listens there: the driver that started it is gone
    assert not clear_stale_marker(marker) and marker.exists()  # not written by sp3d: left alone
    (tmp_path / OWNER).write_text("127.0.0.1:9")
    assert clear_stale_marker(marker) and not marker.exists() and not (tmp_path / OWNER).exists()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        live = f"127.0.0.1:{server.getsockname()[1]}"
        marker.write_text(live)
        (tmp_path / OWNER).write_text(live)
        assert not clear_stale_marker(marker) and marker.exists()  # a live instance keeps its marker


def test_cli_search_space_errors_are_one_line(tmp_path: Path) -> None:
    bad = _space(tmp_path, OPTUNA_SPACE.replace("low: 0.001", "low: -1"), "bad.yaml")
    runner = CliRunner()
    out = runner.invoke(app, ["sweep", str(bad)])
    assert out.exit_code == 2
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "params.loss.joint_lambda.low" in lines[0] and "must be > 0" in lines[0], out.output
    typo = _space(tmp_path, OPTUNA_SPACE.replace("loss.joint_lambda:", "loss.joint_lamda:"), "typo.yaml")
    out = runner.invoke(app, ["sweep", str(typo)])
    assert out.exit_code == 2 and "params.loss.joint_lamda" in out.output and len(out.output.strip().splitlines()) == 1
    out = runner.invoke(app, ["sweep", "no_such_space"])
    assert out.exit_code == 2 and "unknown search space 'no_such_space'" in out.output
    out = runner.invoke(app, ["sweep", "--resume", "nothing-here", "--storage", str(tmp_path / "sweeps")])
    assert out.exit_code == 2 and "no sweep named 'nothing-here'" in out.output


# ---- slow: real Ray Tune + Ray Train + MLflow server + S3 ------------------------------------------------
@pytest.mark.slow
def test_optuna_sweep_on_s3_with_mlflow_server(s3_server: str, mlflow_server: str, ray_session,
                                               synthetic_tiny_root: Path, tmp_path: Path) -> None:
    from sp3d.compare import load_comparison

    settings = load_settings(state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server, s3_endpoint=s3_server)
    spec = plan_sweep(_space(tmp_path, OPTUNA_SPACE), sets=_sets(synthetic_tiny_root), concurrent=2, seed=3,
                      storage=f"s3://{SWEEP_BUCKET}/sweeps", name="optuna4", settings=settings)
    outcome = run_sweep(spec, settings)
    assert outcome.complete and len(outcome.rows) == 4
    assert [r.status for r in outcome.rows] == ["finished"] * 4, outcome.rows
    assert all(r.metric("ap50") is not None and r.epochs == 1 for r in outcome.rows)
    assert outcome.best is not None

    client = MlflowClient(mlflow_server)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.run_name == "optuna4" and parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert (tags["sp3d.kind"], tags["sp3d.sweep"], tags["sp3d.space"], tags["sp3d.metric"], tags["sp3d.mode"]) == \
        ("sweep", "optuna4", "micro_lambda", "ap50", "max")
    assert tags["sp3d.best_trial"] == outcome.best.trial_id
    assert float(parent.data.params["best.loss.joint_lambda"]) == pytest.approx(outcome.best.values["loss.joint_lambda"])
    assert parent.data.metrics["best/ap50"] == pytest.approx(outcome.best.metric("ap50"))
    children = _children(client, parent.info.run_id)
    assert sorted(c.info.run_name for c in children) == sorted(r.trial_id for r in outcome.rows)
    lambdas = set()
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["sp3d.kind"] == "trial" and child.data.tags["sp3d.sweep"] == "optuna4"
        assert child.data.tags["sp3d.trial_id"] == child.info.run_name
        value = float(child.data.params["sweep.loss.joint_lambda"])
        assert 0.001 <= value <= 1.0 and float(child.data.params["loss.joint_lambda"]) == value
        assert _steps(client, child.info.run_id, "eval/ap50") == [0]
        lambdas.add(value)
    assert len(lambdas) == 4  # TPE sampled four different values
    assert "sp3d-test-secret" not in json.dumps({**parent.data.params, **parent.data.tags})

    s3 = s3_client(settings)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=SWEEP_BUCKET, Prefix="sweeps/optuna4/").get("Contents", [])]
    assert "sweeps/optuna4/sweep_state.json" in keys
    tuner_state = s3.get_object(Bucket=SWEEP_BUCKET, Key="sweeps/optuna4/tuner.pkl")["Body"].read()
    assert b"sp3d-test-secret" not in tuner_state  # Tune pickles its storage filesystem: keyless
    for row in outcome.rows:
        assert any(k.startswith(f"sweeps/optuna4/runs/{row.trial_id}/") and k.endswith("model.pt") for k in keys)
    cmp = load_comparison("optuna4", tracking_uri=mlflow_server)  # what `sp3d compare optuna4` reads
    assert cmp.kind == "sweep" and len(cmp.trials) == 4 and cmp.by == ["loss.joint_lambda"]


@pytest.mark.slow
def test_asha_stops_the_clearly_worse_trial(ray_session, synthetic_tiny_root: Path, tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")  # local sqlite, local storage
    sets = _sets(synthetic_tiny_root, drop=("train.max_iters_per_epoch",), **{"train.pose_net.epochs": 3})
    spec = plan_sweep(_space(tmp_path, ASHA_SPACE), sets=sets, concurrent=1, scheduler="asha",
                      storage=str(tmp_path / "sweeps"), name="asha", settings=settings)
    outcome = run_sweep(spec, settings)
    assert outcome.complete
    fast, slow = sorted(outcome.rows, key=lambda r: r.values["train.max_iters_per_epoch"])
    assert fast.status == "finished" and fast.epochs == 3
    assert slow.status == "stopped early" and slow.epochs < slow.planned_epochs == 3, outcome.rows
    client = MlflowClient(settings.tracking_uri)
    runs = {c.info.run_name: c for c in _children(client, outcome.parent_run_id)}
    assert len(_steps(client, runs[slow.trial_id].info.run_id, EPOCH_METRIC)) < 3
    assert runs[slow.trial_id].info.status in ("KILLED", "FAILED")  # never left RUNNING
    assert _steps(client, runs[fast.trial_id].info.run_id, EPOCH_METRIC) == [0, 1, 2]
    assert outcome.best.trial_id == fast.trial_id


def _driver_env(root: Path, mark: str, s3_server: str, mlflow_server: str, state: Path) -> dict[str, str]:
    """A driver subprocess environment: private HOME / RAY_TMPDIR / TMPDIR (it starts its own Ray)."""
    root.mkdir(parents=True)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SP3D_", "MLFLOW_TRACKING"))}
    return {**keep, "HOME": str(root), "RAY_TMPDIR": str(root), "TMPDIR": str(root), "SP3D_TEST_SWEEP_MARK": mark,
            "RAY_USAGE_STATS_ENABLED": "0", "SP3D_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": mlflow_server,
            "SP3D_S3_ENDPOINT": s3_server, "COLUMNS": "200"}


def _kill_marked(mark: str) -> None:
    """SIGKILL every process carrying our marker in its environment (the driver's Ray processes)."""
    needle = f"SP3D_TEST_SWEEP_MARK={mark}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0") and int(proc.name) != os.getpid():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _registered_checkpoints(s3) -> int:
    """Trials of sweep `killme` whose Train controller has registered their epoch-0 checkpoint."""
    count = 0
    for trial in _trial_dirs(s3):
        key = f"killed/killme/runs/{trial}/checkpoint_manager_snapshot.json"
        try:
            count += b"epoch_0000" in s3.get_object(Bucket=SWEEP_BUCKET, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            continue
    return count


@pytest.mark.slow
def test_killed_driver_resumes_without_duplicate_runs(s3_server: str, mlflow_server: str, synthetic_tiny_root: Path,
                                                      tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    ray_dirs = [Path(f"/tmp/sp3dsw{mark[:6]}{s}") for s in "ab"]  # short: Ray's socket paths have a length limit
    try:
        _kill_and_resume(mark, ray_dirs, s3_server, mlflow_server, synthetic_tiny_root, tmp_path)
    finally:
        _kill_marked(mark)
        for folder in ray_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def _kill_and_resume(mark: str, ray_dirs: list[Path], s3_server: str, mlflow_server: str, synthetic_tiny_root: Path,
                     tmp_path: Path) -> None:
    """Start `sp3d sweep` in a subprocess, SIGKILL its process group once both trials reported an epoch,
    resume it with `sp3d sweep --resume` and check the MLflow runs."""
    settings = load_settings(state_dir=tmp_path / "state", mlflow_tracking_uri=mlflow_server, s3_endpoint=s3_server)
    s3 = s3_client(settings)
    ensure_bucket(settings, SWEEP_BUCKET)
    storage = f"s3://{SWEEP_BUCKET}/killed"
    cmd = [sys.executable, "-m", "sp3d", "sweep", str(_space(tmp_path, GRID_SPACE)), "--concurrent", "2",
           "--storage", storage, "--name", "killme", "--experiment", "sweep-kill"]
    for item in _sets(synthetic_tiny_root, **{"train.pose_net.epochs": 2}):
        cmd += ["-s", item]
    log = tmp_path / "driver1.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=_driver_env(ray_dirs[0], mark, s3_server, mlflow_server,
                                                     tmp_path / "state"),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 420
        # kill once both trials reported an evaluated epoch with a checkpoint and train the next one
        while _registered_checkpoints(s3) < 2:
            assert proc.poll() is None, f"driver exited before the kill:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no trial reported in time:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep finished before the driver could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_marked(mark)

    resume = [sys.executable, "-m", "sp3d", "sweep", "--resume", "killme", "--storage", storage]
    env = _driver_env(ray_dirs[1], mark, s3_server, mlflow_server, tmp_path / "state")
    try:
        done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=600)
    finally:
        _kill_marked(mark)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "next: sp3d compare killme" in done.stdout
    assert "Restoring the run from the latest experiment state" in done.stdout + done.stderr  # Tuner.restore

    client = MlflowClient(mlflow_server)
    (parent,) = client.search_runs([client.get_experiment_by_name("sweep-kill").experiment_id],
                                   "tags.`sp3d.kind` = 'sweep'")
    assert parent.info.status == "FINISHED" and "best/ap50" in parent.data.metrics
    children = _children(client, parent.info.run_id)
    assert len(children) == 2 and len({c.info.run_name for c in children}) == 2  # one run per trial, no duplicates
    assert sorted(float(c.data.params["sweep.loss.joint_lambda"]) for c in children) == [0.01, 0.1]
    histories = []
    for child in children:
        assert child.info.status == "FINISHED"
        assert _steps(client, child.info.run_id, EPOCH_METRIC) == [0, 1]  # each epoch logged exactly once
        histories.append(child.data.tags[RESUME_TAG])
    # every (re)start of a trial's Train run continued after its last checkpoint, none started over at 0
    starts = [[int(x) for x in h.split(",")] for h in histories]
    assert all(s == sorted(set(s)) for s in starts) and any(len(s) > 1 for s in starts), histories


def _trial_dirs(s3) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=SWEEP_BUCKET, Prefix="killed/killme/runs/",
                                                         Delimiter="/")
    return [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for page in pages for p in page.get("CommonPrefixes", [])]


@pytest.mark.slow
def test_study_robustness_table_and_plot(ray_session, synthetic_tiny_root: Path, tmp_path: Path) -> None:
    sets = _sets(synthetic_tiny_root, drop=("dataset.num_views",))
    args = ["study", "robustness", "--views", "2,3", "--concurrent", "2", "--storage", str(tmp_path / "sweeps"),
            "--name", "views-study", "--out", str(tmp_path / "report")]
    for item in sets:
        args += ["-s", item]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    for text in ("views-study", "dataset.num_views", "AP50", "paper", "VoxelPose (5 views, supervised)", "Table 14"):
        assert text in out.output, (text, out.output)
    assert (tmp_path / "report" / "metric_vs_dataset.num_views.png").stat().st_size > 1000
    assert "Table 14" in (tmp_path / "report" / "compare.md").read_text()
    client = MlflowClient(load_settings().tracking_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("sp3d-sweeps").experiment_id],
                                   "tags.`sp3d.kind` = 'study'")
    assert parent.data.tags["sp3d.study"] == "views-study" and parent.data.tags["sp3d.space"] == "views"
    children = _children(client, parent.info.run_id)
    assert sorted(int(c.data.params["sweep.dataset.num_views"]) for c in children) == [2, 3]
    assert sorted(int(c.data.params["dataset.num_views"]) for c in children) == [2, 3]


def test_study_rejects_bad_views() -> None:
    out = CliRunner().invoke(app, ["study", "robustness", "--views", "3,x"])
    assert out.exit_code == 2 and "--views '3,x'" in out.output
    out = CliRunner().invoke(app, ["study", "robustness", "--views", "9"])
    assert out.exit_code == 2 and "dataset.num_views" in out.output and len(out.output.strip().splitlines()) == 1
