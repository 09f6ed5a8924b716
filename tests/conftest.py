"""Shared fixtures: isolate HOME / temp dirs, quiet telemetry, a tiny config, one synthetic dataset per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from cluster_helpers import TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY, TwoNodeRayCluster

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="sp3d-tests-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    """A temp dir shared by the whole test session (removed when the session ends)."""
    return _SESSION_TMP


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session temp dir (session fixtures such as the MLflow server are torn down by now)."""
    import shutil

    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


# --- S3 (moto) and MLflow server fixtures (platform tests: tracking, Ray Train, sweeps) ---------------
# The whole session runs with these fake S3 credentials (never real ones). Setting them at import, not
# in a session fixture, matters: a test whose own monkeypatch deletes them restores them at teardown;
# a session fixture first created inside such a test would have them deleted for everyone after it.
os.environ.update({"AWS_ACCESS_KEY_ID": TEST_S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_S3_SECRET_KEY,
                   "AWS_DEFAULT_REGION": "us-east-1"})
for _name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
MLFLOW_TEST_BUCKET = "sp3d-test-mlflow"


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 endpoint (ThreadedMotoServer, in memory) on a free 127.0.0.1 port; yields its URL.

    The fake AWS credentials + region are set in os.environ at conftest import (see above).
    """
    from moto.server import ThreadedMotoServer
    from sp3d.procs import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
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


@pytest.fixture(scope="session")
def ray_session(session_tmp: Path, s3_server: str):
    """A local Ray instance started ONCE per test session (4 logical CPUs, dashboard on so the state API
    works), with HOME / RAY_TMPDIR / TMPDIR in temp dirs (Ray writes ~/.ray/auth_token) and usage stats off.
    Yields the `ray` module; shut down at session end. Tests that train on it use fractional worker CPUs.
    Started after `s3_server`, so its processes hold the test S3 credentials in their environment, as real
    nodes do (sweep trials read them from there)."""
    import shutil

    import ray

    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    home = session_tmp / "ray-home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"HOME": str(home), "RAY_TMPDIR": str(ray_tmp), "TMPDIR": str(ray_tmp),
                            "RAY_USAGE_STATS_ENABLED": "0"}.items():
            mp.setenv(name, value)
        ray.init(num_cpus=4, _temp_dir=str(ray_tmp), include_dashboard=True, log_to_driver=True,
                 configure_logging=False)
        # Ray's own actors (Train's placement-group cleaner uses the state API) look the cluster up by
        # address; with other Ray instances on the machine that lookup is ambiguous unless this file
        # (under our private RAY_TMPDIR) names ours.
        (ray_tmp / "ray").mkdir(exist_ok=True)
        (ray_tmp / "ray" / "ray_current_cluster").write_text(ray.get_runtime_context().gcs_address)
        try:
            yield ray
        finally:
            ray.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


# --- A real two-node Ray cluster (`ray start`): job submission, work spread over nodes, node loss ----------
@pytest.fixture(scope="session")
def ray_two_node_cluster():
    """A `TwoNodeRayCluster` for the session (about 15-25 s to start); unpacks as
    ``gcs_address, dashboard_url, env``. Every process is stopped at session end, even on failure; os.environ
    is never changed (no RAY_ADDRESS leaks into other tests)."""
    import shutil

    root = Path(tempfile.mkdtemp(prefix="sp3dray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    cluster = TwoNodeRayCluster(root)
    try:
        cluster.timings = cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


PLATFORM_ENV_VARS = ("MLFLOW_TRACKING_URI", "SP3D_PROFILE", "SP3D_S3_ENDPOINT", "SP3D_ARTIFACT_BUCKET",
                     "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "RAY_ADDRESS")


def use_sqlite_store(mp: pytest.MonkeyPatch, root: Path) -> str:
    """Point sp3d at a fresh sqlite MLflow store in ``root`` (HOME, state dir and cwd there too, no profile or
    inherited run); returns its tracking URI. ``mp`` undoes it all."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for name in ("SP3D_PROFILE", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        mp.delenv(name, raising=False)
    (root / "home").mkdir()
    mp.setenv("HOME", str(root / "home"))
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("SP3D_STATE_DIR", str(root / "state"))
    mp.chdir(root)
    return uri


@pytest.fixture
def isolated_platform_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No platform env vars from the caller, a private SP3D_STATE_DIR, wide rich output, clean MLflow state."""
    from sp3d import tracking

    for name in PLATFORM_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SP3D_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    tracking.reset()
    yield
    tracking.reset()
