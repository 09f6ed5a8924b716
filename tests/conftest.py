"""Shared fixtures: isolate HOME / temp dirs, quiet telemetry, a tiny config, one synthetic dataset per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="sp3d-tests-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    """A temp dir shared by the whole test session."""
    return _SESSION_TMP


# --- S3 (moto) and MLflow server fixtures (platform tests: tracking, Ray Train, sweeps) ---------------
TEST_S3_ACCESS_KEY = "sp3d-test-access"
TEST_S3_SECRET_KEY = "sp3d-test-secret"
MLFLOW_TEST_BUCKET = "sp3d-test-mlflow"


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 endpoint (ThreadedMotoServer, in memory) on a free 127.0.0.1 port; yields its URL.

    Sets fake AWS credentials + region in os.environ for the session (restored afterwards).
    """
    from moto.server import ThreadedMotoServer
    from sp3d.procs import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", TEST_S3_ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", TEST_S3_SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server_bucket() -> str:
    """The bucket the `mlflow_server` fixture stores artifacts in (under ``mlartifacts/``)."""
    return MLFLOW_TEST_BUCKET


@pytest.fixture(scope="session")
def mlflow_server(s3_server: str, mlflow_server_bucket: str, session_tmp: Path):
    """A real `mlflow server` subprocess (sqlite backend in a temp dir, artifacts proxied to
    s3://<mlflow_server_bucket>/mlartifacts on `s3_server`); yields its tracking URI. Killed at session end."""
    from sp3d import procs, stack
    from sp3d.settings import load_settings
    from sp3d.storage import ensure_bucket

    workdir = session_tmp / "mlflow-server"
    settings = load_settings(state_dir=workdir, s3_endpoint=s3_server)
    ensure_bucket(settings, mlflow_server_bucket)
    port, log = procs.free_port(), workdir / "mlflow.log"
    env = stack.mlflow_server_env(s3_server, TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY, "us-east-1")
    cmd = stack.mlflow_server_command(workdir / "mlflow.db", f"s3://{mlflow_server_bucket}/mlartifacts", port)
    pid = procs.spawn(cmd, env, log)
    try:
        procs.wait_healthy("MLflow server", f"http://127.0.0.1:{port}/health", 180, pid, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop_process_groups([pid])


@pytest.fixture(scope="session")
def synthetic_tiny_root(session_tmp: Path) -> Path:
    """The `tiny` preset's synthetic Panoptic-format dataset (3 sequences x 40 frames x 5 cameras,
    384x216, seed 0), generated once per session into the session temp dir; returns its root."""
    from selfpose3d.config.loader import load_config
    from selfpose3d.data.synthetic import MANIFEST, generate_dataset

    root = session_tmp / "synthetic_tiny"
    if not (root / MANIFEST).is_file():
        generate_dataset(load_config("tiny"), root)
    return root


def micro_overrides(root: Path, **extra: object) -> dict[str, object]:
    """Overrides that shrink the `tiny` preset to a seconds-long run on `root` (96x64 input, small grids
    and widths, 1 epoch per stage, 2 steps per epoch, 2 test frames). Extra dotted keys are merged in."""
    base: dict[str, object] = {
        "dataset.root": str(root), "dataset.image_size": [96, 64], "dataset.heatmap_size": [24, 16],
        "model.deconv_channels": 16, "model.root_space.voxels": [16, 16, 4], "model.pose_cube_voxels": [8, 8, 8],
        "model.v2v_width": 4, "train.max_iters_per_epoch": 2, "train.backbone_2d.epochs": 1,
        "train.root_net.epochs": 1, "train.pose_net.epochs": 1, "train.finetune.epochs": 0,
        "eval.max_test_frames": 2,
    }
    base.update(extra)
    return base
