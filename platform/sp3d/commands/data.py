"""`sp3d data`: generate the synthetic Panoptic-format dataset (`synth`) and summarise a dataset (`info`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from selfpose3d.config.loader import ConfigError, load_config
from selfpose3d.data.synthetic import (
    HD_NODES,
    DatasetExistsError,
    DatasetFormatError,
    SyntheticConfigError,
    generate_dataset,
    summarize_dataset,
)

data_app = typer.Typer(help="Synthetic Panoptic-format data: generate it (synth) and inspect a dataset (info).",
                       no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _parse_persons(text: str | None) -> tuple[int, int] | None:
    """'1-3' -> (1, 3), '2' -> (2, 2); raises typer.BadParameter otherwise."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise typer.BadParameter(f"expected MIN-MAX (e.g. 1-3) or a single count, got {text!r}")
    low = int(match.group(1))
    return low, int(match.group(2) or low)  # ranges are checked by the config schema


def _parse_sequences(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter(f"expected comma-separated sequence names, got {text!r}")
    return names


def _overrides(sequences: list[str] | None, frames: int | None, persons: tuple[int, int] | None,
               cameras: int | None, seed: int | None) -> dict[str, Any]:
    pairs = {"synth.sequences": sequences, "synth.frames": frames, "synth.cameras": cameras, "synth.seed": seed}
    if persons is not None:
        pairs["synth.min_persons"], pairs["synth.max_persons"] = persons
    return {key: value for key, value in pairs.items() if value is not None}


@data_app.command("synth", help="Generate the synthetic multi-view world in the real CMU Panoptic layout: "
                  "images, calibration, GT 3D poses (cm), simulated 2D-detector pseudo labels, synth_manifest.json.")
def synth(
    config: Annotated[str, typer.Option("--config", "-c", help="Preset name (tiny, panoptic, shelf, campus) or a "
                                        "YAML file; its `synth` section sets the world and `dataset.root` "
                                        "the output directory.")] = "tiny",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output dataset root (overrides dataset.root "
                                             "of the config).")] = None,
    sequences: Annotated[str | None, typer.Option(help="Comma-separated sequence names to generate, e.g. "
                                                  "'synth_train1,synth_test1' (default: synth.sequences).",
                                                  callback=_parse_sequences)] = None,
    frames: Annotated[int | None, typer.Option(min=1, help="Frames per sequence (default: synth.frames).")] = None,
    persons: Annotated[str | None, typer.Option(help="People inside the dome per sequence as MIN-MAX (e.g. 1-3) "
                                                "or one count (default: synth.min_persons-synth.max_persons).",
                                                callback=_parse_persons)] = None,
    cameras: Annotated[int | None, typer.Option(min=1, max=len(HD_NODES), help="HD cameras on the dome ring, "
                                                f"1..{len(HD_NODES)}; node ids {HD_NODES} are used in that "
                                                "order (default: synth.cameras).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives identical files "
                                             "(default: synth.seed).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing non-empty output directory "
                                        "(only one written by this command).")] = False,
) -> None:
    """Generate ``cfg.synth`` into ``--out`` / ``dataset.root``; exit 2 on bad options, 1 if the target exists."""
    try:
        cfg = load_config(config, _overrides(sequences, frames, persons, cameras, seed))
    except ConfigError as err:
        raise _fail(str(err), 2) from None
    root = out if out is not None else Path(cfg.dataset.root)
    if cfg.synth.cameras < cfg.dataset.num_views:
        err_console.print(f"[yellow]warning:[/] {cfg.synth.cameras} cameras < dataset.num_views="
                          f"{cfg.dataset.num_views}: readers using this config need more views.", soft_wrap=True)
    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("synth", total=cfg.synth.frames * len(cfg.synth.sequences))
            manifest = generate_dataset(cfg, root, lambda done, total: bar.update(task, completed=done),
                                        overwrite=force)
    except (DatasetExistsError, SyntheticConfigError) as err:
        raise _fail(str(err), 1) from None
    totals = manifest["totals"]
    console.print(f"wrote {root}: {totals['sequences']} sequences, {totals['frames']} frames, "
                  f"{totals['images']} images, {totals['detections']} detections "
                  f"(fingerprint {manifest['fingerprint'][:12]})", highlight=False, soft_wrap=True)


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"dataset {summary['root']}", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("sequence", no_wrap=True)
    for name in ("frames", "cams", "images", "people", "dets", "FP", "unmatched", "outside"):
        table.add_column(name, justify="right")

    def show(value: Any) -> str:
        if value is None:
            return "-"
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)

    for seq in summary["sequences"]:
        ppf = seq["persons_per_frame"]
        table.add_row(seq["name"], str(seq["frames"]), str(len(seq["cameras"])), str(seq["images"]),
                      f"{ppf['min']}/{ppf['mean']:.1f}/{ppf['max']}", show(seq["detections"]),
                      show(seq["false_positives"]), show(seq["unmatched_detections"]), show(seq["outside_dome"]))
    tot = summary["totals"]
    table.add_section()
    table.add_row("total", str(tot["frames"]), "", str(tot["images"]), "", str(tot["detections"]),
                  str(tot["false_positives"]) if summary["synthetic"] else "-", str(tot["unmatched_detections"]),
                  str(tot["outside_dome_sequences"]) if summary["synthetic"] else "-")
    return table


@data_app.command("info", help="Summarise a Panoptic-layout dataset: sequences, frames, cameras, people per "
                  "frame, pseudo-label detections, false positives, unmatched detections, outside-dome people.")
def info(
    path: Annotated[Path, typer.Argument(help="Dataset root holding <seq>/calibration_<seq>.json folders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")] = False,
) -> None:
    """Print `summarize_dataset(path)` as a table (or JSON); exit 1 if ``path`` is not a dataset."""
    try:
        summary = summarize_dataset(path)
    except DatasetFormatError as err:
        raise _fail(str(err), 1) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    console.print(_summary_table(summary))
    console.print("people = min/mean/max GT persons per frame; FP = generated false positives; unmatched = "
                  "detections near no GT person; outside = outside-dome person present", style="dim")
    if summary["synthetic"]:
        console.print(f"synthetic: seed {summary['seed']}, fingerprint {summary['fingerprint'][:12]}",
                      highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `data` command group (synth, info) to the root app."""
    app.add_typer(data_app, name="data")
