"""`sp3d submit sweep|train|run` (Ray Jobs on a cluster) and `sp3d jobs status|logs|stop` (see `sp3d.jobs`).

Submission uploads the repo (``--working-dir``, default: the repo around the cwd) and runs ``sp3d sweep ...`` /
``sp3d train ...`` there. Only non-secret settings travel in the runtime env; credentials come from the
cluster nodes' own environment unless ``--forward-credentials`` is given. Everything printed is redacted.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sp3d import jobs
from sp3d.jobs import JobsError, JobSpec

console = Console()
err_console = Console(stderr=True)
submit_app = typer.Typer(help="Submit a sweep, a training run or any command as a Ray Job to a cluster.",
                         no_args_is_help=True)
jobs_app = typer.Typer(help="Ray Jobs on a cluster: status, logs, stop.", no_args_is_help=True)
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}

AddressOption = typer.Option(
    None, "--address", help="Ray dashboard URL, http://HEAD:8265 (default $RAY_API_SERVER_ADDRESS, "
    "$RAY_ADDRESS, or RAY_ADDRESS in a profile).")
TokenOption = typer.Option(
    None, "--token-file", help="Ray auth token file (default $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, "
    "~/.ray/auth_token).")
WorkingDirOption = typer.Option(
    None, "--working-dir", help="Directory uploaded as the job's cwd (default: the repo around the cwd).")
EnvOption = typer.Option(
    True, "--env-from-profile/--no-env", help="Forward the configured non-secret settings (MLFLOW_TRACKING_URI, "
    "SP3D_S3_ENDPOINT, AWS_DEFAULT_REGION, SP3D_ARTIFACT_BUCKET) in the runtime env.")
CredsOption = typer.Option(
    False, "--forward-credentials", help="Also send AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the runtime "
    "env (off by default: cluster nodes have their own; forwarded values are visible on the dashboard).")
WaitOption = typer.Option(False, "--wait/--no-wait", help="Follow the logs until the job ends; exit 1 unless "
                          "it SUCCEEDED.")
SetOption = typer.Option(None, "--set", help="Config override KEY=VALUE (repeatable), passed through.")


def _fail(err: Exception) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _out(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _flags(pairs: list[tuple[str, object]], sets: list[str] | None) -> list[str]:
    args: list[str] = []
    for flag, value in pairs:
        if value is not None:
            args += [flag, str(value)]
    for item in sets or []:
        args += ["--set", item]
    return args


def _runtime_env_vars(env_from_profile: bool, forward_credentials: bool, address: str) -> dict[str, str]:
    from sp3d.settings import load_settings

    env = jobs.runtime_env_vars(load_settings(), env_from_profile, forward_credentials)
    env, dropped = jobs.drop_loopback_urls(env, address)
    if dropped:
        err_console.print(f"note: not forwarding {', '.join(dropped)} (points at this machine, the cluster at "
                          f"{address} is remote; its nodes use their own)", highlight=False, soft_wrap=True)
    return env


def _print_submitted(spec: JobSpec, job_id: str, address: str, token_file: Path | None) -> None:
    extra = f" --address {address}" + (f" --token-file {token_file}" if token_file else "")
    _out(f"submitted job {job_id}")
    _out(f"dashboard: {jobs.dashboard_job_url(address, job_id)}")
    _out("follow up with:")
    for cmd in (f"status {job_id}", f"logs {job_id} --follow", f"stop {job_id}"):
        _out(f"  sp3d jobs {cmd}{extra}")


def _submit(command: list[str], kind: str, name: str | None, working_dir: Path | None, address: str | None,
            token_file: Path | None, env_from_profile: bool, forward_credentials: bool, wait: bool) -> None:
    """Shared tail of every `sp3d submit` command: build, echo (redacted), submit, print, optionally follow."""
    client = jobs.connect(address, token_file)
    env_vars = _runtime_env_vars(env_from_profile, forward_credentials, client.get_address())
    spec = jobs.build_spec(command, kind, name, working_dir, env_vars)
    _out("job spec (credentials redacted):")
    _out(json.dumps(spec.redacted(), indent=2))
    if forward_credentials:
        err_console.print("note: credentials are forwarded in the runtime env; anyone with dashboard access can "
                          "read them", highlight=False, soft_wrap=True)
    job_id = jobs.submit(client, spec)
    _print_submitted(spec, job_id, client.get_address(), token_file)
    if wait:
        jobs.follow_logs(client, job_id, lambda text: typer.echo(text, nl=False))
        status = jobs.wait_for(client, job_id)
        _out(f"job {job_id}: {status}")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


def _validate_config(config: str | None, sets: list[str] | None) -> None:
    from selfpose3d.config.loader import load_config

    if config is not None or sets:
        load_config(config or "tiny", sets or None)


@submit_app.command("sweep", context_settings=PASSTHROUGH)
def submit_sweep(
    ctx: typer.Context,
    space: str = typer.Argument(..., help="Search space name (search_spaces/<name>.yaml) or YAML path."),
    samples: int = typer.Option(None, "--samples", min=1, help="Passed to `sp3d sweep`."),
    concurrent: int = typer.Option(None, "--concurrent", min=1, help="Passed to `sp3d sweep`."),
    scheduler: str = typer.Option(None, "--scheduler", help="Passed to `sp3d sweep` (e.g. asha)."),
    storage: str = typer.Option(None, "--storage", help="Checkpoint storage URI (s3://bucket/prefix)."),
    config: str = typer.Option(None, "--config", help="Base config (preset or YAML in the working dir)."),
    name: str = typer.Option(None, "--name", help="Sweep / experiment name (also used in the job id)."),
    sets: list[str] = SetOption,
    working_dir: Path = WorkingDirOption, address: str = AddressOption, token_file: Path = TokenOption,
    env_from_profile: bool = EnvOption, forward_credentials: bool = CredsOption, wait: bool = WaitOption,
) -> None:
    """Submit `sp3d sweep SPACE ...` as a Ray Job (SPACE is validated locally first). Unknown options are
    passed through to `sp3d sweep` unchanged."""
    from selfpose3d.config.loader import ConfigError
    from sp3d.search_space import SearchSpaceError, load_space
    from sp3d.settings import SettingsError

    try:
        loaded = load_space(space, base_config=config)
        _validate_config(loaded.base_config if sets else None, sets)
        wd = working_dir or jobs.find_repo_root()
        args = _flags([("--samples", samples), ("--concurrent", concurrent), ("--scheduler", scheduler),
                       ("--storage", storage), ("--config", config and jobs.portable_path(config, wd)),
                       ("--name", name)], sets)
        command = ["sp3d", "sweep", jobs.portable_path(space, wd), *args, *ctx.args]
        _submit(command, "sweep", name or Path(space).stem, wd, address, token_file, env_from_profile,
                forward_credentials, wait)
    except (JobsError, SearchSpaceError, ConfigError, SettingsError) as err:
        raise _fail(err) from None


@submit_app.command("train", context_settings=PASSTHROUGH)
def submit_train(
    ctx: typer.Context,
    config: str = typer.Option(None, "--config", help="Config preset or YAML in the working dir."),
    workers: int = typer.Option(None, "--workers", min=1, help="Ray Train workers (passed to `sp3d train`)."),
    gpus_per_worker: float = typer.Option(None, "--gpus-per-worker", min=0, help="GPUs per Train worker."),
    storage: str = typer.Option(None, "--storage", help="Checkpoint storage URI (s3://bucket/prefix)."),
    name: str = typer.Option(None, "--name", help="Run name (also used in the job id)."),
    sets: list[str] = SetOption,
    working_dir: Path = WorkingDirOption, address: str = AddressOption, token_file: Path = TokenOption,
    env_from_profile: bool = EnvOption, forward_credentials: bool = CredsOption, wait: bool = WaitOption,
) -> None:
    """Submit `sp3d train ...` as a Ray Job (the config and overrides are validated locally first). Unknown
    options are passed through to `sp3d train` unchanged."""
    from selfpose3d.config.loader import ConfigError
    from sp3d.settings import SettingsError

    try:
        _validate_config(config, sets)
        wd = working_dir or jobs.find_repo_root()
        gpus = None if gpus_per_worker is None else f"{gpus_per_worker:g}"
        args = _flags([("--config", config and jobs.portable_path(config, wd)), ("--workers", workers),
                       ("--gpus-per-worker", gpus), ("--storage", storage), ("--name", name)], sets)
        _submit(["sp3d", "train", *args, *ctx.args], "train", name or (config and Path(config).stem), wd,
                address, token_file, env_from_profile, forward_credentials, wait)
    except (JobsError, ConfigError, SettingsError) as err:
        raise _fail(err) from None


@submit_app.command("run", context_settings=PASSTHROUGH)
def submit_run(
    command: list[str] = typer.Argument(..., help="The command to run, after `--` (e.g. -- python x.py)."),
    name: str = typer.Option(None, "--name", help="Used in the job id."),
    working_dir: Path = WorkingDirOption, address: str = AddressOption, token_file: Path = TokenOption,
    env_from_profile: bool = EnvOption, forward_credentials: bool = CredsOption, wait: bool = WaitOption,
) -> None:
    """Submit any command (e.g. `sp3d evaluate ...`, a script) as a Ray Job with the same runtime env rules."""
    from sp3d.settings import SettingsError

    try:
        _submit(list(command), "run", name, working_dir or jobs.find_repo_root(), address, token_file,
                env_from_profile, forward_credentials, wait)
    except (JobsError, SettingsError) as err:
        raise _fail(err) from None


def _when(ms: object) -> str:
    import datetime as dt

    if not isinstance(ms, (int, float)) or not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _duration(job: dict) -> str:
    start, end = job.get("start_time"), job.get("end_time")
    return f"{(end - start) / 1000:.1f} s" if start and end else "-"


def _jobs_table(all_jobs: list[dict], address: str) -> Table:
    table = Table(title=f"Ray jobs at {address}")
    table.add_column("job id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("start", "duration", "entrypoint", "message"):
        table.add_column(col, overflow="fold")
    for job in all_jobs:
        table.add_row(job.get("submission_id") or job.get("job_id") or "-", job["status"],
                      _when(job.get("start_time")), _duration(job), job.get("entrypoint") or "-",
                      job.get("message") or "")
    return table


def _print_details(job: dict) -> None:
    _out(f"job: {job.get('submission_id') or job.get('job_id')}")
    _out(f"status: {job['status']}")
    for key in ("message", "entrypoint", "driver_node_id", "driver_exit_code", "error_type"):
        if job.get(key) not in (None, ""):
            _out(f"{key}: {job[key]}")
    _out(f"start: {_when(job.get('start_time'))}   end: {_when(job.get('end_time'))}   "
         f"duration: {_duration(job)}")
    for key in ("metadata", "runtime_env"):
        if job.get(key):
            _out(f"{key}: {json.dumps(job[key], sort_keys=True)}")


@jobs_app.command("status")
def jobs_status(
    job_id: str = typer.Argument(None, help="Job (submission) id; omit for a table of all jobs."),
    address: str = AddressOption, token_file: Path = TokenOption,
) -> None:
    """One job's status and details, or a table of all jobs on the cluster."""
    try:
        client = jobs.connect(address, token_file)
        if job_id:
            _print_details(jobs.job_details(client, job_id))
        else:
            console.print(_jobs_table(jobs.list_jobs(client), client.get_address()))
    except JobsError as err:
        raise _fail(err) from None


