"""Ray Jobs on a remote cluster: build a job spec (entrypoint + runtime env), submit, inspect, follow, stop.

Talks to the Ray dashboard's Jobs API (``http://HEAD:8265``) through `ray.job_submission.JobSubmissionClient`;
never calls ``ray.init`` in this process. Credentials never enter a job spec unless explicitly forwarded
(`runtime_env_vars(..., forward_credentials=True)`), and every text shown to the user goes through
`sp3d.redact` (spec, job details, logs).

Token auth (Ray >= 2.52, on by default for new local clusters since 2.59): the dashboard rejects requests
without ``Authorization: Bearer <token>``. Ray's client only adds that header when ``RAY_AUTH_MODE=token`` is
set in the submitting process; `resolve_token` instead looks the token up itself, with Ray's precedence
(``--token-file`` > ``RAY_AUTH_TOKEN`` > ``RAY_AUTH_TOKEN_PATH`` > ``~/.ray/auth_token``), and sends it
explicitly, so submission works whatever ``RAY_AUTH_MODE`` says locally (``RAY_AUTH_MODE=disabled`` sends none).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sp3d.redact import register_secrets, scrub, scrub_text
from sp3d.settings import Settings, profile_files

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

ADDRESS_ENV_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
# Anchored (gitignore syntax, relative to the working dir) so selfpose3d/data/ stays in the package.
WORKING_DIR_EXCLUDES = [
    "/.venv/", "/.git/", "/data/", "/runs/", "/.sp3d/", "/reports/", "/mlruns/",
    "__pycache__/", "*.egg-info/", ".pytest_cache/", ".ruff_cache/",
]
PLATFORM_PACKAGE = "platform/sp3d"  # not importable from the working dir's root (see DEVELOPERS.md: no platform/__init__)
# Settings field -> environment variable forwarded to the job (never a credential).
FORWARDED_SETTINGS = {
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "s3_endpoint": "SP3D_S3_ENDPOINT",
    "aws_default_region": "AWS_DEFAULT_REGION",
    "artifact_bucket": "SP3D_ARTIFACT_BUCKET",
}
CREDENTIAL_SETTINGS = {"aws_access_key_id": "AWS_ACCESS_KEY_ID", "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY"}
TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")


class JobsError(RuntimeError):
    """A job command failed; the one-line message names the address / job id / file and what to do."""


@dataclass(frozen=True)
class JobSpec:
    """What is sent to the Jobs API. ``runtime_env`` may hold forwarded credentials: print `redacted()` only."""

    entrypoint: str
    submission_id: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> dict[str, Any]:
        """The spec as a plain dict with every credential replaced (safe to print or log)."""
        return scrub({"submission_id": self.submission_id, "entrypoint": self.entrypoint,
                      "runtime_env": self.runtime_env, "metadata": self.metadata})


def _profile_value(name: str) -> str | None:
    from dotenv import dotenv_values

    value = None
    for path in profile_files(None):
        value = dotenv_values(path).get(name) or value
    return value


def resolve_address(address: str | None) -> str:
    """Dashboard URL to talk to: ``address`` > $RAY_API_SERVER_ADDRESS > $RAY_ADDRESS > ``RAY_ADDRESS`` in a
    profile file. ``HOST:PORT`` gets ``http://``. Raises `JobsError` when none is set."""
    value = address or next((os.environ[n] for n in ADDRESS_ENV_VARS if os.environ.get(n)), None)
    value = value or _profile_value("RAY_ADDRESS")
    if not value:
        raise JobsError("no Ray dashboard address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    if "://" not in value:
        value = f"http://{value}"
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise JobsError(f"--address {value!r}: expected http(s)://HOST:PORT of the Ray dashboard (default port 8265)")
    return value.rstrip("/")


def _read_token(path: Path, source: str) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as err:
        raise JobsError(f"{source} {path}: cannot read the Ray auth token ({err.strerror})") from None
    if not token:
        raise JobsError(f"{source} {path}: the Ray auth token file is empty")
    return token


def resolve_token(token_file: Path | None = None) -> str | None:
    """The Ray auth token: ``token_file`` > $RAY_AUTH_TOKEN > $RAY_AUTH_TOKEN_PATH > ``~/.ray/auth_token``;
    None if none exists or $RAY_AUTH_MODE=disabled. The token is registered for redaction."""
    if token_file is not None:
        token: str | None = _read_token(token_file, "--token-file")
    elif os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    elif os.environ.get("RAY_AUTH_TOKEN", "").strip():
        token = os.environ["RAY_AUTH_TOKEN"].strip()
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        token = _read_token(Path(os.environ["RAY_AUTH_TOKEN_PATH"]), "RAY_AUTH_TOKEN_PATH")
    else:
        default = Path.home() / ".ray" / "auth_token"
        token = _read_token(default, "default token") if default.is_file() else None
    if token:
        register_secrets([token])
    return token


def auth_headers(token: str | None) -> dict[str, str]:
    """HTTP headers for the dashboard: ``{"Authorization": "Bearer <token>"}`` or {}."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split("\n\n")[0].split())
    return scrub_text(text) or type(err).__name__


@contextmanager
def ray_errors(address: str, job_id: str | None = None) -> Iterator[None]:
    """Translate Jobs API failures into one-line `JobsError`s naming ``address`` / ``job_id``."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as err:
        raise JobsError(f"Ray dashboard at {address} rejected the request ({_first_line(err)}); pass "
                        "--token-file or set RAY_AUTH_TOKEN_PATH to the cluster's token") from None
    except OSError as err:  # ConnectionError, requests' connection errors, timeouts
        raise JobsError(f"cannot reach the Ray dashboard at {address} ({_first_line(err)}); is the "
                        "cluster up and is this the dashboard port (default 8265)?") from None
    except RuntimeError as err:
        if job_id is not None and "404" in str(err):
            raise JobsError(f"unknown job id {job_id!r} at {address} (see `sp3d jobs status`)") from None
        raise JobsError(f"Ray Jobs API at {address}: {_first_line(err)}") from None


def connect(address: str | None = None, token_file: Path | None = None) -> JobSubmissionClient:
    """A `JobSubmissionClient` for the resolved address with the auth header set (checks reachability)."""
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    with ray_errors(url):
        return JobSubmissionClient(url, headers=auth_headers(resolve_token(token_file)))


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest ancestor of ``start`` (default cwd) holding a ``pyproject.toml``; ``start`` itself if none."""
    here = (start or Path.cwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), here)


def runtime_env_vars(
    settings: Settings, forward_settings: bool = True, forward_credentials: bool = False
) -> dict[str, str]:
    """Environment variables for the job from the local settings. ``forward_settings``: the explicitly
    configured non-secret ones (MLflow URI unless it is a local sqlite/file store, S3 endpoint, region,
    bucket); ``forward_credentials``: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (registered for redaction)."""
    env: dict[str, str] = {}
    for name, var in FORWARDED_SETTINGS.items() if forward_settings else ():
        value = getattr(settings, name)
        if name in settings.model_fields_set and value is not None:
            env[var] = str(value)
    if "MLFLOW_TRACKING_URI" in env and settings.is_local_tracking:
        del env["MLFLOW_TRACKING_URI"]  # a path on this machine means nothing on the cluster
    register_secrets(settings.secret_values())
    for name, var in CREDENTIAL_SETTINGS.items() if forward_credentials else ():
        secret = getattr(settings, name)
        if secret is not None and secret.get_secret_value():
            env[var] = secret.get_secret_value()
    return env


def _is_loopback(url: str) -> bool:
    host = urlparse(url if "://" in url else f"http://{url}").hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def drop_loopback_urls(env_vars: dict[str, str], address: str) -> tuple[dict[str, str], list[str]]:
    """Remove forwarded URLs pointing at this machine (``localhost``/``127.x``, e.g. `sp3d stack up`) when the
    cluster at ``address`` is remote: there they would point at the node itself. Returns (kept, dropped names)."""
    if _is_loopback(address):
        return dict(env_vars), []
    dropped = [k for k, v in env_vars.items() if "://" in v and _is_loopback(v)]
    return {k: v for k, v in env_vars.items() if k not in dropped}, dropped


def portable_path(value: str, working_dir: Path | None) -> str:
    """``value`` as the job will see it: an existing local file becomes relative to ``working_dir`` (the job's
    cwd); names that are not local files (presets, shipped spaces) stay as they are. Raises `JobsError` for a
    local file outside the working dir."""
    path = Path(value).expanduser()
    if not path.is_file() or working_dir is None:
        return value
    try:
        return path.resolve().relative_to(working_dir.resolve()).as_posix()
    except ValueError:
        raise JobsError(f"{value}: not inside the working dir {working_dir}, so the job would not see it; "
                        "move it into the repo or pass --working-dir") from None


def make_submission_id(kind: str, name: str | None = None) -> str:
    """A readable unique job id: ``sp3d-<kind>-<name>-<yyyymmdd-hhmmss>-<6 hex>`` (lowercase, [a-z0-9-])."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{kind}-{name or ''}".lower()).strip("-")
    return f"sp3d-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def build_spec(
    command: list[str], kind: str, name: str | None = None, working_dir: Path | None = None,
    env_vars: dict[str, str] | None = None,
) -> JobSpec:
    """A `JobSpec` whose entrypoint is ``shlex.join(command)``; ``working_dir`` (uploaded, with
    `WORKING_DIR_EXCLUDES`) becomes the job's cwd and is on every process's path (so ``selfpose3d`` comes
    from it); when it holds `PLATFORM_PACKAGE` that is uploaded as a py_module, so the job and its workers
    run the submitted ``sp3d``, not the copy installed on the nodes. ``env_vars`` go to the runtime env."""
    import shlex

    runtime_env: dict[str, Any] = {}
    if working_dir is not None:
        if not working_dir.is_dir():
            raise JobsError(f"--working-dir {working_dir}: not a directory")
        root = working_dir.resolve()
        runtime_env = {"working_dir": str(root), "excludes": list(WORKING_DIR_EXCLUDES)}
        if (root / PLATFORM_PACKAGE / "__init__.py").is_file():
            runtime_env["py_modules"] = [str(root / PLATFORM_PACKAGE)]
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    meta = {"sp3d_kind": kind, **({"sp3d_name": name} if name else {})}
    return JobSpec(shlex.join(command), make_submission_id(kind, name), runtime_env, meta)


