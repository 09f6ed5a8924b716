"""`sp3d stack up|down|status`: the local MLflow server + S3 endpoint (see `sp3d.stack`).

After `sp3d stack up`, ``<state dir>/profile.env`` points every `sp3d` command at the stack (explicit
environment variables still win); `sp3d stack down` removes it, so commands fall back to local sqlite.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sp3d.settings import Settings, SettingsError, load_settings
from sp3d.stack import ServiceInfo, StackError, read_state, stack_down, stack_status, stack_up

console = Console()
stack_app = typer.Typer(help="Local experiment stack: MLflow server + S3 endpoint (moto or external).",
                        no_args_is_help=True)

StateDirOption = typer.Option(None, "--state-dir", help="State dir (default $SP3D_STATE_DIR or ./.sp3d).")


def _settings(state_dir: Path | None, **extra: object) -> Settings:
    try:
        return load_settings(state_dir=state_dir, **extra)
    except SettingsError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None


def _table(services: list[ServiceInfo]) -> Table:
    table = Table(title="sp3d stack")
    for col in ("service", "kind", "pid", "port", "healthy"):
        table.add_column(col, no_wrap=True)
    table.add_column("url", overflow="fold")
    table.add_column("log", overflow="fold")
    for s in services:
        ok = "[green]yes[/green]" if s.healthy else "[red]no[/red]"
        table.add_row(s.name, s.kind, str(s.pid or "-"), str(s.port or "-"), ok, s.url, str(s.log or "-"))
    return table


def _print_usage(settings: Settings) -> None:
    state = read_state(settings)
    if state is None:
        return
    console.print(f"MLflow UI: [bold]{state['mlflow']['url']}[/bold]   artifacts: {state['mlflow']['artifacts']}")
    console.print(f"sp3d commands use it automatically via {settings.profile_path}. For other tools:")
    console.print(f"  export MLFLOW_TRACKING_URI={state['mlflow']['url']}", highlight=False, soft_wrap=True)
    console.print(f"  export SP3D_S3_ENDPOINT={state['s3']['url']}", highlight=False, soft_wrap=True)
    console.print(f"  export SP3D_ARTIFACT_BUCKET={state['bucket']}", highlight=False, soft_wrap=True)
    console.print("  (S3 credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; never printed)")


@stack_app.command("up")
def up(
    mlflow_port: int = typer.Option(None, help="MLflow port (default $SP3D_MLFLOW_PORT or 5000; 0 = free)."),
    s3_port: int = typer.Option(None, help="moto S3 port (default $SP3D_S3_PORT or 9000; 0 = free)."),
    external_s3: str = typer.Option(None, "--external-s3", help="Use this S3 endpoint URL instead of moto."),
    bucket: str = typer.Option(None, help="Artifact bucket (default $SP3D_ARTIFACT_BUCKET)."),
    timeout: float = typer.Option(None, help="Seconds to wait for each service to become healthy."),
    state_dir: Path = StateDirOption,
) -> None:
    """Start the stack (idempotent: reports it when it already runs)."""
    settings = _settings(state_dir, artifact_bucket=bucket)
    try:
        services, already = stack_up(settings, mlflow_port, s3_port, external_s3, timeout)
    except StackError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    console.print("stack already running" if already else "stack started")
    console.print(_table(services))
    _print_usage(settings)


@stack_app.command("down")
def down(
    purge: bool = typer.Option(False, help="Also delete the stack's MLflow database and logs."),
    state_dir: Path = StateDirOption,
) -> None:
    """Stop the stack (fine when it is not running) and remove its profile."""
    settings = _settings(state_dir)
    stopped = stack_down(settings, purge=purge)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "stack was not running")


@stack_app.command("status")
def status(state_dir: Path = StateDirOption) -> None:
    """Show the stack's services (pid, port, health, log). Exit code 1 if anything is unhealthy."""
    settings = _settings(state_dir)
    services = stack_status(settings)
    if not services:
        console.print("stack is not running (start it with `sp3d stack up`)")
        raise typer.Exit(1)
    console.print(_table(services))
    _print_usage(settings)
    if not all(s.healthy for s in services):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `stack` command group to the root app."""
    app.add_typer(stack_app, name="stack")
