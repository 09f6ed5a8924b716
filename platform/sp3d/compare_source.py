"""MLflow side of `sp3d compare`: connect (with a fast reachability check), resolve a sweep / study /
experiment name, list its finished runs."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sp3d.redact import register_secrets, scrub_text
from sp3d.settings import SettingsError, load_settings
from sp3d.sweep_state import DEFAULT_EXPERIMENT

PARENT_KINDS = ("sweep", "study")
PARENT_TAG = "mlflow.parentRunId"
NAME_TAGS = ("sp3d.sweep", "sp3d.study")
MAX_RUNS = 50000
HEALTH_TIMEOUT_S = 5.0
MAX_LISTED = 15


class CompareError(RuntimeError):
    """`sp3d compare` cannot proceed; the message is one line naming what is missing and what exists."""


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The MLflow URI to read: `tracking_uri` if given, else `sp3d.settings` (env > profiles > default
    ``sqlite:///.sp3d/mlflow.db``). Registers the configured secrets so messages never show them."""
    try:
        settings = load_settings(mlflow_tracking_uri=tracking_uri)
    except SettingsError as err:
        raise CompareError(str(err)) from None
    register_secrets(settings.secret_values())
    return settings.tracking_uri


def _sqlite_path(uri: str) -> Path | None:
    path = unquote(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else ""
    return Path(path.split("?")[0]) if path and path != ":memory:" else None


def check_reachable(uri: str) -> None:
    """Raise `CompareError` if the store cannot answer: a sqlite file that does not exist (nothing was
    ever tracked there; reading must not create it) or an http(s) server whose /health does not reply
    within a few seconds. Other schemes are left to MLflow."""
    shown = scrub_text(uri)
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        path = _sqlite_path(uri)
        if path is not None and not path.is_file():
            raise CompareError(f"MLflow unreachable: no tracking database at {path} ({shown}); "
                               "set MLFLOW_TRACKING_URI or run `sp3d stack up`")
    elif scheme in ("http", "https"):
        parsed = urlparse(uri)
        netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "") if parsed.hostname else ""
        health = parsed._replace(netloc=netloc, path=parsed.path.rstrip("/") + "/health").geturl()
        try:
            with urllib.request.urlopen(health, timeout=HEALTH_TIMEOUT_S):  # noqa: S310 (http(s) only)
                pass
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise CompareError(f"MLflow unreachable at {shown} ({reason})") from None


def open_client(tracking_uri: str | None = None) -> tuple[MlflowClient, str]:
    """(client, uri) for the configured tracking store after `check_reachable`."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    return MlflowClient(tracking_uri=uri), uri


def _parents(client: MlflowClient, experiment_ids: list[str]) -> list[Run]:
    runs: list[Run] = []
    for kind in PARENT_KINDS:
        runs += client.search_runs(experiment_ids, f"tags.`sp3d.kind` = '{kind}'", max_results=MAX_RUNS)
    return sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)


def run_label(run: Run) -> str:
    """The sweep / study name of a parent run: its sp3d.sweep / sp3d.study tag, else its run name."""
    return next((run.data.tags[t] for t in NAME_TAGS if run.data.tags.get(t)), run.info.run_name or run.info.run_id)


def _matches(run: Run, target: str) -> bool:
    return target == run.info.run_name or any(run.data.tags.get(t) == target for t in NAME_TAGS)


def _listing(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    more = f", ... (+{len(unique) - MAX_LISTED})" if len(unique) > MAX_LISTED else ""
    return (", ".join(unique[:MAX_LISTED]) + more) or "none"


def find_target(client: MlflowClient, target: str, experiment: str | None = None) -> tuple[Experiment, Run | None]:
    """Resolve `target`: the newest sweep / study parent run named `target` (run name or sp3d.sweep /
    sp3d.study tag), searched in `experiment` when given else in every experiment; otherwise the
    experiment named `target` (parent None). Raises `CompareError` listing the known names."""
    experiments = {e.experiment_id: e for e in client.search_experiments()}
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = _listing([e.name for e in experiments.values()])
            raise CompareError(f"unknown experiment {experiment!r} (experiments: {names})")
        experiments = {exp.experiment_id: exp}
    parents = _parents(client, list(experiments)) if experiments else []
    found = [r for r in parents if _matches(r, target)]
    if found:
        preferred = [r for r in found if experiments[r.info.experiment_id].name == DEFAULT_EXPERIMENT] or found
        return experiments[preferred[0].info.experiment_id], preferred[0]
    by_name = next((e for e in experiments.values() if e.name == target), None)
    if by_name is not None:
        return by_name, None
    where = f" in experiment {experiment!r}" if experiment else ""
    raise CompareError(f"unknown sweep or experiment {target!r}{where} "
                       f"(sweeps: {_listing([run_label(r) for r in parents])}; "
                       f"experiments: {_listing([e.name for e in experiments.values()])})")


def _split(runs: list[Run]) -> tuple[list[Run], dict[str, int]]:
    finished = [r for r in runs if r.info.status == "FINISHED"]
    skipped: dict[str, int] = {}
    for r in runs:
        if r.info.status != "FINISHED":
            skipped[r.info.status] = skipped.get(r.info.status, 0) + 1
    return sorted(finished, key=lambda r: r.info.start_time or 0), skipped


def fetch_children(client: MlflowClient, parent: Run) -> tuple[list[Run], dict[str, int]]:
    """(finished child runs oldest first, {status: count} of the unfinished ones left out) of a parent run."""
    query = f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    return _split(client.search_runs([parent.info.experiment_id], query, max_results=MAX_RUNS))


def fetch_experiment_runs(client: MlflowClient, experiment: Experiment) -> tuple[list[Run], dict[str, int]]:
    """(finished runs oldest first, skipped-status counts) of an experiment, sweep / study parents excluded."""
    runs = client.search_runs([experiment.experiment_id], "", max_results=MAX_RUNS)
    return _split([r for r in runs if r.data.tags.get("sp3d.kind") not in PARENT_KINDS])


def log_to_parent(uri: str, parent_run_id: str, paths: list[Path], artifact_path: str = "compare") -> None:
    """Upload `paths` (markdown + PNGs) as artifacts of the sweep's parent run under `artifact_path`, without
    reopening the run (its status is untouched). Raises `CompareError` on failure."""
    client = MlflowClient(tracking_uri=uri)
    try:
        for path in paths:
            client.log_artifact(parent_run_id, str(path), artifact_path)
    except (MlflowException, OSError) as err:
        raise CompareError(f"could not log the comparison to run {parent_run_id} at {scrub_text(uri)}: "
                           f"{str(err).splitlines()[0]}") from None
