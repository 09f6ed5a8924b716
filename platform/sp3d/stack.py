"""Local experiment stack: an S3 endpoint (moto, or an existing MinIO/AWS one) + an MLflow server.

`stack_up` starts detached processes (their own session/process group, so they outlive the CLI),
records pids, ports and logs under ``<state dir>/stack/``, waits for health, creates the artifact
bucket and writes ``<state dir>/profile.env`` so every later `sp3d` command logs to the stack.
Only the MLflow server's environment receives ``MLFLOW_S3_ENDPOINT_URL`` and the S3 credentials;
clients upload artifacts through the server's proxy (``mlflow-artifacts:/``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from selfpose3d.fileio import atomic_output
from sp3d.procs import (
    HOST,
    ServiceStartError,
    free_port,
    http_ok,
    process_alive,
    spawn,
    stop_process_groups,
    wait_healthy,
)
from sp3d.settings import Settings
from sp3d.storage import StorageError, ensure_bucket

LOCAL_ACCESS_KEY = "sp3d-local-access"  # moto accepts any credentials; these never leave the machine
LOCAL_SECRET_KEY = "sp3d-local-secret"
MARKERS = {"s3": b"moto.server", "mlflow": b"mlflow\x00server"}


class StackError(RuntimeError):
    """The stack cannot start/stop; the message says why and which log file to read."""


__all__ = [
    "HOST", "ServiceInfo", "StackError", "free_port", "http_ok", "mlflow_server_command", "mlflow_server_env",
    "moto_command", "process_alive", "read_state", "spawn", "stack_down", "stack_status", "stack_up",
    "stop_process_groups", "wait_healthy",
]


@dataclass
class ServiceInfo:
    """One stack service as seen by `stack_status`."""

    name: str  # "s3" or "mlflow"
    kind: str  # "moto", "external" or "mlflow"
    pid: int | None
    port: int | None
    url: str
    log: Path | None
    healthy: bool


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_port(port: int, flag: str) -> int:
    if port == 0:
        return free_port()
    if not _port_free(port):
        raise StackError(f"port {port} on {HOST} is in use; pick another with {flag} (0 = any free port)")
    return port


def moto_command(port: int) -> list[str]:
    """Command line of a local in-memory S3 endpoint (moto) on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


def mlflow_server_command(db_path: Path, artifacts_destination: str, port: int) -> list[str]:
    """Command line of an MLflow server with a sqlite backend proxying artifacts to ``artifacts_destination``."""
    return [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db_path}",
        "--artifacts-destination", artifacts_destination, "--host", HOST, "--port", str(port), "--workers", "1",
    ]


def mlflow_server_env(endpoint: str | None, access_key: str | None, secret_key: str | None, region: str) -> dict[str, str]:
    """Environment for the MLflow server process only: S3 endpoint + credentials, MLflow jobs off."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update({"AWS_DEFAULT_REGION": region, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    if endpoint:
        env["MLFLOW_S3_ENDPOINT_URL"] = endpoint
    if access_key and secret_key:
        env.update({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
    return env


class _Files:
    """File layout of a stack under ``<state dir>/stack``."""

    def __init__(self, settings: Settings) -> None:
        self.dir = settings.stack_dir
        self.state = self.dir / "stack.json"
        self.db = self.dir / "mlflow.db"
        self.profile = settings.profile_path

    def pid(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.dir / f"{name}.log"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    with atomic_output(path, mode=mode) as tmp:
        Path(tmp).write_text(text)


def read_state(settings: Settings) -> dict[str, Any] | None:
    """The recorded stack (ports, urls, bucket) or None when no stack was started."""
    try:
        return json.loads(_Files(settings).state.read_text())
    except (OSError, ValueError):
        return None


def _live_pid(files: _Files, name: str) -> int | None:
    """The service's pid if it is running; stale pid files are removed."""
    pid = _read_pid(files.pid(name))
    if pid is not None and process_alive(pid, MARKERS[name]):
        return pid
    files.pid(name).unlink(missing_ok=True)
    return None


