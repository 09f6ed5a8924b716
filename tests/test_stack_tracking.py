"""`sp3d stack` + sp3d.tracking + sp3d.storage against REAL processes (moto S3 endpoint, MLflow server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import typer
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from sp3d import stack as stack_lib
from sp3d import tracking
from sp3d.commands.stack import register
from sp3d.redact import REDACTED, register_secrets, scrub, scrub_text
from sp3d.settings import SettingsError, load_settings
from sp3d.storage import StorageError, ensure_bucket, resolve_storage, s3_client
from typer.testing import CliRunner

from selfpose3d.config import load_config

FAKE_ACCESS = "AKIASP3DFAKEACCESS01"
FAKE_SECRET = "sp3d-FAKE-secret-9f8e7d"
URL_PASSWORD = "hunter2-url-pass"
# Starting an MLflow server takes ~7-10 s on an idle 2-core machine (half of it sqlite migrations of a
# fresh database) and 20-28 s when the cores are busy, so the real-server tests are marked slow.
SERVERS = pytest.mark.slow
ISOLATED_VARS = (
    "MLFLOW_TRACKING_URI", "SP3D_PROFILE", "SP3D_S3_ENDPOINT", "SP3D_ARTIFACT_BUCKET", "SP3D_MLFLOW_PORT",
    "SP3D_S3_PORT", "AWS_SESSION_TOKEN", "AWS_PROFILE", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
)


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _isolate(mp: pytest.MonkeyPatch, root: Path) -> None:
    (root / "home").mkdir(exist_ok=True)
    mp.setenv("HOME", str(root / "home"))
    mp.setenv("SP3D_STATE_DIR", str(root / "state"))
    mp.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS)
    mp.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ISOLATED_VARS:
        mp.delenv(name, raising=False)
    mp.chdir(root)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """`sp3d stack up` run as a separate process (its services must outlive it) in an isolated state dir."""
    root = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, root)
        cmd = [sys.executable, "-c", "from sp3d.commands.stack import stack_app; stack_app()",
               "up", "--mlflow-port", "0", "--s3-port", "0"]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
        seconds = time.monotonic() - start
        assert proc.returncode == 0, proc.stdout + proc.stderr
        settings = load_settings()
        try:
            yield SimpleNamespace(root=root, settings=settings, output=proc.stdout + proc.stderr,
                                  state=stack_lib.read_state(settings), up_seconds=seconds)
        finally:
            stack_lib.stack_down(load_settings())
            tracking.reset()


@SERVERS
def test_stack_up_runs_detached_services_and_writes_profile(stack: SimpleNamespace) -> None:
    state, settings = stack.state, stack.settings
    pids = {n: int((settings.stack_dir / f"{n}.pid").read_text()) for n in ("s3", "mlflow")}
    assert all(stack_lib.process_alive(pid, stack_lib.MARKERS[n]) for n, pid in pids.items()), "services died with the CLI"
    assert settings.tracking_uri == state["mlflow"]["url"]  # picked up from <state>/profile.env
    assert settings.s3_endpoint == state["s3"]["url"]
    assert f"MLFLOW_TRACKING_URI={state['mlflow']['url']}" in stack.output
    assert FAKE_SECRET not in stack.output and FAKE_ACCESS not in stack.output
    assert FAKE_SECRET not in settings.profile_path.read_text()  # user credentials are never written
    assert FAKE_SECRET not in repr(settings)
    print(f"`sp3d stack up` (moto + MLflow server) took {stack.up_seconds:.1f} s")


@SERVERS
def test_run_logged_to_stack_lands_in_s3(stack: SimpleNamespace, tmp_path: Path) -> None:
    settings = tracking.configure(stack.settings)
    fig = Figure()
    fig.add_subplot().plot([0, 1, 2], [3.0, 2.0, 1.5])
    blob = tmp_path / "weights.bin"
    blob.write_bytes(os.urandom(2048))
    with tracking.start_run("stack-test", "run-a", tags={"purpose": "test"}) as run:
        params = tracking.log_config(load_config("tiny"))
        for step, loss in enumerate([3.0, 2.0, 1.5]):
            tracking.log_metrics({"train/loss": loss, "skipped": None}, step=step)
        tracking.log_figure(fig, "plots/loss.png")
        tracking.log_artifact_file(blob, "files")
    run_id = run.info.run_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server, not direct S3
    keys = [o["Key"] for o in s3_client(settings).list_objects_v2(
        Bucket=settings.artifact_bucket, Prefix="mlartifacts/").get("Contents", [])]
    for name in ("config.yaml", "plots/loss.png", "files/weights.bin"):
        assert any(k.endswith(f"{run_id}/artifacts/{name}") for k in keys), (name, keys)
    runs = mlflow.search_runs(experiment_names=["stack-test"], output_format="list")
    found = next(r for r in runs if r.info.run_id == run_id)
    assert found.data.metrics["train/loss"] == 1.5 and "skipped" not in found.data.metrics
    history = MlflowClient().get_metric_history(run_id, "train/loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [3.0, 2.0, 1.5]
    assert found.data.params["loss.joint_lambda"] == params["loss.joint_lambda"]
    tags = found.data.tags
    assert tags["sp3d.config_hash"] == tracking._hash(load_config("tiny"))
    assert tags["sp3d.version.mlflow"] == mlflow.__version__ and tags["sp3d.seed"] == "0"
    assert len(tags["sp3d.git_sha"]) in (40, len("unknown"))


@SERVERS
def test_credentials_never_logged(stack: SimpleNamespace, tmp_path: Path) -> None:
    settings = tracking.configure(stack.settings)
    assert FAKE_SECRET in settings.secret_values()
    url = f"s3://alice:{URL_PASSWORD}@minio.local:9000/bucket"
    cfg = {"name": "leaky", "storage": {"endpoint": url, "secret_key": FAKE_SECRET, "note": f"key={FAKE_SECRET}"},
           "train": {"seed": 3}, "copy": FAKE_SECRET}
    leaky_file = tmp_path / "leaky.yaml"
    leaky_file.write_text(f"aws_secret_access_key: {FAKE_SECRET}\nendpoint: {url}\nplain: {FAKE_SECRET}\n")
    with tracking.start_run("stack-secrets", "leaky", tags={"endpoint": url, "token": "abc123"}) as run:
        tracking.log_config(cfg)
        tracking.log_text(f"password = {URL_PASSWORD}\nurl: {url}\n", "notes/log.txt")
        tracking.log_artifact_file(leaky_file)
    data = MlflowClient().get_run(run.info.run_id).data
    logged = list(data.params.values()) + list(data.tags.values())
    client = s3_client(settings)
    objects = client.list_objects_v2(Bucket=settings.artifact_bucket, Prefix="mlartifacts/").get("Contents", [])
    texts = [client.get_object(Bucket=settings.artifact_bucket, Key=o["Key"])["Body"].read().decode(errors="replace")
             for o in objects if run.info.run_id in o["Key"]]
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"))
    texts += [p.read_text(errors="replace") for p in Path(local).rglob("*") if p.is_file()]
    assert len(texts) == 6  # config.yaml, notes/log.txt, leaky.yaml from S3 and downloaded
    stack_logs = [p.read_text(errors="replace") for p in settings.stack_dir.glob("*.log")]
    for text in logged + texts:
        assert FAKE_SECRET not in text and URL_PASSWORD not in text and FAKE_ACCESS not in text
    for text in stack_logs:  # (moto's access log shows access key *ids* of signed requests, by design)
        assert FAKE_SECRET not in text and URL_PASSWORD not in text
    assert data.params["storage.secret_key"] == REDACTED and data.tags["token"] == REDACTED
    assert data.params["storage.endpoint"] == f"s3://{REDACTED}@minio.local:9000/bucket"
    assert any("minio.local:9000/bucket" in t for t in texts)  # redaction keeps the rest of the text


@SERVERS
def test_up_twice_is_idempotent_and_status_reports_health(stack: SimpleNamespace) -> None:
    pid_files = [stack.settings.stack_dir / f"{n}.pid" for n in ("s3", "mlflow")]
    before = [p.read_text() for p in pid_files]
    result = CliRunner().invoke(_cli(), ["stack", "up"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "already running" in result.output
    assert [p.read_text() for p in pid_files] == before
    status = CliRunner().invoke(_cli(), ["stack", "status"], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert status.output.count("yes") == 2 and "mlflow.log" in status.output
    assert FAKE_SECRET not in result.output + status.output


@SERVERS
def test_down_stops_everything(stack: SimpleNamespace) -> None:
    settings, state = stack.settings, stack.state
    pids = {n: int((settings.stack_dir / f"{n}.pid").read_text()) for n in ("s3", "mlflow")}
    result = CliRunner().invoke(_cli(), ["stack", "down"])
    assert result.exit_code == 0 and "stopped" in result.output, result.output
    assert not any(stack_lib.process_alive(pid) for pid in pids.values())
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # the whole process group (uvicorn workers too) is gone
    for port in (state["s3"]["port"], state["mlflow"]["port"]):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not settings.profile_path.exists() and not list(settings.stack_dir.glob("*.pid"))
    tracking.reset()  # configure() exported the stack's URI to os.environ (as mlflow does)
    assert load_settings().tracking_uri.startswith("sqlite:///")  # back to the local default
    again = CliRunner().invoke(_cli(), ["stack", "down"])
    assert again.exit_code == 0 and "not running" in again.output
    assert CliRunner().invoke(_cli(), ["stack", "status"]).exit_code == 1


# --- no servers needed -----------------------------------------------------------------------------------


def test_scrub_redacts_keys_urls_and_secret_values() -> None:
    register_secrets(["registered-Secret-77"])
    obj = {"db": {"password": "p", "Access_Key": "k", "empty_token": ""}, "lr": 0.1,
           "urls": ["https://bob:pw@host/x", "https://host/y"], "msg": "has registered-Secret-77 inside"}
    out = scrub(obj)
    assert out["db"] == {"password": REDACTED, "Access_Key": REDACTED, "empty_token": ""}
    assert out["lr"] == 0.1 and out["urls"] == [f"https://{REDACTED}@host/x", "https://host/y"]
    assert out["msg"] == f"has {REDACTED} inside"
    text = scrub_text('"api_key": "abc", SECRET=xyz\nname: fine', secrets=["short"])
    assert "abc" not in text and "xyz" not in text and "name: fine" in text
    assert scrub("short", secrets=["short"]) == REDACTED and scrub("shorthand", secrets=["short"]) == "shorthand"


def test_settings_precedence_and_errors(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path)
        mp.delenv("AWS_SECRET_ACCESS_KEY")
        mp.delenv("AWS_DEFAULT_REGION")
        (tmp_path / "home" / ".sp3d").mkdir(parents=True)
        (tmp_path / "home/.sp3d/profile.env").write_text("SP3D_ARTIFACT_BUCKET=from-home\nAWS_DEFAULT_REGION=eu-west-1\n")
        (tmp_path / "state").mkdir()
        (tmp_path / "state/profile.env").write_text("SP3D_ARTIFACT_BUCKET=from-state\nMLFLOW_TRACKING_URI=http://x:1\n")
        (tmp_path / "sp3d.env").write_text("SP3D_ARTIFACT_BUCKET=from-project\nAWS_SECRET_ACCESS_KEY=prof-secret\n")
        s = load_settings()
        assert (s.artifact_bucket, s.aws_default_region, s.tracking_uri) == ("from-project", "eu-west-1", "http://x:1")
        assert "prof-secret" not in repr(s) and s.secret_values() == [FAKE_ACCESS, "prof-secret"]
        mp.setenv("SP3D_ARTIFACT_BUCKET", "from-env")
        assert load_settings().artifact_bucket == "from-env"
        assert load_settings(artifact_bucket="from-kwarg").artifact_bucket == "from-kwarg"
        (tmp_path / "state/profile.env").unlink()
        assert load_settings().tracking_uri == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
        mp.setenv("SP3D_S3_ENDPOINT", "ftp://nope")
        with pytest.raises(SettingsError, match="SP3D_S3_ENDPOINT"):
            load_settings()


def test_resolve_storage_and_unreachable_endpoint(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, s3_endpoint=f"http://127.0.0.1:{stack_lib.free_port()}",
                             aws_access_key_id="a", aws_secret_access_key="b")
    path, fs = resolve_storage("s3://bucket/ray/results", settings)
    assert path == "bucket/ray/results" and type(fs).__name__ == "S3FileSystem"
    assert resolve_storage(tmp_path / "x", settings) == (str((tmp_path / "x").resolve()), None)
    with pytest.raises(StorageError, match="unsupported"):
        resolve_storage("gs://bucket/x", settings)
    start = time.monotonic()
    with pytest.raises(StorageError, match="unreachable"):
        ensure_bucket(settings, "sp3d-nothing-here")
    assert time.monotonic() - start < 15


def test_dataset_fingerprint_tracks_manifest_and_files(tmp_path: Path) -> None:
    assert tracking.dataset_fingerprint(tmp_path / "absent") == "missing"
    assert tracking.dataset_fingerprint(tmp_path) == "empty"
    (tmp_path / "seq1").mkdir()
    (tmp_path / "seq1/calibration_seq1.json").write_text("{}")
    first = tracking.dataset_fingerprint(tmp_path)
    (tmp_path / "seq1/calibration_seq1.json").write_text('{"cameras": []}')
    second = tracking.dataset_fingerprint(tmp_path)
    (tmp_path / "synth_manifest.json").write_text('{"seed": 1}')
    third = tracking.dataset_fingerprint(tmp_path)
    assert len({first, second, third}) == 3 and all(len(f) == 12 for f in (first, second, third))


def test_stack_rejects_busy_port_and_cleans_stale_pids(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(stack_lib.StackError, match="in use"):
            stack_lib.stack_up(settings, mlflow_port=0, s3_port=busy.getsockname()[1])
    assert not list(settings.stack_dir.glob("*.pid"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / "stack.json").write_text(
        '{"bucket": "b", "region": "us-east-1", "s3": {"kind": "moto", "url": "http://127.0.0.1:9", "port": 9},'
        ' "mlflow": {"kind": "mlflow", "url": "http://127.0.0.1:9", "port": 9}}')
    (settings.stack_dir / "mlflow.pid").write_text(dead.stdout.strip())
    services = stack_lib.stack_status(settings)
    assert [s.healthy for s in services] == [False, False] and services[1].pid is None
    assert not (settings.stack_dir / "mlflow.pid").exists()
    assert stack_lib.stack_down(settings) == []


# --- the shared session fixtures (reused by Ray Train / sweep tests) -----------------------------------------


@SERVERS
def test_mlflow_server_fixture_proxies_artifacts_and_reuses_runs(
    mlflow_server: str, s3_server: str, mlflow_server_bucket: str, tmp_path: Path
) -> None:
    settings = tracking.configure(load_settings(state_dir=tmp_path, mlflow_tracking_uri=mlflow_server,
                                                s3_endpoint=s3_server))
    client = MlflowClient()
    try:
        with tracking.start_run("fixture-sweep", "sweep") as parent:
            parent_id = parent.info.run_id
            with tracking.start_run("fixture-sweep", "trial-0", parent_run_id=parent_id) as child:
                tracking.log_text("hello", "hello.txt")
            experiment_id = parent.info.experiment_id
            ids = [client.create_run(experiment_id, run_name=f"trial-{i}", tags={"mlflow.parentRunId": parent_id})
                   .info.run_id for i in (1, 2, 3)]  # RUNNING, as trials of a stopped sweep would be
            killed = tracking.terminate_running_children(parent_id, keep=[ids[2]])
            assert sorted(killed) == sorted(ids[:2])
            assert [client.get_run(i).info.status for i in ids] == ["KILLED", "KILLED", "RUNNING"]
            assert client.get_run(parent_id).info.status == "RUNNING"
            with tracking.start_run("fixture-sweep", "trial-1", parent_run_id=parent_id) as resumed:
                assert resumed.info.run_id == ids[0]  # a restarted trial reuses its run
            with tracking.start_run("fixture-sweep", "trial-0", parent_run_id=parent_id) as fresh:
                assert fresh.info.run_id != child.info.run_id  # a FINISHED run is never reused
        keys = [o["Key"] for o in s3_client(settings).list_objects_v2(Bucket=mlflow_server_bucket).get("Contents", [])]
        assert any(k.endswith(f"{child.info.run_id}/artifacts/hello.txt") for k in keys), keys
    finally:
        tracking.reset()