@jobs_app.command("logs")
def jobs_logs(
    job_id: str = typer.Argument(..., help="Job (submission) id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream new output until the job ends."),
    address: str = AddressOption, token_file: Path = TokenOption,
) -> None:
    """Print the job's driver logs (credentials redacted)."""
    try:
        client = jobs.connect(address, token_file)
        if follow:
            jobs.follow_logs(client, job_id, lambda text: typer.echo(text, nl=False))
        else:
            typer.echo(jobs.job_logs(client, job_id), nl=False)
    except JobsError as err:
        raise _fail(err) from None


@jobs_app.command("stop")
def jobs_stop(
    job_id: str = typer.Argument(..., help="Job (submission) id."),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Wait until the job has stopped."),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="Seconds to wait with --wait."),
    address: str = AddressOption, token_file: Path = TokenOption,
) -> None:
    """Stop a job (no-op for a finished one); prints its status."""
    try:
        client = jobs.connect(address, token_file)
        _out(f"job {job_id}: {jobs.stop(client, job_id, wait, timeout)}")
    except JobsError as err:
        raise _fail(err) from None


def register(app: typer.Typer) -> None:
    """Add the `submit` and `jobs` command groups to the root app."""
    app.add_typer(submit_app, name="submit")
    app.add_typer(jobs_app, name="jobs")