def stack_status(settings: Settings) -> list[ServiceInfo]:
    """Both services of the recorded stack with pid, port, health and log path (empty if none)."""
    files, state = _Files(settings), read_state(settings)
    if state is None:
        return []
    out = []
    for name in ("s3", "mlflow"):
        info = state[name]
        pid = _live_pid(files, name) if info["kind"] != "external" else None
        health_url = info["url"] + ("/health" if name == "mlflow" else "/")
        external = info["kind"] == "external"
        healthy = http_ok(health_url, any_status=external) if (pid or external) else False
        log = files.log(name) if info["kind"] != "external" else None
        out.append(ServiceInfo(name, info["kind"], pid, info.get("port"), info["url"], log, healthy))
    return out


def _credentials(settings: Settings, external: bool) -> tuple[str | None, str | None, bool]:
    """(access, secret, generated): moto gets fixed local credentials unless some are configured."""
    access = settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None
    secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
    if access and secret:
        return access, secret, False
    if external:
        return None, None, False
    return LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY, True


def _spawn_service(files: _Files, name: str, cmd: list[str], env: dict[str, str]) -> int:
    pid = spawn(cmd, env, files.log(name))
    _atomic_write(files.pid(name), str(pid))
    return pid


def _stop_started(files: _Files, started: dict[str, int]) -> None:
    stop_process_groups(list(started.values()))
    for name in started:
        files.pid(name).unlink(missing_ok=True)


def _write_profile(files: _Files, state: dict[str, Any], creds: tuple) -> None:
    lines = [
        "# Written by `sp3d stack up`; removed by `sp3d stack down`. Read by every sp3d command.",
        f"MLFLOW_TRACKING_URI={state['mlflow']['url']}",
        f"SP3D_S3_ENDPOINT={state['s3']['url']}",
        f"SP3D_ARTIFACT_BUCKET={state['bucket']}",
        f"AWS_DEFAULT_REGION={state['region']}",
    ]
    if creds[2]:  # generated local credentials for moto only; real credentials are never written here
        lines += [f"AWS_ACCESS_KEY_ID={creds[0]}", f"AWS_SECRET_ACCESS_KEY={creds[1]}"]
    _atomic_write(files.profile, "\n".join(lines) + "\n", mode=0o600)


def _check_matches(state: dict[str, Any], external_s3: str | None, mlflow_port: int | None) -> None:
    if external_s3 and state["s3"]["url"] != external_s3.rstrip("/"):
        raise StackError(f"stack already running with S3 {state['s3']['url']}; run `sp3d stack down` first")
    if mlflow_port and state["mlflow"]["port"] != mlflow_port:
        raise StackError(f"stack already running with MLflow on port {state['mlflow']['port']}; run `sp3d stack down` first")


def _s3_settings(settings: Settings, url: str, creds: tuple) -> Settings:
    """Settings pointing at the stack's S3 endpoint with the credentials the stack uses."""
    access, secret = (SecretStr(c) if c else None for c in creds[:2])
    return settings.model_copy(update={"s3_endpoint": url, "aws_access_key_id": access, "aws_secret_access_key": secret})


