"""Figures of `sp3d compare` (matplotlib, Agg): metrics vs swept parameter, parallel coordinates, learning curves.

Every figure is a `matplotlib.figure.Figure` (no pyplot state); `write_plots` saves them as PNGs atomically.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import colormaps  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from selfpose3d.fileio import atomic_output  # noqa: E402
from sp3d.compare import (  # noqa: E402
    LOSS_CURVE,
    Comparison,
    Trial,
    display_value,
    format_param,
    is_log_param,
    same_value,
)
from sp3d.compare_report import metric_label  # noqa: E402
from sp3d.search_space_schema import ChoiceParam  # noqa: E402

DPI = 120
LINESTYLES = ("-", "--", ":", "-.")  # repeated runs of the same value share a colour, not a line style
PAPER_STYLE = {"color": "black", "ls": "--", "marker": "x", "ms": 7, "lw": 1.2}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _few_ints(values: Sequence[Any]) -> bool:
    present = {v for v in values if v is not None}
    return 0 < len(present) <= 10 and all(isinstance(v, int) and not isinstance(v, bool) for v in present)


def _categories(cmp: Comparison, key: str, values: Sequence[Any]) -> list[Any] | None:
    """Ordered categories for a non-numeric param (space order first), None when the param is numeric."""
    present = [v for v in values if v is not None]
    if present and all(_is_number(v) for v in present):
        return None
    param = cmp.space.params.get(key) if cmp.space else None
    order = list(param.values) if isinstance(param, ChoiceParam) else []
    extra = sorted({format_param(v) for v in present if not any(same_value(v, o) for o in order)})
    return order + extra


def _x(value: Any, categories: list[Any] | None) -> float | None:
    if value is None:
        return None
    if categories is None:
        return float(value)
    return float(next(i for i, c in enumerate(categories) if same_value(value, c)))


def _paper_points(cmp: Comparison, key: str) -> list[tuple[Any, dict[str, float | None]]]:
    if cmp.space is None or cmp.space.paper is None or not cmp.has_paper:
        return []
    paper_key = cmp.space.paper.param or next(iter(cmp.space.params))
    if paper_key != key:
        return []
    return [(row.params[key], row.metrics) for row in cmp.space.paper_table() if row.in_sweep]


def _means(points: list[tuple[float, float]]) -> tuple[list[float], list[float], list[float]]:
    xs = sorted({x for x, _ in points})
    ys = [[y for x2, y in points if x2 == x] for x in xs]
    return xs, [statistics.fmean(v) for v in ys], [statistics.stdev(v) if len(v) > 1 else 0.0 for v in ys]


def _metric_panel(ax: Any, cmp: Comparison, key: str, metric: str, categories: list[Any] | None) -> None:
    points = [(_x(t.values.get(key), categories), display_value(metric, t.metrics.get(metric))) for t in cmp.trials]
    points = [(x, y) for x, y in points if x is not None and y is not None]
    if points:
        ax.scatter(*zip(*points, strict=True), s=14, alpha=0.45, color="tab:blue", label="runs")
        xs, mean, std = _means(points)
        ax.errorbar(xs, mean, yerr=std, color="tab:blue", marker="o", capsize=3, label="ours (mean ± std)")
    paper = [(_x(v, categories), m.get(metric)) for v, m in _paper_points(cmp, key)]
    paper = sorted((x, y) for x, y in paper if x is not None and y is not None)
    if paper:
        ax.plot(*zip(*paper, strict=True), label=f"paper ({cmp.paper_table})", **PAPER_STYLE)
    for i, ref in enumerate(cmp.references):
        if ref.metrics.get(metric) is not None:
            ax.axhline(ref.metrics[metric], color=f"C{i + 2}", ls=":", lw=1, label=f"{ref.label} (paper)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(metric_label(metric, unit=False), fontsize=10)
    ax.grid(alpha=0.3)


def metric_vs_param(cmp: Comparison, key: str) -> Figure:
    """One panel per table column (AP in %, MPJPE in mm) against the values of param `key`: each run as a
    dot, mean ± std per value, the paper's row as a dashed black line, paper references as dotted lines.
    Log x-axis for log-scaled numeric params, categorical x for strings / bools. Returns a Figure."""
    values = [t.values.get(key) for t in cmp.trials]
    categories = _categories(cmp, key, values)
    ncols = min(len(cmp.columns), 4)
    nrows = math.ceil(len(cmp.columns) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.2 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    log = categories is None and is_log_param(key, [v for v in values if v is not None], cmp.space)
    for ax, metric in zip(axes, cmp.columns, strict=False):
        _metric_panel(ax, cmp, key, metric, categories)
        ax.set_xlabel(key)
        if log:
            ax.set_xscale("log")
        if categories is not None:
            ax.set_xticks(range(len(categories)), [format_param(c) for c in categories])
            ax.set_xlim(-0.5, len(categories) - 0.5)
        elif not log and _few_ints(values):
            ax.set_xticks(sorted({v for v in values if v is not None}))
    for ax in axes[len(cmp.columns):]:
        ax.set_visible(False)
    legend = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 4),
                   fontsize=8)
    fig.suptitle(f"{cmp.target}: metrics vs {key} ({cmp.select} epoch)")
    return fig


def _axis_positions(cmp: Comparison, key: str) -> tuple[list[float | None], list[tuple[float, str]]]:
    """Trial values of `key` scaled to [0, 1] (None when absent) and (position, label) ticks."""
    values = [t.values.get(key) for t in cmp.trials]
    categories = _categories(cmp, key, values)
    if categories is not None:
        span = max(len(categories) - 1, 1)
        pos = [None if v is None else _x(v, categories) / span for v in values]
        return pos, [(i / span, format_param(c)) for i, c in enumerate(categories)]
    log = is_log_param(key, [v for v in values if v is not None], cmp.space)
    nums = [None if v is None else (math.log10(v) if log else float(v)) for v in values]
    known = [n for n in nums if n is not None]
    low, high = (min(known), max(known)) if known else (0.0, 1.0)
    scale = (lambda n: 0.5) if high == low else (lambda n: (n - low) / (high - low))
    distinct = sorted({v for v in values if v is not None})
    shown = distinct if len(distinct) <= 6 else [distinct[0], distinct[len(distinct) // 2], distinct[-1]]
    ticks = [(scale(math.log10(v) if log else float(v)), format_param(v)) for v in shown]
    return [None if n is None else scale(n) for n in nums], ticks


def parallel_coordinates(cmp: Comparison) -> Figure:
    """Parallel coordinates: one vertical axis per grouping param plus the selection metric (% or mm),
    one line per run coloured by that metric (absent conditional params leave a gap). Returns a Figure."""
    keys = list(cmp.by)
    scores = [display_value(cmp.metric, t.metrics.get(cmp.metric)) for t in cmp.trials]
    known = [s for s in scores if s is not None] or [0.0]
    norm = Normalize(min(known), max(known) if max(known) > min(known) else min(known) + 1e-9)
    cmap = colormaps["viridis" if cmp.mode == "max" else "viridis_r"]
    fig = Figure(figsize=(max(5.0, 2.2 * (len(keys) + 1)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    columns = [_axis_positions(cmp, k) for k in keys]
    metric_ticks = [(float(norm(v)), f"{v:.1f}") for v in (min(known), max(known))]
    for i, score in enumerate(scores):
        if score is None:
            continue
        ys = [col[0][i] for col in columns] + [float(norm(score))]
        ax.plot(range(len(ys)), [math.nan if y is None else y for y in ys], color=cmap(norm(score)),
                marker="o", ms=3, alpha=0.85)
    for x, ticks in enumerate([c[1] for c in columns] + [metric_ticks]):
        ax.axvline(x, color="gray", lw=0.8)
        for y, text in ticks:
            ax.text(x + 0.03, y, text, fontsize=7, va="center", ha="left")
    ax.set_xticks(range(len(keys) + 1), [*keys, metric_label(cmp.metric)], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(keys) + 0.5)
    ax.set_ylim(-0.08, 1.08)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric_label(cmp.metric))
    fig.suptitle(f"{cmp.target}: parallel coordinates ({len(cmp.trials)} runs, {cmp.select} epoch)")
    return fig


def _trial_label(cmp: Comparison, trial: Trial) -> str:
    values = ", ".join(f"{k.split('.')[-1]}={format_param(trial.values.get(k))}" for k in cmp.by)
    return f"{values} ({trial.name})" if values else trial.name


def learning_curves(cmp: Comparison) -> Figure:
    """eval/<metric> (% or mm) and train/total against the global epoch, one line per run, coloured by
    group (runs of the same value share a colour). Returns a Figure."""
    fig = Figure(figsize=(11.0, 3.8), layout="constrained")
    panels = fig.subplots(1, 2)
    colour = {t.run_id: f"C{gi % 10}" for gi, g in enumerate(cmp.groups) for t in g.trials}
    dashes = {t.run_id: LINESTYLES[ti % len(LINESTYLES)] for g in cmp.groups for ti, t in enumerate(g.trials)}
    for ax, key in zip(panels, (cmp.metric, LOSS_CURVE), strict=True):
        drawn = False
        for trial in (t for g in cmp.groups for t in g.trials):  # legend in table order
            series = trial.history.get(key, [])
            ys = [display_value(cmp.metric, v) if key == cmp.metric else v for _, v in series]
            if series:
                ax.plot([s for s, _ in series], ys, marker="o", ms=3, color=colour.get(trial.run_id),
                        ls=dashes.get(trial.run_id, "-"), label=_trial_label(cmp, trial))
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xlabel("epoch (global)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric_label(cmp.metric) if key == cmp.metric else "training loss (total)")
        ax.set_title(f"eval/{cmp.metric}" if key == cmp.metric else key, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = panels[0].get_legend_handles_labels()
    if not handles:
        handles, labels = panels[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7, ncols=1 + len(labels) // 19)
    fig.suptitle(f"{cmp.target}: learning curves")
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Save `fig` as PNG atomically (`selfpose3d.fileio.atomic_output`); returns `path`."""
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", text)


def write_plots(cmp: Comparison, out_dir: Path) -> list[Path]:
    """Write metric_vs_<param>.png per grouping param, parallel_coordinates.png and learning_curves.png
    into `out_dir`; returns the written paths."""
    paths = [save_figure(metric_vs_param(cmp, key), out_dir / f"metric_vs_{_slug(key)}.png") for key in cmp.by]
    if cmp.by:
        paths.append(save_figure(parallel_coordinates(cmp), out_dir / "parallel_coordinates.png"))
    paths.append(save_figure(learning_curves(cmp), out_dir / "learning_curves.png"))
    return paths