def submit(client: JobSubmissionClient, spec: JobSpec) -> str:
    """Submit ``spec``; returns the submission id (= the job id used by every other call)."""
    with ray_errors(client.get_address()):
        return client.submit_job(entrypoint=spec.entrypoint, submission_id=spec.submission_id,
                                 runtime_env=spec.runtime_env or None, metadata=spec.metadata)


def dashboard_job_url(address: str, job_id: str) -> str:
    """Browser URL of the job's page in the Ray dashboard."""
    return f"{address.rstrip('/')}/#/jobs/{job_id}"


def job_details(client: JobSubmissionClient, job_id: str) -> dict[str, Any]:
    """One job as a redacted dict (status, message, entrypoint, times in ms since epoch, runtime_env, ...)."""
    with ray_errors(client.get_address(), job_id):
        info = client.get_job_info(job_id)
    return _details_dict(info)


def _details_dict(info: Any) -> dict[str, Any]:
    dump = getattr(info, "model_dump", None) or getattr(info, "dict", None)
    data = dump() if dump is not None else dict(info)
    data["status"] = str(data.get("status"))
    data.pop("driver_info", None)
    return scrub(json.loads(json.dumps(data, default=str)))


def list_jobs(client: JobSubmissionClient) -> list[dict[str, Any]]:
    """All jobs the cluster knows (redacted dicts like `job_details`), oldest first."""
    with ray_errors(client.get_address()):
        jobs = client.list_jobs()
    return sorted((_details_dict(j) for j in jobs), key=lambda d: d.get("start_time") or 0)