def _pick_ports(settings: Settings, s3_port: int | None, mlflow_port: int | None, need: set[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    if "s3" in need:
        ports["s3"] = _pick_port(settings.s3_port if s3_port is None else s3_port, "--s3-port")
    if "mlflow" in need:
        ports["mlflow"] = _pick_port(settings.mlflow_port if mlflow_port is None else mlflow_port, "--mlflow-port")
        while ports["mlflow"] == ports.get("s3"):
            ports["mlflow"] = free_port()
    return ports


def _start_services(
    files: _Files, settings: Settings, ports: dict[str, int], s3_url: str, creds: tuple, timeout: float
) -> None:
    """Spawn the needed services together, wait for health, create the bucket; undo on failure."""
    started: dict[str, int] = {}
    s3_settings = _s3_settings(settings, s3_url, creds)
    try:
        if "s3" in ports:
            started["s3"] = _spawn_service(files, "s3", moto_command(ports["s3"]), dict(os.environ))
        else:  # an existing endpoint: check it before starting anything
            ensure_bucket(s3_settings, settings.artifact_bucket)
        if "mlflow" in ports:
            env = mlflow_server_env(s3_url, creds[0], creds[1], settings.aws_default_region)
            dest = f"s3://{settings.artifact_bucket}/mlartifacts"
            started["mlflow"] = _spawn_service(files, "mlflow", mlflow_server_command(files.db, dest, ports["mlflow"]), env)
        if "s3" in ports:
            wait_healthy("S3 endpoint (moto)", f"{s3_url}/", timeout, started["s3"], files.log("s3"))
            ensure_bucket(s3_settings, settings.artifact_bucket)
        if "mlflow" in ports:
            url = f"http://{HOST}:{ports['mlflow']}/health"
            wait_healthy("MLflow server", url, timeout, started["mlflow"], files.log("mlflow"))
    except (ServiceStartError, StorageError) as err:
        _stop_started(files, started)
        raise StackError(str(err)) from None


def stack_up(
    settings: Settings,
    mlflow_port: int | None = None,
    s3_port: int | None = None,
    external_s3: str | None = None,
    timeout: float | None = None,
) -> tuple[list[ServiceInfo], bool]:
    """Start (or report) the stack; return (services, already_running).

    Ports default to ``settings.mlflow_port`` / ``settings.s3_port`` (0 = any free port). external_s3: an
    existing S3 endpoint URL (MinIO/AWS) used instead of moto. Idempotent: running services are reused,
    stale pid files are cleaned. Raises `StackError` with the log file to read.
    """
    files, timeout = _Files(settings), timeout or settings.stack_timeout_s
    state = read_state(settings)
    current = stack_status(settings)
    if state and current and all(s.healthy for s in current):
        _check_matches(state, external_s3, mlflow_port)
        return current, True
    files.dir.mkdir(parents=True, exist_ok=True)
    creds = _credentials(settings, external=bool(external_s3))
    live = {name: _live_pid(files, name) for name in ("s3", "mlflow")} if state else {}
    need = {name for name in ("s3", "mlflow") if not live.get(name)}
    if external_s3:
        need.discard("s3")
    ports = _pick_ports(settings, s3_port, mlflow_port, need)
    if external_s3:
        s3_url, s3_kind, s3_port_used = external_s3.rstrip("/"), "external", None
    else:
        s3_port_used = ports.get("s3") or state["s3"]["port"]  # type: ignore[index]
        s3_url, s3_kind = f"http://{HOST}:{s3_port_used}", "moto"
    _start_services(files, settings, ports, s3_url, creds, timeout)
    ml_port = ports.get("mlflow") or state["mlflow"]["port"]  # type: ignore[index]
    state = {
        "bucket": settings.artifact_bucket, "region": settings.aws_default_region,
        "started": datetime.now(timezone.utc).isoformat(),
        "s3": {"kind": s3_kind, "url": s3_url, "port": s3_port_used},
        "mlflow": {"kind": "mlflow", "url": f"http://{HOST}:{ml_port}", "port": ml_port,
                   "artifacts": f"s3://{settings.artifact_bucket}/mlartifacts", "backend": f"sqlite:///{files.db}"},
    }
    _atomic_write(files.state, json.dumps(state, indent=2))
    _write_profile(files, state, creds)
    return stack_status(settings), False


def stack_down(settings: Settings, purge: bool = False) -> list[str]:
    """Stop the stack's processes, remove pid files, stack.json and the profile; return the stopped
    service names. purge: also delete the stack's MLflow database and logs. Fine when nothing runs."""
    files = _Files(settings)
    live = {name: _live_pid(files, name) for name in ("mlflow", "s3")}
    stopped = {name: pid for name, pid in live.items() if pid is not None}
    _stop_started(files, stopped)
    for path in (files.state, files.profile, files.pid("mlflow"), files.pid("s3")):
        path.unlink(missing_ok=True)
    if purge:
        for path in (files.db, files.log("mlflow"), files.log("s3")):
            path.unlink(missing_ok=True)
    return list(stopped)
