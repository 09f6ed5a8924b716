"""`sp3d` command line: one typer app; each command group lives in sp3d/commands/<name>.py and
exposes ``register(app)``."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="sp3d",
    help="SelfPose3d Lab: self-supervised multi-view 3D pose training, sweeps and studies on Ray + MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMAND_MODULES = ["data", "train", "evaluate", "stack", "sweep", "compare", "study", "submit", "demo"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"sp3d.commands.{_name}").register(app)


def main() -> None:
    """Entry point used by `python -m sp3d`."""
    app()


if __name__ == "__main__":
    main()
