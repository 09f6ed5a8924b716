"""Outputs of the cross-scene study (`sp3d.cross_scene`): rich tables (Table 9 / Table 10 layouts), markdown
with the paper's reference rows, JSON, a bar plot, and the MLflow study run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from rich.table import Table

from selfpose3d.evaluation import metric_key, save_report
from sp3d.compare_plots import save_figure
from sp3d.compare_report import metric_label, paper_cell, write_text
from sp3d.cross_scene import CrossSceneResult, SceneResult

PCP_COLUMNS = ["actor1", "actor2", "actor3", "average", "recall500"]
AP_COLUMNS = ["ap25", "ap50", "ap100", "mpjpe", "recall500"]
PROTOCOLS = {"pcp": ("PCP on Shelf / Campus (paper Table 9 layout; PCP and recall in %)", PCP_COLUMNS),
             "ap": ("AP / MPJPE on Panoptic-format data (paper Table 10 layout; AP and recall in %, MPJPE in mm)",
                    AP_COLUMNS)}
SHORT = {"average": "Average", "recall500": "R@500", "mpjpe": "MPJPE", "ap25": "AP25", "ap50": "AP50",
         "ap100": "AP100"}
PLOT_METRICS = {"pcp": ["actor1", "actor2", "actor3", "average"], "ap": ["ap25", "ap50", "ap100"]}
FILES = {"markdown": "cross_scene.md", "json": "cross_scene.json", "plot": "cross_scene.png"}
STUDY_TAGS = {"sp3d.kind": "study", "sp3d.study": "cross-scene", "sp3d.study_type": "cross-scene"}
ARTIFACT_PATH = "cross_scene"
# SelfPose3d supplementary, values as printed. Table 9: trained on Panoptic, no fine-tuning (actor 1-3, average).
PAPER_TABLE9 = {
    "Shelf (5 views)": {"VoxelPose*": [94.6, 91.4, 97.5, 94.5], "MvP*": [3.51, 4.32, 15.9, 7.91],
                        "SelfPose3d": [93.7, 94.3, 97.7, 95.2]},
    "Campus (3 views)": {"VoxelPose*": [0.0, 0.3, 0.0, 0.1], "MvP*": [0.41, 0.05, 0.43, 0.30],
                         "SelfPose3d": [78.2, 8.0, 40.9, 42.3]},
}
# Table 10: Panoptic test set (AP25, AP50, AP100, MPJPE mm); baselines trained on (synthetic) Campus / Shelf.
PAPER_TABLE10 = {"VoxelPose (Campus)": [0.0, 0.0, 0.0, math.inf], "VoxelPose (Shelf)": [0.0, 0.0, 0.0, 350.6],
                 "MvP (Shelf)": [0.0, 0.0, 0.0, 395.3], "SelfPose3d (Panoptic, self-supervised)": [55.1, 96.4, 98.5, 24.5]}


def column_label(metric: str) -> str:
    """Header of a metric: "actor1" -> "Actor 1 (%)", "average" -> "Average (%)", else `metric_label`."""
    if metric.startswith("actor"):
        return f"Actor {metric[5:]} (%)"
    return "Average (%)" if metric == "average" else metric_label(metric)


def cell(metric: str, value: float | None) -> str:
    """A value in paper units: fractions as percent (1 decimal), MPJPE in mm; missing / NaN / inf -> "-"."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.1f}" if metric == "mpjpe" else f"{100.0 * value:.1f}"


def _rows(result: CrossSceneResult, protocol: str) -> list[SceneResult]:
    return [r for r in result.rows if r.protocol == protocol]


def _head(columns: Sequence[str], short: bool = False) -> list[str]:
    labels = [SHORT.get(c, f"Actor {c[5:]}" if c.startswith("actor") else c) if short else column_label(c)
              for c in columns]
    return ["test set", *([] if short else ["kind"]), "views", "frames", *labels]


def _body(row: SceneResult, columns: Sequence[str], short: bool = False) -> list[str]:
    return [row.spec.label, *([] if short else [row.kind]), str(row.views), str(row.frames),
            *(cell(c, row.metrics.get(c)) for c in columns)]


