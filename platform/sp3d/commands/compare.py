"""`sp3d compare SWEEP|EXPERIMENT`: paper-style table of a sweep (or an experiment's runs) read from MLflow,
plus a markdown report and PNG plots (see `sp3d.compare`, docs/compare.md)."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console

from sp3d.compare import CompareError, Comparison, load_comparison
from sp3d.compare_report import rich_references, rich_table, write_report
from sp3d.compare_source import log_to_parent

console = Console()


def _default_out(target: str) -> Path:
    return Path("reports") / re.sub(r"[^\w.\-]+", "_", target)


def _print(cmp: Comparison) -> None:
    console.print(rich_table(cmp))
    refs = rich_references(cmp)
    if refs is not None:
        console.print(refs)
    if cmp.skipped:
        left = ", ".join(f"{n} {s}" for s, n in sorted(cmp.skipped.items()))
        console.print(f"left out (not finished): {left}")
    for note in cmp.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def compare(
    target: str = typer.Argument(..., help="Sweep / study name (parent run name or sp3d.sweep tag) or experiment name."),
    experiment: str = typer.Option(None, "--experiment", "-e", help="Only look in this MLflow experiment."),
    metric: str = typer.Option(None, help="Selection metric (default: the sweep's sp3d.metric tag, else ap50)."),
    by: list[str] = typer.Option(None, "--by", help="Group rows by this param (repeatable; default: swept params)."),
    column: list[str] = typer.Option(None, "--column", "-c",
                                     help="Metric column (repeatable; default: the paper's, else AP25/50/100, MPJPE)."),
    out: Path = typer.Option(None, "--out", help="Plot / report directory (default ./reports/<target>)."),
    markdown_file: Path = typer.Option(None, "--markdown", help="Markdown report path (default <out>/compare.md)."),
    paper: bool = typer.Option(True, "--paper/--no-paper", help="Show the paper's values side by side."),
    best: bool = typer.Option(False, "--best/--last", help="Each run's best epoch by --metric, or its last."),
    space: str = typer.Option(None, "--space", help="Search space for paper values (default: sp3d.space tag)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    log_to_parent_run: bool = typer.Option(None, "--log-to-parent/--no-log-to-parent",
                                           help="Log report + plots on the sweep's parent run (default: on for sweeps)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI / profile)."),
) -> None:
    """Compare the runs of a sweep or experiment: table in the terminal, markdown + PNGs on disk."""
    try:
        cmp = load_comparison(target, experiment, metric, by or None, best, paper, column or None, space,
                              tracking_uri)
        _print(cmp)
        md_path, pngs = write_report(cmp, out or _default_out(target), markdown_file, plots)
        console.print(f"markdown: {md_path}")
        for png in pngs:
            console.print(f"plot: {png}")
        if cmp.parent_run_id and (log_to_parent_run if log_to_parent_run is not None else True):
            log_to_parent(cmp.tracking_uri, cmp.parent_run_id, [md_path, *pngs])
            console.print(f"logged to parent run {cmp.parent_run_id} under artifacts compare/")
    except CompareError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add the `compare` command to the root app."""
    app.command("compare")(compare)
