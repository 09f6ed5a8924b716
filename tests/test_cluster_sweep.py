"""A real sweep (`sp3d submit sweep`) on a REAL two-node Ray cluster (`ray start` head + worker): its two
concurrent trials train on different nodes, the worker node is SIGKILLed while a trial trains there, and
that trial resumes from its last committed checkpoint on the surviving node; the job succeeds, each trial
has exactly one MLflow run with every epoch logged once, and S3 holds the checkpoints."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from cluster_helpers import CLEAN_VARS, TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY, sp3d_cli
from conftest import micro_overrides
from mlflow.tracking import MlflowClient
from sp3d import jobs
from sp3d.run_tracking import EPOCH_METRIC, NODE_TAG, RESUME_TAG
from sp3d.sweep_state import DEFAULT_EXPERIMENT
from sp3d.train_loop import RAY_SNAPSHOT_FILE

BUCKET = "sp3d-cluster-sweeps"
EPOCHS = {"train.backbone_2d.epochs": 2, "train.root_net.epochs": 1, "train.pose_net.epochs": 1}
SPACE = {
    "name": "two-nodes", "description": "two lambda values, one trial per node", "base_config": "tiny",
    "metric": "ap50", "mode": "max", "num_samples": 2,
    "params": {"loss.joint_lambda": {"type": "choice", "values": [0.01, 0.1], "grid": True}},
}


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_server: str, mlflow_server: str) -> Path:
    """A cluster client's environment: nothing inherited, tracking + S3 endpoint of the test stack (forwarded
    to the job as non-secret settings); credentials stay on the nodes. cwd = tmp_path (the working dir)."""
    for name in CLEAN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SP3D_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SP3D_S3_ENDPOINT", s3_server)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _child_runs(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    if experiment is None:
        return []
    parents = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{name}'")
    if not parents:
        return []
    query = f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'"
    return client.search_runs([experiment.experiment_id], query)


def _committed_epochs(s3, name: str, trial: str) -> list[str]:
    """Checkpoint dirs Ray Train's checkpoint manager has committed for ``trial`` (its snapshot in S3)."""
    key = f"sweeps/{name}/runs/{trial}/{RAY_SNAPSHOT_FILE}"
    try:
        text = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return []
    return sorted(set(re.findall(r"epoch_\d{4}", text)))


def _wait_for_trial_on(node: str, name: str, mlflow: MlflowClient, s3, job_status, timeout: float = 300) -> str:
    """Trial id of the run whose rank 0 trains on ``node`` and has a committed checkpoint there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job_status() in ("PENDING", "RUNNING"), f"job ended early: {job_status()}"
        for run in _child_runs(mlflow, name):
            if run.data.tags.get(NODE_TAG) == node and _committed_epochs(s3, name, run.info.run_name):
                return run.info.run_name
        time.sleep(0.5)
    raise AssertionError(f"no trial committed a checkpoint on node {node} within {timeout} s")


@pytest.mark.slow
def test_sweep_trials_spread_over_two_nodes_and_a_trial_survives_losing_its_node(
    ray_two_node_cluster, client_env: Path, synthetic_tiny_root: Path, s3_server: str, mlflow_server: str
) -> None:
    cluster = ray_two_node_cluster
    nodes = cluster.node_ids()
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id=TEST_S3_ACCESS_KEY,
                      aws_secret_access_key=TEST_S3_SECRET_KEY)  # the client env has none: nodes hold them
    s3.create_bucket(Bucket=BUCKET)
    (client_env / "two_nodes.yaml").write_text(yaml.safe_dump(SPACE))
    name = f"two-nodes-{uuid.uuid4().hex[:6]}"
    sets = [f"{k}={json.dumps(v)}" for k, v in micro_overrides(synthetic_tiny_root, **EPOCHS).items()]
    out = sp3d_cli("submit", "sweep", "two_nodes.yaml", "--concurrent", 2, "--name", name,
                   "--storage", f"s3://{BUCKET}/sweeps", *[a for s in sets for a in ("--set", s)],
                   "--working-dir", client_env, "--address", cluster.dashboard_url, "--token-file", cluster.token_file)
    job_id = re.search(r"submitted job (\S+)", out).group(1)
    client = jobs.connect(cluster.dashboard_url, cluster.token_file)
    mlflow = MlflowClient(mlflow_server)
    try:
        victim = _wait_for_trial_on(nodes["worker"], name, mlflow, s3, lambda: jobs.job_status(client, job_id))
        committed = _committed_epochs(s3, name, victim)
        lost_after = cluster.kill_worker()
        status = jobs.wait_for(client, job_id, timeout=600)
        logs = jobs.job_logs(client, job_id)
    finally:
        if len(cluster.alive_nodes()) < 2:
            cluster.restart_worker()  # later tests get their two nodes back
    print(f"killed the worker node after {victim} committed {committed}; node declared dead after "
          f"{lost_after:.1f} s")
    assert status == "SUCCEEDED", logs[-6000:]

    runs = {r.info.run_name: r for r in _child_runs(mlflow, name)}
    assert len(runs) == 2 and victim in runs, sorted(runs)  # one MLflow run per trial, no duplicate
    total = sum(EPOCHS.values())
    for trial, run in runs.items():
        assert run.info.status == "FINISHED", (trial, run.info.status)
        steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, EPOCH_METRIC)]
        assert sorted(steps) == list(range(total)), (trial, steps)  # every epoch logged exactly once
    survivor = next(r for t, r in runs.items() if t != victim)
    assert survivor.data.tags[NODE_TAG] == nodes["head"]  # the two trials really trained on different nodes
    history = runs[victim].data.tags[NODE_TAG].split(",")
    assert history[0] == nodes["worker"] and history[-1] == nodes["head"], history  # moved to the survivor
    starts = [int(x) for x in runs[victim].data.tags[RESUME_TAG].split(",")]
    assert starts[0] == 0 and len(starts) >= 2 and starts[-1] >= 1, starts  # resumed from a checkpoint
    assert _committed_epochs(s3, name, victim)[-1] == f"epoch_{total - 1:04d}"