def title(result: CrossSceneResult) -> str:
    """One line: study name and what the model was trained on."""
    cfg = result.train.config
    return (f"cross-scene {result.name}: trained on {cfg.name} ({cfg.dataset.kind}, {cfg.dataset.num_views} views), "
            "no fine-tuning")


def rich_tables(result: CrossSceneResult) -> list[Table]:
    """One rich Table per protocol present (PCP rows first), one row per test set."""
    tables = []
    for protocol, (caption, columns) in PROTOCOLS.items():
        rows = _rows(result, protocol)
        if not rows:
            continue
        table = Table(title=f"{title(result)}\n{caption}", title_justify="left")
        for i, head in enumerate(_head(columns, short=True)):
            table.add_column(head, justify="left" if i == 0 else "right", no_wrap=i > 0)
        for row in rows:
            table.add_row(*_body(row, columns, short=True))
        tables.append(table)
    return tables


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]


def _paper_md() -> list[str]:
    def shown(v: float) -> str:
        return "inf" if math.isinf(v) else paper_cell({"v": v}, "v")

    t9 = [[method, where, *map(shown, vals)] for where, rows in PAPER_TABLE9.items() for method, vals in rows.items()]
    t10 = [[method, *map(shown, vals)] for method, vals in PAPER_TABLE10.items()]
    return ["## Paper references (SelfPose3d supplementary)", "",
            "Table 9 (PCP %, trained on Panoptic, tested without fine-tuning; * = no fine-tuning):", "",
            *_md_table(["method", "test set", "Actor 1", "Actor 2", "Actor 3", "Average"], t9), "",
            "Table 10 (Panoptic test set; baselines trained on Campus / Shelf):", "",
            *_md_table(["method", "AP25", "AP50", "AP100", "MPJPE (mm)"], t10), ""]


def markdown(result: CrossSceneResult, plot: Path | None = None) -> str:
    """The markdown report: summary, one table per protocol, composition notes, paper references, plot link."""
    from sp3d.redact import scrub_text

    info = result.to_dict()["train"]
    where = f" (checkpoint `{info['checkpoint']}`, MLflow run `{info['run_id']}`)" if info["run_id"] else ""
    space = info["root_space"]
    lines = [f"# Cross-scene generalisation: {result.name}", "", f"- trained model: `{info['source']}`{where}",
             f"- training config: `{info['config']}` ({info['kind']}, {info['num_views']} views, root space centre "
             f"{space['center_mm']} mm, size {space['size_mm']} mm, voxels {space['voxels']}), hash "
             f"`{info['config_hash']}`",
             "- network (model.*, dataset.image_size / heatmap_size) from the trained model; data, cameras, "
             "eval settings and model.root_space from each test config; no fine-tuning",
             *(f"- note: {n}" for n in info["notes"]), ""]
    for protocol, (caption, columns) in PROTOCOLS.items():
        rows = _rows(result, protocol)
        if rows:
            lines += [f"## {caption}", "", *_md_table(_head(columns), [_body(r, columns) for r in rows]), ""]
    lines += ["## Test sets", ""]
    for row in result.rows:
        sets = ", ".join(f"`{s}`" for s in row.spec.sets) or "none"
        lines.append(f"- **{row.spec.label}**: config `{row.spec.spec}`, overrides {sets}")
        lines += [f"  - {n}" for n in row.notes]
    lines += ["", *_paper_md()]
    if plot is not None:
        lines += ["## Plot", "", f"![cross-scene]({plot.as_posix()})", ""]
    return scrub_text("\n".join(lines))