def job_status(client: JobSubmissionClient, job_id: str) -> str:
    """The job's status string: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    with ray_errors(client.get_address(), job_id):
        return str(client.get_job_status(job_id))


def job_logs(client: JobSubmissionClient, job_id: str) -> str:
    """All driver logs so far, redacted (`sp3d.redact.scrub_text`)."""
    with ray_errors(client.get_address(), job_id):
        return scrub_text(client.get_job_logs(job_id))


def follow_logs(client: JobSubmissionClient, job_id: str, write: Callable[[str], None]) -> None:
    """Stream the job's logs until it ends, calling ``write`` with redacted text. Lines are redacted whole
    (chunks are buffered up to the newline) so a secret split across chunks is still caught."""
    job_status(client, job_id)  # unknown id -> JobsError before opening the websocket

    async def _tail() -> None:
        pending = ""
        async for chunk in client.tail_job_logs(job_id):
            pending += chunk
            complete, _, pending = pending.rpartition("\n")
            if complete:
                write(scrub_text(complete + "\n"))
        if pending:
            write(scrub_text(pending))

    with ray_errors(client.get_address(), job_id):
        asyncio.run(_tail())


def wait_for(client: JobSubmissionClient, job_id: str, statuses: tuple[str, ...] = TERMINAL,
             timeout: float = 600.0, poll: float = 0.5) -> str:
    """Poll until the job's status is one of ``statuses``; returns it. Raises `JobsError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(client, job_id)
        if status in statuses:
            return status
        if time.monotonic() > deadline:
            raise JobsError(f"job {job_id} still {status} after {timeout:.0f} s (waiting for {'/'.join(statuses)})")
        time.sleep(poll)


def stop(client: JobSubmissionClient, job_id: str, wait: bool = False, timeout: float = 120.0) -> str:
    """Ask the job to stop (SIGTERM, then SIGKILL after Ray's grace period); returns its status, the final
    one with ``wait``. Stopping a finished job is a no-op that returns its terminal status."""
    with ray_errors(client.get_address(), job_id):
        client.stop_job(job_id)
    return wait_for(client, job_id, TERMINAL, timeout) if wait else job_status(client, job_id)


def alive_nodes(address: str, token: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Alive nodes from the dashboard's state API (``/api/v0/nodes``): dicts with node_id, node_ip,
    is_head_node, resources_total. Raises `JobsError` if the dashboard does not answer."""
    url = f"{address.rstrip('/')}/api/v0/nodes?limit=1000"
    request = urllib.request.Request(url, headers=auth_headers(token))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as resp:
            payload = json.loads(resp.read())
    except (OSError, ValueError) as err:
        raise JobsError(f"cannot list nodes at {address} ({_first_line(err)})") from None
    nodes = payload.get("data", {}).get("result", {}).get("result", [])
    return [n for n in nodes if n.get("state") == "ALIVE"]
