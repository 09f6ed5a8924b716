"""Helpers for tests against a real two-node Ray cluster: the cluster itself (`TwoNodeRayCluster`, used by
the ``ray_two_node_cluster`` fixture), the env vars a cluster client must not inherit, and `sp3d_cli` to run
`sp3d submit` / `sp3d jobs` in-process."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from typer.testing import CliRunner

TEST_S3_ACCESS_KEY = "sp3d-test-access"
TEST_S3_SECRET_KEY = "sp3d-test-secret"
# Variables that would point a client at another cluster / store, or hand it credentials.
CLEAN_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE",
              "SP3D_PROFILE", "MLFLOW_TRACKING_URI", "SP3D_S3_ENDPOINT", "SP3D_ARTIFACT_BUCKET",
              "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")


def sp3d_cli(*args: object, code: int = 0) -> str:
    """Run `sp3d <args>` (submit / jobs commands) in-process; assert the exit code; return stdout + stderr."""
    from sp3d.commands.submit import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == code, f"sp3d {' '.join(map(str, args))} -> {result.exit_code}:\n{result.output}"
    return result.output


class TwoNodeRayCluster:
    """Head (1 CPU, ``sp3d_driver: 2``, dashboard + Jobs API, token auth) and a worker node (1 CPU,
    ``worker_node: 1``), each started by `ray start` in its own process group, with HOME / RAY_TMPDIR /
    TMPDIR in a private temp dir and free ports, so it never meets the in-process `ray_session`.

    Unpacks as ``gcs_address, dashboard_url, env``; ``env`` is the environment for subprocesses that talk to
    it (token via RAY_AUTH_TOKEN_PATH = ``token_file``, the venv first on PATH, no RAY_ADDRESS). Nodes hold fake
    S3 credentials (`TEST_S3_ACCESS_KEY` / `TEST_S3_SECRET_KEY`) in their own environment, as real nodes do.
    `kill_worker()` SIGKILLs every process of the worker node (node loss); `restart_worker()` joins a new one.
    """

    MARK = "SP3D_TEST_RAY_NODE"

    def __init__(self, root: Path) -> None:
        import sys
        import uuid

        from sp3d.procs import free_port

        self.root, self.tag = root, uuid.uuid4().hex[:8]
        self.port, self.dashboard_port = free_port(), free_port()
        self.gcs_address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.token_file = root / "home" / ".ray" / "auth_token"
        self.token_file.parent.mkdir(parents=True)
        self.token_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
        self.ray = str(Path(sys.executable).with_name("ray"))
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("RAY_", "AWS_", "SP3D_", "MLFLOW_TRACKING", "MLFLOW_S3"))}
        self.env = {**keep, "HOME": str(root / "home"), "RAY_TMPDIR": str(root), "TMPDIR": str(root),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_health_check_period_ms": "1000",  # notice a lost node in ~5 s instead of ~15 s
                    "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.pgids: dict[str, list[int]] = {"head": [], "worker": []}
        self.worker_starts = 0  # each worker node gets its own temp dir w<n>

    def __iter__(self):
        return iter((self.gcs_address, self.dashboard_url, self.env))

    def _ray_start(self, role: str, args: list[str]) -> float:
        import subprocess
        import time

        from sp3d.procs import free_port

        env = {**self.env, self.MARK: f"{self.tag}-{role}",
               "AWS_ACCESS_KEY_ID": TEST_S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_S3_SECRET_KEY,
               "AWS_DEFAULT_REGION": "us-east-1"}
        cmd = [self.ray, "start", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={free_port()}", "--object-store-memory=150000000", *args]
        log, start = self.root / f"ray-start-{role}.log", time.monotonic()
        with log.open("a") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pgids[role].append(proc.pid)
        if proc.wait(timeout=180) != 0:
            raise RuntimeError(f"`ray start` ({role}) failed; see {log}:\n{log.read_text()[-3000:]}")
        return time.monotonic() - start

    def start(self) -> dict[str, float]:
        """Start head then worker; returns seconds taken per phase (head, dashboard, worker)."""
        import time

        from sp3d.procs import free_port

        timings = {"head": self._ray_start("head", [
            "--head", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={self.root / 'ray'}",
            f"--ray-client-server-port={free_port()}", '--resources={"sp3d_driver": 2}'])}
        start = time.monotonic()
        while not self.alive_nodes():  # the state API answers with the token: dashboard + auth are up
            if time.monotonic() - start > 120:
                raise RuntimeError(f"Ray dashboard {self.dashboard_url} not ready after 120 s")
            time.sleep(0.5)
        timings["dashboard"] = time.monotonic() - start
        timings["worker"] = self.restart_worker()
        return timings

    def alive_nodes(self) -> list[dict]:
        """Alive nodes (state API dicts: node_id, resources_total, ...); [] while the dashboard is down."""
        from sp3d.jobs import JobsError, alive_nodes

        try:
            return alive_nodes(self.dashboard_url, self.token_file.read_text())
        except JobsError:
            return []

    def node_ids(self) -> dict[str, str]:
        """``{"head": id, "worker": id}`` of the alive nodes (worker = the one with ``worker_node``)."""
        return {("worker" if "worker_node" in n["resources_total"] else "head"): n["node_id"]
                for n in self.alive_nodes()}

    def wait_nodes(self, count: int, timeout: float = 120.0) -> float:
        """Wait until exactly ``count`` nodes are alive; returns seconds waited."""
        import time

        start = time.monotonic()
        while len(self.alive_nodes()) != count:
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"expected {count} alive Ray nodes, have {len(self.alive_nodes())}")
            time.sleep(0.5)
        return time.monotonic() - start

    def restart_worker(self) -> float:
        """Join a (new) worker node and wait for 2 alive nodes; returns seconds taken."""
        self.worker_starts += 1
        # its own temp dir, as on a real machine: Ray re-extracts a job's working_dir when a node first uses
        # it (rmtree + unzip), which, in a shared runtime_resources dir, pulls the cwd from under the head's job
        temp_dir = self.root / f"w{self.worker_starts}"
        started = self._ray_start("worker", [f"--address={self.gcs_address}", '--resources={"worker_node": 1}',
                                             f"--temp-dir={temp_dir}"])
        return started + self.wait_nodes(2)

    def _pids(self, roles: tuple[str, ...]) -> list[int]:
        """Processes of ``roles``: in their `ray start` process groups, carrying their marker in the
        environment, or descending from such a process."""
        marks = [f"{self.MARK}={self.tag}-{r}".encode() for r in roles]
        groups = {g for r in roles for g in self.pgids[r]}
        procs: dict[int, tuple[int, int, bool]] = {}
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if stat[0] not in ("Z", "X"):  # zombies are dead already
                procs[int(proc.name)] = (int(stat[1]), int(stat[2]), any(m in env for m in marks))
        chosen = {pid for pid, (_, pgid, marked) in procs.items() if marked or pgid in groups}
        grown = True
        while grown:
            extra = {pid for pid, (ppid, _, _) in procs.items() if ppid in chosen and pid not in chosen}
            chosen |= extra
            grown = bool(extra)
        return sorted(chosen - {os.getpid()})

    def _signal(self, pids: list[int], sig: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_worker(self) -> float:
        """SIGKILL every process of the worker node and wait until the head sees 1 alive node (seconds)."""
        import signal

        self._signal(self._pids(("worker",)), signal.SIGKILL)
        return self.wait_nodes(1)

    def stop(self) -> None:
        """SIGTERM every process of both nodes, SIGKILL what is left after 5 s."""
        import signal
        import time

        pids = self._pids(("head", "worker"))
        self._signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self._pids(("head", "worker")):
            time.sleep(0.2)
        self._signal(self._pids(("head", "worker")), signal.SIGKILL)