def bar_plot(result: CrossSceneResult) -> Figure:
    """Grouped bars per test set: PCP per actor + average (left), AP25/50/100 with MPJPE written above (right)."""
    panels = [p for p in PLOT_METRICS if _rows(result, p)]
    fig = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    for ax, protocol in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        rows, metrics = _rows(result, protocol), PLOT_METRICS[protocol]
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            values = [100.0 * r.metrics.get(metric, math.nan) for r in rows]
            xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [0.0 if not math.isfinite(v) else v for v in values], width, label=column_label(metric))
        if protocol == "ap":
            for i, r in enumerate(rows):
                mpjpe = cell("mpjpe", r.metrics.get("mpjpe"))
                ax.annotate("MPJPE n/a" if mpjpe == "-" else f"MPJPE {mpjpe} mm", (i, 103), ha="center", fontsize=8)
        ax.set_xticks(range(len(rows)), [f"{r.spec.label}\n({r.views} views)" for r in rows])
        ax.set_ylim(0, 125)
        ax.set_ylabel("PCP (%)" if protocol == "pcp" else "AP (%)")
        ax.set_title("PCP (Table 9)" if protocol == "pcp" else "AP / MPJPE (Table 10)")
        ax.legend(fontsize=7, loc="upper center", ncols=len(metrics), frameon=False)
    fig.suptitle(f"{result.name}: trained on {result.train.config.name}, no fine-tuning")
    return fig


def strict_json(value: Any) -> Any:
    """Recursively replace non-finite floats by "inf" / "-inf" / "nan" strings (strict JSON, as `save_report`)."""
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_outputs(result: CrossSceneResult, out_dir: Path) -> dict[str, Path]:
    """Write ``cross_scene.png``, ``cross_scene.json`` and ``cross_scene.md`` (linking the plot) into
    ``out_dir``, each atomically. Returns {"plot", "json", "markdown"} -> path."""
    out_dir = Path(out_dir)
    paths = {"plot": save_figure(bar_plot(result), out_dir / FILES["plot"]),
             "json": save_report(strict_json(result.to_dict()), out_dir / FILES["json"])}
    paths["markdown"] = write_text(out_dir / FILES["markdown"], markdown(result, Path(FILES["plot"])))
    return paths


def study_metrics(result: CrossSceneResult) -> dict[str, float]:
    """Tracker-safe finite metrics ``<label>/<key>`` (PCP keys get a ``pcp_`` prefix, e.g. shelf/pcp_average)."""
    out: dict[str, float] = {}
    for row in result.rows:
        for key, value in row.metrics.items():
            name = f"pcp_{key}" if row.protocol == "pcp" and not key.startswith("recall") else key
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[metric_key(f"{row.spec.label}/{name}")] = float(value)
    return out


def study_params(result: CrossSceneResult) -> dict[str, str]:
    """Params of the study run: the train source / checkpoint / config and every test config + overrides."""
    info = result.to_dict()
    params = {f"train.{k}": str(info["train"][k]) for k in ("source", "checkpoint", "run_id", "config",
                                                              "config_hash", "num_views")}
    for test in info["tests"]:
        base = metric_key(f"test.{test['label']}")
        params.update({f"{base}.config": test["config"], f"{base}.sets": "; ".join(test["sets"]) or "-",
                       f"{base}.kind": test["kind"], f"{base}.num_views": str(test["num_views"])})
    return params


def log_study(result: CrossSceneResult, paths: Mapping[str, Path], experiment: str,
              tracking_uri: str | None = None) -> str:
    """Log the study as one FINISHED MLflow run named after it (tags sp3d.kind=study, sp3d.study=cross-scene
    + the standard tags of the training config; params, per-test-set metrics, the written files under
    ``cross_scene/``). Returns the run id. Raises TrackingError / SettingsError / MlflowException."""
    import mlflow

    from sp3d import tracking
    from sp3d.redact import scrub
    from sp3d.settings import load_settings

    tracking.configure(load_settings(mlflow_tracking_uri=tracking_uri))
    tags: dict[str, Any] = {**tracking.standard_tags(result.train.config), **STUDY_TAGS,
                            "sp3d.study_name": result.name}
    with tracking.start_run(experiment, result.name, tags=tags, reuse=False) as run:
        mlflow.log_params(scrub(study_params(result)))
        tracking.log_metrics(study_metrics(result))
        for path in paths.values():
            tracking.log_artifact_file(path, ARTIFACT_PATH)
        return run.info.run_id
