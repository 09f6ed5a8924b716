"""`sp3d submit` / `sp3d jobs` (sp3d.jobs) — unit checks plus a REAL two-node Ray cluster (`ray start` head +
worker, token auth, Jobs API): work spreads over both nodes, status/stop, a job survives losing a node, and
credentials never show up in CLI output or job logs."""

from __future__ import annotations

import hashlib
import re
import shlex
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from cluster_helpers import CLEAN_VARS, TEST_S3_SECRET_KEY
from cluster_helpers import sp3d_cli as sp3d
from sp3d import jobs
from sp3d.jobs import JobsError
from sp3d.procs import free_port
from sp3d.redact import REDACTED
from sp3d.settings import load_settings

CLUSTER = pytest.mark.slow  # the two-node cluster alone takes 15-35 s to start on 2 busy cores

SPREAD = '''
import ray
ray.init()

@ray.remote(num_cpus=0, resources={"sp3d_driver": 0.01})
def on_head():
    return ray.get_runtime_context().get_node_id()

@ray.remote(num_cpus=0, resources={"worker_node": 0.01})
def on_worker():
    return ray.get_runtime_context().get_node_id()

print("HEAD_TASK_NODE", ray.get(on_head.remote()))
print("WORKER_TASK_NODE", ray.get(on_worker.remote()))
'''

NODE_LOSS = '''
import pathlib, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init()
marks = pathlib.Path(sys.argv[1])
worker = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "worker_node" in n["Resources"])

def here(kind):
    node = ray.get_runtime_context().get_node_id()
    (marks / f"{kind}-{node}").touch()
    if node == worker:
        time.sleep(600)  # killed with its node; the retry elsewhere returns at once
    return node

@ray.remote(num_cpus=0.5, max_retries=-1)
def task():
    return here("task")

@ray.remote(num_cpus=0.25, max_restarts=-1, max_task_retries=-1)
class Holder:
    def node(self):
        return here("actor")

soft = NodeAffinitySchedulingStrategy(worker, soft=True)
task_ref = task.options(scheduling_strategy=soft).remote()
actor_ref = Holder.options(scheduling_strategy=soft).remote().node.remote()
print("STARTED_ON", worker, flush=True)
print("TASK_DONE_ON", ray.get(task_ref))
print("ACTOR_DONE_ON", ray.get(actor_ref))
'''

CREDS = '''
import hashlib, os
print("ENV_NAMES", " ".join(sorted(k for k in os.environ if k.startswith(("AWS_", "MLFLOW_", "SP3D_")))))
print("SECRET_SHA256", hashlib.sha256(os.environ.get("AWS_SECRET_ACCESS_KEY", "").encode()).hexdigest())
'''

