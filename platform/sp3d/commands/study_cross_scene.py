"""`sp3d study cross-scene`: evaluate a trained model on other datasets / camera rigs without fine-tuning
(SelfPose3d supplementary Tables 9 and 10). Library: `sp3d.cross_scene`, outputs: `sp3d.cross_scene_report`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from selfpose3d.config import Config, ConfigError
from selfpose3d.data.io import DatasetError
from selfpose3d.engine.checkpoint import CheckpointError
from sp3d.compare_source import DEFAULT_EXPERIMENT
from sp3d.cross_scene import CrossSceneError, SceneSpec, run_cross_scene

console = Console()
HELP = "\n\n".join([
    "Evaluate a model trained on one dataset / camera rig (--train) on others (--test), without fine-tuning "
    "(SelfPose3d supplementary Table 9: PCP per actor on Shelf / Campus; Table 10: AP25/50/100 + MPJPE on "
    "Panoptic-format data). One row per --test.",
    "--train: an engine checkpoint file (model.pt, best.pt, final.pt) or an MLflow run id / run name whose "
    "checkpoints/best.pt (--artifact final: final.pt) is downloaded. --test: a preset (shelf, campus, panoptic, "
    "tiny) or a config YAML. --set KEY=VALUE applies to every test set, --set LABEL:KEY=VALUE only to the one "
    "labelled LABEL (preset name or YAML file stem).",
    "The network (model.*, dataset.image_size / heatmap_size) is rebuilt from the checkpoint's embedded config; "
    "the test data, cameras, number of views, eval settings and model.root_space come from the test config. "
    "The root space is the voxel grid in which people are searched: geometry, not learned weights (the nets "
    "are fully convolutional), so it must cover the TEST scene and taking it from the test side is legal; a "
    "changed voxel size is reported. An incompatible skeleton (model.num_joints) or a --set of a network key "
    "is an error.",
    "Writes <out>/cross_scene.md, .json and .png (default reports/cross-scene-<name>/) and, unless --no-track, "
    "an MLflow run tagged sp3d.kind=study, sp3d.study=cross-scene. Exit 1 on bad input (missing / corrupt "
    "checkpoint, unknown run, incompatible model, unreadable data), 2 on a bad config.",
])
ERRORS = (CrossSceneError, CheckpointError, DatasetError)


@contextlib.contextmanager
def cross_scene_errors() -> Iterator[None]:
    """Expected failures -> one ``error:`` line and exit 1 (2 for a bad config)."""
    from sp3d.commands.train import fail

    try:
        yield
    except ConfigError as err:
        raise fail(str(err), 2) from None
    except ERRORS as err:
        raise fail(f"{type(err).__name__}: {err}") from None


def _announce(spec: SceneSpec, cfg: Config) -> None:
    sets = f" ({', '.join(spec.sets)})" if spec.sets else ""
    console.print(f"evaluating on [bold]{escape(spec.label)}[/]{escape(sets)}: {cfg.dataset.kind} at "
                  f"{escape(cfg.dataset.root)}, {cfg.dataset.num_views} views", highlight=False, soft_wrap=True)


def _track(result, paths: dict[str, Path], experiment: str, tracking_uri: str | None) -> None:  # noqa: ANN001
    from mlflow.exceptions import MlflowException

    from sp3d.commands.train import fail
    from sp3d.cross_scene_report import log_study
    from sp3d.redact import scrub_text
    from sp3d.settings import SettingsError
    from sp3d.tracking import TrackingError

    try:
        run_id = log_study(result, paths, experiment, tracking_uri)
    except (TrackingError, SettingsError, MlflowException, OSError) as err:
        raise fail(f"outputs written, but MLflow logging failed: {scrub_text(str(err))}") from None
    console.print(f"MLflow: run {run_id} in experiment {experiment} (sp3d.study=cross-scene)", highlight=False)


def cross_scene(
    train: Annotated[str, typer.Option("--train", "-t", help="Trained model: checkpoint file, or MLflow run id / "
                                       "run name (its checkpoints/best.pt).")],
    tests: Annotated[list[str], typer.Option("--test", "-T", help="Test config: preset (shelf, campus, panoptic, "
                                             "tiny) or YAML; repeatable, one row each.")],
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", help="Test-side override [LABEL:]KEY=VALUE, "
                                                   "repeatable (e.g. -s dataset.root=/data/Shelf).")] = None,
    artifact: Annotated[str, typer.Option(help="MLflow source: best or final checkpoint artifact (falls back "
                                          "to the other).")] = "best",
    max_frames: Annotated[int | None, typer.Option(min=1, help="Test frames per test set (default: its "
                                                   "eval.max_test_frames).")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Study name (default "
                                             "<train config>-to-<test labels>).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output dir (default "
                                             "reports/cross-scene-<name>).")] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log the study to MLflow.")] = True,
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the study run.")] = DEFAULT_EXPERIMENT,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: sp3d settings).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    from sp3d.cross_scene_report import rich_tables, write_outputs

    with cross_scene_errors():
        result = run_cross_scene(train, tests, sets or [], which=artifact, name=name, max_frames=max_frames,
                                 device=device, tracking_uri=tracking_uri, on_test=_announce)
    for table in rich_tables(result):
        console.print(table)
    for note in result.train.notes + [n for r in result.rows for n in r.notes]:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    paths = write_outputs(result, out or Path("reports") / f"cross-scene-{result.name}")
    for kind, path in sorted(paths.items()):
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)
    if track:
        _track(result, paths, experiment, tracking_uri)


cross_scene.__doc__ = HELP


def add_to(study_app: typer.Typer) -> None:
    """Add ``cross-scene`` to the `sp3d study` group (once, however often it is called)."""
    if not any(c.name == "cross-scene" for c in study_app.registered_commands):
        study_app.command("cross-scene", help=HELP)(cross_scene)
