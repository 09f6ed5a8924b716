"""`sp3d` command line: one typer app, one sub-app module per command group under sp3d/commands/."""

from __future__ import annotations

import typer

from sp3d.commands import data as data_cmd

app = typer.Typer(
    name="sp3d",
    help="SelfPose3d Lab: self-supervised multi-view 3D pose training, sweeps and studies on Ray + MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cmd.app, name="data", help="Generate and inspect datasets (synthetic Panoptic-format world).")


def main() -> None:
    """Entry point used by `python -m sp3d`."""
    app()


if __name__ == "__main__":
    main()
