"""MLflow tracking layer: runs with reuse/resume, config params, standard tags, metrics, artifacts.

Everything logged as a param, tag or text artifact passes through `scrub` (see `sp3d.redact`), so
credentials never reach the tracking server. The tracking URI comes from `sp3d.settings` (a local
sqlite store by default; the `sp3d stack` server after `sp3d stack up`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from selfpose3d.config import Config, config_hash, config_to_dict, flatten_config
from sp3d.redact import REDACTED, register_secrets, scrub, scrub_text
from sp3d.settings import Settings, load_settings

__all__ = [
    "REDACTED", "TrackingError", "configure", "dataset_fingerprint", "get_or_create_experiment", "find_run", "git_sha",
    "log_artifact_file", "log_config", "log_figure", "log_metrics", "log_text", "package_versions", "reset", "scrub",
    "standard_tags", "start_run", "terminate_running_children",
]

PARENT_TAG = "mlflow.parentRunId"
TRACKED_PACKAGES = ("torch", "ray", "mlflow", "optuna", "selfpose3d-lab")
TEXT_SUFFIXES = {".yaml", ".yml", ".json", ".txt", ".env", ".cfg", ".ini", ".toml", ".log", ".md", ".csv"}
MAX_PARAM_CHARS = 6000
FINGERPRINT_PATTERNS = (
    "calibration*.json", "*/calibration*.json", "*/hdPose3d_stage1_coco19/*.json",
    "actorsGT.mat", "pseudo_2d/*.json",
)

_settings: Settings | None = None
_env_before: str | None = None


class TrackingError(RuntimeError):
    """A tracking call cannot proceed (no active run, conflicting params, missing file)."""


def configure(settings: Settings | None = None) -> Settings:
    """Point MLflow at ``settings.tracking_uri`` and register its secrets for redaction.

    settings: None loads them (environment > profiles > defaults). Returns the settings in use.
    MLflow also exports ``MLFLOW_TRACKING_URI`` to os.environ, so subprocesses (Ray workers) inherit it.
    """
    global _settings, _env_before
    if _settings is None:
        _env_before = os.environ.get("MLFLOW_TRACKING_URI")
    settings = settings or load_settings()
    if settings.is_local_tracking:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        settings.local_artifacts_dir.mkdir(parents=True, exist_ok=True)
    register_secrets(settings.secret_values())
    mlflow.set_tracking_uri(settings.tracking_uri)
    _settings = settings
    return settings


def reset() -> None:
    """Forget the configured settings and restore ``MLFLOW_TRACKING_URI`` as it was before `configure`;
    the next tracking call re-reads the settings (used between tests)."""
    global _settings
    if _settings is None:
        return
    mlflow.set_tracking_uri(None)
    if _env_before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = _env_before
    _settings = None


def _current() -> Settings:
    return _settings or configure()


def get_or_create_experiment(name: str) -> str:
    """Experiment id for ``name``, creating it (local artifact dir when tracking is local; else the
    server's default, e.g. proxied S3). Safe when several processes race to create it."""
    settings = _current()
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if settings.is_local_tracking:
        location = (settings.local_artifacts_dir / re.sub(r"[^\w.\-]", "_", name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def find_run(experiment_id: str, run_name: str, parent_run_id: str | None = None) -> str | None:
    """Newest unfinished (RUNNING / FAILED / KILLED / SCHEDULED) run named ``run_name`` with that parent."""
    if "'" in run_name:
        raise TrackingError(f"run name {run_name!r}: must not contain a single quote")
    filters = [f"tags.mlflow.runName = '{run_name}'", "attributes.status != 'FINISHED'"]
    if parent_run_id:
        filters.append(f"tags.{PARENT_TAG} = '{parent_run_id}'")
    runs = MlflowClient().search_runs(
        [experiment_id], " and ".join(filters), order_by=["attributes.start_time DESC"], max_results=50
    )
    if not parent_run_id:
        runs = [r for r in runs if PARENT_TAG not in r.data.tags]
    return runs[0].info.run_id if runs else None


def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    reuse: bool = True,
) -> mlflow.ActiveRun:
    """Start (or resume) an MLflow run and make it active; use as a context manager.

    run_id: resume exactly that run. Otherwise, with ``reuse`` and a ``run_name``, an unfinished run of the
    same name and parent in ``experiment`` is resumed (a restarted trial keeps its run instead of
    duplicating it); else a new run is created, nested under ``parent_run_id`` when given.
    tags are scrubbed. Returns mlflow's ActiveRun.
    """
    _current()
    clean_tags = {k: str(v) for k, v in scrub(dict(tags or {})).items()}
    nested = mlflow.active_run() is not None
    if run_id is None and reuse and run_name:
        run_id = find_run(get_or_create_experiment(experiment), run_name, parent_run_id)
    if run_id is not None:
        return mlflow.start_run(run_id=run_id, nested=nested, tags=clean_tags or None)
    return mlflow.start_run(
        experiment_id=get_or_create_experiment(experiment),
        run_name=run_name,
        nested=nested,
        parent_run_id=parent_run_id,
        tags=clean_tags or None,
    )


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise TrackingError("no active MLflow run: call sp3d.tracking.start_run(...) first")
    return run.info.run_id


def _config_dict(cfg: Config | Mapping[str, Any]) -> dict[str, Any]:
    return config_to_dict(cfg) if isinstance(cfg, Config) else json.loads(json.dumps(dict(cfg), default=str))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _hash(cfg: Config | Mapping[str, Any]) -> str:
    if isinstance(cfg, Config):
        return config_hash(cfg)
    blob = json.dumps(_config_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def git_sha(repo: str | Path | None = None) -> str:
    """HEAD commit of the git repo holding ``repo`` (default: this project's checkout), or "unknown"."""
    where = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def dataset_fingerprint(root: str | Path) -> str:
    """12-hex fingerprint of a dataset root: the hash of ``synth_manifest.json`` if present, else of the
    relative paths + byte sizes of its calibration, 3D pose and pseudo-label files. "missing" if the root
    does not exist, "empty" if it holds none of those files."""
    root = Path(root)
    if not root.is_dir():
        return "missing"
    digest = hashlib.sha256()
    manifest = root / "synth_manifest.json"
    if manifest.is_file():
        digest.update(b"manifest\n" + manifest.read_bytes())
        return digest.hexdigest()[:12]
    files = sorted({p for pattern in FINGERPRINT_PATTERNS for p in root.glob(pattern) if p.is_file()})
    if not files:
        return "empty"
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:12]


def package_versions(packages: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions (without importing the packages); "not-installed" when absent."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not-installed"
    return versions


def standard_tags(cfg: Config | Mapping[str, Any], dataset_root: str | Path | None = None) -> dict[str, str]:
    """The tags every sp3d run carries: git sha, config hash, seed, dataset fingerprint, package versions.

    dataset_root: defaults to ``cfg.dataset.root``.
    """
    data = _config_dict(cfg)
    root = dataset_root or data.get("dataset", {}).get("root")
    tags = {
        "sp3d.git_sha": git_sha(),
        "sp3d.config_hash": _hash(cfg),
        "sp3d.config_name": str(data.get("name", "unknown")),
        "sp3d.seed": str(data.get("train", {}).get("seed", "unknown")),
        "sp3d.dataset_fingerprint": dataset_fingerprint(root) if root else "none",
    }
    tags.update({f"sp3d.version.{k}": v for k, v in package_versions().items()})
    return scrub(tags)


def log_config(cfg: Config | Mapping[str, Any], dataset_root: str | Path | None = None) -> dict[str, str]:
    """Log the flattened config as params, the standard tags, and ``config.yaml``, all scrubbed, to the
    active run. On a resumed run identical params are skipped; a changed value raises `TrackingError`.
    Returns the params as logged (strings)."""
    run_id = _active_run_id()
    flat = flatten_config(cfg) if isinstance(cfg, Config) else _flatten(_config_dict(cfg))
    params = {k: str(v)[:MAX_PARAM_CHARS] for k, v in scrub(flat).items()}
    existing = MlflowClient().get_run(run_id).data.params
    changed = [k for k in params if k in existing and existing[k] != params[k]]
    if changed:
        key = changed[0]
        raise TrackingError(
            f"run {run_id}: param {key} was logged as {existing[key]!r}, now {params[key]!r}; "
            "start a new run for a changed config"
        )
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})
    mlflow.set_tags(standard_tags(cfg, dataset_root))
    log_text(yaml.safe_dump(_config_dict(cfg), sort_keys=False), "config.yaml")
    return params


def log_metrics(metrics: Mapping[str, float | int | None], step: int | None = None) -> None:
    """Log numeric metrics (None values skipped) at ``step`` to the active run."""
    _active_run_id()
    values = {k: float(v) for k, v in metrics.items() if v is not None}
    if values:
        mlflow.log_metrics(values, step=step)


def log_figure(figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as ``artifact_file`` (e.g. "plots/losses.png") to the active run."""
    _active_run_id()
    mlflow.log_figure(figure, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    """Log scrubbed text as ``artifact_file`` (e.g. "notes/summary.txt") to the active run."""
    _active_run_id()
    mlflow.log_text(scrub_text(text), artifact_file)


def log_artifact_file(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a local file to the active run under ``artifact_path``; text-like files (yaml, json, txt,
    env, ...) are scrubbed first (the copy is uploaded, the original is untouched)."""
    _active_run_id()
    path = Path(path)
    if not path.is_file():
        raise TrackingError(f"{path}: no such file to log as an artifact")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        mlflow.log_artifact(str(path), artifact_path)
        return
    with tempfile.TemporaryDirectory(prefix="sp3d-artifact-") as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(scrub_text(path.read_text(errors="replace")))
        mlflow.log_artifact(str(copy), artifact_path)


def terminate_running_children(
    parent_run_id: str, keep: Iterable[str] = (), status: str = "KILLED"
) -> list[str]:
    """Mark RUNNING child runs of ``parent_run_id`` (except run ids in ``keep``) as ``status``.

    Used when a sweep stops trials: their runs would otherwise stay RUNNING forever. Returns the
    terminated run ids.
    """
    _current()
    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.{PARENT_TAG} = '{parent_run_id}' and attributes.status = 'RUNNING'"
    keep_ids = set(keep)
    done = []
    for run in client.search_runs([experiment_id], query, max_results=10000):
        if run.info.run_id not in keep_ids:
            client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.from_string(status)))
            done.append(run.info.run_id)
    return done