WORKING_DIR_PROBE = ("import os, selfpose3d, sp3d; print('PROBE', os.path.isfile('selfpose3d/data/__init__.py'), "
                     "os.path.exists('.venv'), os.path.exists('.git')); print('FROM', selfpose3d.__file__); "
                     "print('FROM', sp3d.__file__)")


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No address/token/settings from the outside; cwd and state dir in tmp (no profile files)."""
    for name in CLEAN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SP3D_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- unit checks (no cluster) -----------------------------------------------------------------------------
def test_bad_space_fails_before_contacting_the_cluster(isolated: Path) -> None:
    out = sp3d("submit", "sweep", "lambdaa", "--address", "http://127.0.0.1:1", code=1)
    assert "unknown search space 'lambdaa'" in out and "cannot reach" not in out
    out = sp3d("submit", "train", "--config", "no/such.yaml", "--address", "http://127.0.0.1:1", code=1)
    assert "no/such.yaml" in out and "cannot reach" not in out


def test_unreachable_address_and_missing_address_are_one_line_errors(isolated: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs", "status"], ["jobs", "logs", "x"], ["jobs", "stop", "x"], ["submit", "run"]):
        out = sp3d(*args, "--address", url, *(["--", "true"] if args[0] == "submit" else []), code=1)
        assert out.startswith("error: cannot reach the Ray dashboard at " + url) and out.count("\n") == 1, out
    assert "no Ray dashboard address" in sp3d("jobs", "status", code=1)


def test_address_resolution(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert jobs.resolve_address("10.0.0.5:8265") == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert jobs.resolve_address(None) == "http://head:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://api:443")
    assert jobs.resolve_address(None) == "https://api:443"
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    (isolated / "sp3d.env").write_text("RAY_ADDRESS=http://from-profile:8265\n")
    assert jobs.resolve_address(None) == "http://from-profile:8265"
    with pytest.raises(JobsError, match="ftp://x"):
        jobs.resolve_address("ftp://x")


def test_token_resolution_follows_ray_precedence(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home_token = isolated / "home" / ".ray" / "auth_token"
    assert jobs.resolve_token() is None
    home_token.parent.mkdir(parents=True)
    home_token.write_text("tok-home\n")
    assert jobs.resolve_token() == "tok-home"
    path_token = isolated / "path_token"
    path_token.write_text("tok-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_token))
    assert jobs.resolve_token() == "tok-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-env")
    assert jobs.resolve_token() == "tok-env"
    explicit = isolated / "explicit"
    explicit.write_text("tok-file")
    assert jobs.resolve_token(explicit) == "tok-file"
    assert jobs.auth_headers("tok-file") == {"Authorization": "Bearer tok-file"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobs.resolve_token() is None
    with pytest.raises(JobsError, match="--token-file .*missing"):
        jobs.resolve_token(isolated / "missing")


def test_spec_quoting_env_forwarding_and_redaction(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret, key_id = f"fake-secret-{uuid.uuid4().hex}", f"FAKEKEYID{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("SP3D_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///local.db")  # local store: meaningless on a cluster
    settings = load_settings()
    plain = jobs.runtime_env_vars(settings)
    assert plain == {"SP3D_S3_ENDPOINT": "http://minio:9000"}  # unset region/bucket are not forced on nodes
    forwarded = jobs.runtime_env_vars(settings, forward_credentials=True)
    assert forwarded["AWS_SECRET_ACCESS_KEY"] == secret and forwarded["AWS_ACCESS_KEY_ID"] == key_id
    assert jobs.runtime_env_vars(settings, forward_settings=False) == {}

    command = ["sp3d", "sweep", "my space.yaml", "--set", "train.name=a b; rm -rf /"]
    spec = jobs.build_spec(command, "sweep", "My Sweep!", isolated, forwarded)
    assert shlex.split(spec.entrypoint) == command
    assert re.fullmatch(r"sp3d-sweep-my-sweep-\d{8}-\d{6}-[0-9a-f]{6}", spec.submission_id)
    shown = str(spec.redacted())
    assert secret not in shown and key_id not in shown and REDACTED in shown and "minio" in shown
    assert spec.runtime_env["env_vars"]["AWS_SECRET_ACCESS_KEY"] == secret  # really sent when opted in

    local = {"MLFLOW_TRACKING_URI": "http://localhost:5000", "SP3D_S3_ENDPOINT": "http://minio:9000"}
    assert jobs.drop_loopback_urls(local, "http://10.0.0.5:8265") == ({"SP3D_S3_ENDPOINT": "http://minio:9000"},
                                                                      ["MLFLOW_TRACKING_URI"])
    assert jobs.drop_loopback_urls(local, "http://127.0.0.1:8265") == (local, [])  # local cluster: keep


def test_working_dir_excludes_keep_packages_named_data(tmp_path: Path) -> None:
    from ray._private.runtime_env.packaging import create_package

    for rel in ("data/big.bin", "runs/r.txt", ".venv/bin/python", ".git/HEAD", ".sp3d/mlflow.db",
                "reports/x.html", "selfpose3d/data/__init__.py", "platform/sp3d/jobs.py", "search_spaces/a.yaml"):
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_text("x")
    zip_path = tmp_path / "pkg.zip"
    create_package(str(tmp_path / "repo"), zip_path, True, excludes=jobs.WORKING_DIR_EXCLUDES)  # Ray's packer
    names = {n for n in zipfile.ZipFile(zip_path).namelist() if not n.endswith("/")}
    assert names == {"selfpose3d/data/__init__.py", "platform/sp3d/jobs.py", "search_spaces/a.yaml"}


def test_portable_paths(tmp_path: Path) -> None:
    inside = tmp_path / "repo" / "spaces" / "s.yaml"
    inside.parent.mkdir(parents=True)
    inside.write_text("x")
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("x")
    assert jobs.portable_path(str(inside), tmp_path / "repo") == "spaces/s.yaml"
    assert jobs.portable_path("lambda", tmp_path / "repo") == "lambda"  # a name, resolved on the cluster
    with pytest.raises(JobsError, match="elsewhere.yaml: not inside the working dir"):
        jobs.portable_path(str(outside), tmp_path / "repo")


def test_follow_logs_redacts_secrets_split_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"split-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)

    class Client:  # stands in for JobSubmissionClient: the chunk boundary falls inside the secret
        def get_address(self) -> str:
            return "http://stub:8265"

        def get_job_status(self, job_id: str) -> str:
            return "RUNNING"

        async def tail_job_logs(self, job_id: str):
            for chunk in ("start\nvalue=", secret[:9], secret[9:] + " end\n", "tail"):
                yield chunk

    written: list[str] = []
    jobs.follow_logs(Client(), "job", written.append)  # type: ignore[arg-type]
    text = "".join(written)
    assert secret not in text and secret[9:] not in text and text == f"start\nvalue={REDACTED} end\ntail"


# --- the real two-node cluster --------------------------------------------------------------------------
def _submit_run(cluster, workdir: Path, *command: str, extra: tuple[str, ...] = ("--no-env",), code: int = 0):
    out = sp3d("submit", "run", "--address", cluster.dashboard_url, "--token-file", cluster.token_file,
               "--working-dir", workdir, *extra, "--", *command, code=code)
    return re.search(r"submitted job (\S+)", out).group(1), out


def _client(cluster):
    return jobs.connect(cluster.dashboard_url, cluster.token_file)


@CLUSTER
def test_cluster_has_two_nodes_and_work_spreads_over_both(ray_two_node_cluster, isolated: Path) -> None:
    cluster = ray_two_node_cluster
    gcs_address, dashboard_url, env = cluster
    assert gcs_address.startswith("127.0.0.1:") and env["RAY_AUTH_MODE"] == "token" and "RAY_ADDRESS" not in env
    nodes = cluster.node_ids()
    assert set(nodes) == {"head", "worker"} and len(cluster.alive_nodes()) == 2
    (isolated / "spread.py").write_text(SPREAD)

    start = time.monotonic()
    job_id, out = _submit_run(cluster, isolated, "python", "spread.py", extra=("--no-env", "--wait"))
    print(f"job roundtrip (submit -> SUCCEEDED, --wait): {time.monotonic() - start:.1f} s; "
          f"cluster start: {getattr(cluster, 'timings', {})}")
    assert f"job {job_id}: SUCCEEDED" in out and f"{dashboard_url}/#/jobs/{job_id}" in out
    logs = sp3d("jobs", "logs", job_id, "--address", dashboard_url, "--token-file", cluster.token_file)
    assert f"HEAD_TASK_NODE {nodes['head']}" in logs and f"WORKER_TASK_NODE {nodes['worker']}" in logs

    status = sp3d("jobs", "status", job_id, "--address", dashboard_url, "--token-file", cluster.token_file)
    assert "status: SUCCEEDED" in status and "entrypoint: python spread.py" in status
    table = sp3d("jobs", "status", "--address", dashboard_url, "--token-file", cluster.token_file)
    assert job_id in table and "SUCCEEDED" in table
    unknown = sp3d("jobs", "status", "no-such-job", "--address", dashboard_url, "--token-file",
                   cluster.token_file, code=1)
    assert "unknown job id 'no-such-job'" in unknown
    no_token = sp3d("jobs", "status", "--address", dashboard_url, code=1)  # token auth is really on
    assert "rejected the request" in no_token and "--token-file" in no_token


@CLUSTER
def test_stop_a_running_job(ray_two_node_cluster, isolated: Path) -> None:
    cluster = ray_two_node_cluster
    job_id, _ = _submit_run(cluster, isolated, "python", "-c", "import time; print('sleeping', flush=True); "
                            "time.sleep(600)")
    assert jobs.wait_for(_client(cluster), job_id, ("RUNNING",), timeout=120) == "RUNNING"
    out = sp3d("jobs", "stop", job_id, "--wait", "--address", cluster.dashboard_url, "--token-file",
               cluster.token_file)
    assert f"job {job_id}: STOPPED" in out
    assert "status: STOPPED" in sp3d("jobs", "status", job_id, "--address", cluster.dashboard_url,
                                     "--token-file", cluster.token_file)


@CLUSTER
def test_submit_sweep_entrypoint_and_uploaded_working_dir(ray_two_node_cluster, isolated: Path) -> None:
    cluster = ray_two_node_cluster
    repo = Path(__file__).resolve().parents[1]
    out = sp3d("submit", "sweep", "lambda", "--samples", 2, "--scheduler", "asha", "--name", "my sweep",
               "--set", "train.pose_net.epochs=1", "--future-flag", "x", "--working-dir", repo, "--no-env",
               "--address", cluster.dashboard_url, "--token-file", cluster.token_file)
    job_id = re.search(r"submitted job (\S+)", out).group(1)
    client = _client(cluster)
    jobs.stop(client, job_id, wait=True, timeout=120)  # only the submission is under test, not a real sweep
    expected = ["sp3d", "sweep", "lambda", "--samples", "2", "--scheduler", "asha", "--name", "my sweep",
                "--set", "train.pose_net.epochs=1", "--future-flag", "x"]
    assert shlex.split(jobs.job_details(client, job_id)["entrypoint"]) == expected
    assert job_id.startswith("sp3d-sweep-my-sweep-")

    probe_id, out = _submit_run(cluster, repo, "python", "-c", WORKING_DIR_PROBE, extra=("--no-env", "--wait"))
    logs = jobs.job_logs(client, probe_id)
    assert "PROBE True False False" in logs  # package kept, .venv/.git excluded
    # both packages are the uploaded copies (working_dir + py_modules), not the ones installed on the nodes
    sources = re.findall(r"FROM (\S+)", logs)
    assert len(sources) == 2 and all("runtime_resources" in p and str(repo) not in p for p in sources), sources
    assert jobs.job_details(client, probe_id)["runtime_env"]["py_modules"]


@CLUSTER
def test_credentials_never_echoed_and_only_forwarded_on_request(
    ray_two_node_cluster, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = ray_two_node_cluster
    secret, key_id = f"fake-secret-{uuid.uuid4().hex}", f"FAKEKEYID{uuid.uuid4().hex[:10].upper()}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("SP3D_S3_ENDPOINT", "http://s3.example:9000")
    (isolated / "creds.py").write_text(CREDS)
    client = _client(cluster)
    seen: dict[bool, str] = {}
    for forward in (False, True):
        extra = ("--env-from-profile", "--wait") + (("--forward-credentials",) if forward else ())
        job_id, out = _submit_run(cluster, isolated, "python", "creds.py", extra=extra)
        raw_logs = client.get_job_logs(job_id)  # unredacted: what the job really printed
        shown = out + sp3d("jobs", "logs", job_id, "--address", cluster.dashboard_url, "--token-file",
                           cluster.token_file) + sp3d("jobs", "status", job_id, "--address",
                                                      cluster.dashboard_url, "--token-file", cluster.token_file)
        for text in (shown, raw_logs):
            assert secret not in text and key_id not in text
        names = re.search(r"ENV_NAMES (.*)", raw_logs).group(1).split()
        assert {"MLFLOW_TRACKING_URI", "SP3D_S3_ENDPOINT", "AWS_SECRET_ACCESS_KEY"} <= set(names)
        seen[forward] = re.search(r"SECRET_SHA256 (\w+)", raw_logs).group(1)
        sent = client.get_job_info(job_id).runtime_env.get("env_vars", {})
        assert (sent.get("AWS_SECRET_ACCESS_KEY") == secret) is forward  # redaction hid a value really sent
        assert sent["SP3D_S3_ENDPOINT"] == "http://s3.example:9000"
        if forward:
            assert REDACTED in shown
    assert seen[False] == hashlib.sha256(TEST_S3_SECRET_KEY.encode()).hexdigest()  # the node's own key
    assert seen[True] == hashlib.sha256(secret.encode()).hexdigest()  # the forwarded key arrived


@CLUSTER
def test_job_survives_losing_the_worker_node(ray_two_node_cluster, isolated: Path) -> None:
    cluster = ray_two_node_cluster
    nodes = cluster.node_ids()
    marks = isolated / "marks"
    marks.mkdir()
    (isolated / "node_loss.py").write_text(NODE_LOSS)
    job_id, _ = _submit_run(cluster, isolated, "python", "node_loss.py", str(marks))
    try:
        deadline = time.monotonic() + 120
        wanted = {f"task-{nodes['worker']}", f"actor-{nodes['worker']}"}
        while not wanted <= {p.name for p in marks.iterdir()}:
            assert time.monotonic() < deadline, f"work never started on the worker node: {list(marks.iterdir())}"
            time.sleep(0.3)
        lost_after = cluster.kill_worker()
        client = _client(cluster)
        status = jobs.wait_for(client, job_id, timeout=180)
        logs = jobs.job_logs(client, job_id)
        print(f"worker node declared dead after {lost_after:.1f} s")
        assert status == "SUCCEEDED", logs
        assert f"TASK_DONE_ON {nodes['head']}" in logs and f"ACTOR_DONE_ON {nodes['head']}" in logs
    finally:
        if len(cluster.alive_nodes()) < 2:
            cluster.restart_worker()  # leave the session cluster with two nodes for later tests
    assert len(cluster.alive_nodes()) == 2
