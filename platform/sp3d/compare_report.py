"""Text side of `sp3d compare`: the paper-style table (rich for the terminal, markdown for files)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from selfpose3d.fileio import atomic_output
from sp3d.compare import Comparison, Group, Trial, display_value, format_param, is_percent
from sp3d.redact import scrub_text

NAMES = {"mpjpe": "MPJPE", "root_mpjpe": "Root MPJPE", "pcp": "PCP", "train_seconds": "Train time"}


def metric_label(metric: str, unit: bool = True) -> str:
    """Column title of a metric in paper style: "ap50" -> "AP50 (%)", "mpjpe" -> "MPJPE (mm)"."""
    name = NAMES.get(metric)
    if name is None:
        match = re.fullmatch(r"(root_)?(ap|recall)(\d+)", metric)
        name = (("Root " if match.group(1) else "") + match.group(2).upper().replace("RECALL", "Recall")
                + match.group(3)) if match else metric
    if not unit:
        return name
    suffix = "%" if is_percent(metric) else ("s" if metric == "train_seconds" else "mm")
    return f"{name} ({suffix})"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ours_cell(group: Group, metric: str) -> str:
    """ "mean ± std" (std only when n >= 2) of a group in display units, "-" when nothing was measured."""
    mean, std, _ = group.stats(metric)
    if mean is None:
        return "-"
    return _num(mean) if std is None else f"{_num(mean)} ± {_num(std)}"


def paper_cell(values: dict[str, float | None] | None, metric: str) -> str:
    """The paper's value with 1-2 decimals as printed (e.g. "34.0", "2.71"), "-" if not reported."""
    value = (values or {}).get(metric)
    if value is None:
        return "-"
    text = f"{value:.2f}"
    return text[:-1] if text.endswith("0") else text  # 34.0 -> "34.0", 2.71 -> "2.71"


def epoch_cell(group: Group) -> str:
    """Epoch(s) the values were taken at: "4", or "2-4" when trials differ."""
    epochs = group.epochs
    if not epochs:
        return "-"
    return str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"


def _paper_columns(cmp: Comparison) -> bool:
    return any(g.paper for g in cmp.groups)


def headers(cmp: Comparison) -> list[str]:
    """Table header: grouping params, n, epoch, then per metric "X (unit)" [+ "X paper" when the paper has
    rows for the swept values]."""
    cols = [*(cmp.by or ["runs"]), "n", "epoch"]
    for metric in cmp.columns:
        cols.append(metric_label(metric))
        if _paper_columns(cmp):
            cols.append(f"{metric_label(metric, unit=False)} paper")
    return cols


def rows(cmp: Comparison) -> list[tuple[list[str], bool]]:
    """Table body as (cells, is_best) in `headers` order, one row per group (paper-only values: n = 0)."""
    best, paper = cmp.best_group(), _paper_columns(cmp)
    out: list[tuple[list[str], bool]] = []
    for group in cmp.groups:
        cells = [format_param(v) for v in group.values] or ["all"]
        cells += [str(len(group.trials)), epoch_cell(group)]
        for metric in cmp.columns:
            cells.append(ours_cell(group, metric))
            if paper:
                cells.append(paper_cell(group.paper, metric))
        out.append((cells, group is best))
    return out


def reference_table(cmp: Comparison) -> tuple[list[str], list[tuple[list[str], bool]]]:
    """The paper's reference rows outside the sweep (e.g. VoxelPose baselines): (header, body)."""
    head = ["paper reference", *(metric_label(m) for m in cmp.columns)]
    return head, [([ref.label, *(paper_cell(ref.metrics, m) for m in cmp.columns)], False) for ref in cmp.references]


def title(cmp: Comparison) -> str:
    """One-line description: target, kind, metric and epoch selection, paper table."""
    when = "last epoch" if cmp.select == "last" else f"best epoch by {cmp.metric}"
    paper = f"; paper: {cmp.paper_table}" if cmp.paper_table else ""
    where = "" if cmp.kind == "experiment" else f" ({cmp.experiment})"
    return f"{cmp.kind} {cmp.target}{where}: {when}, mean ± std over n runs{paper}"


def rich_table(cmp: Comparison) -> Table:
    """The comparison as a rich Table (best group in bold, paper columns dimmed)."""
    table = Table(title=title(cmp), title_justify="left")
    for i, head in enumerate(headers(cmp)):
        paper_col = head.endswith(" paper")
        table.add_column(head, justify="left" if i < max(len(cmp.by), 1) else "right",
                         style="dim" if paper_col else None, no_wrap=not paper_col)
    for cells, is_best in rows(cmp):
        table.add_row(*cells, style="bold" if is_best else None)
    return table


def rich_references(cmp: Comparison) -> Table | None:
    """The paper's reference rows as a small rich Table (None when the space lists none)."""
    if not cmp.references:
        return None
    head, body = reference_table(cmp)
    table = Table(title=f"paper references ({cmp.paper_table})", title_justify="left")
    for i, col in enumerate(head):
        table.add_column(col, justify="left" if i == 0 else "right")
    for cells, _ in body:
        table.add_row(*cells)
    return table


def _md_table(head: Sequence[str], body: Sequence[tuple[list[str], bool]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cells, bold in body:
        shown = [f"**{c}**" if bold and c not in ("", "-") else c for c in cells]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in shown) + " |")
    return lines


def _trial_rows(cmp: Comparison) -> tuple[list[str], list[tuple[list[str], bool]]]:
    head = ["run", *cmp.by, "epoch", *(metric_label(m) for m in cmp.columns)]
    body: list[tuple[list[str], bool]] = []
    for trial in cmp.trials:
        cells = [trial.name, *(format_param(trial.values.get(k)) for k in cmp.by), _num_epoch(trial)]
        cells += [_num(display_value(m, trial.metrics.get(m))) for m in cmp.columns]
        body.append((cells, False))
    return head, body


def _num_epoch(trial: Trial) -> str:
    return "-" if trial.epoch is None else str(trial.epoch)


def _summary(cmp: Comparison) -> list[str]:
    parent = f" (parent run `{cmp.parent_run_id}`)" if cmp.parent_run_id else ""
    skipped = ", ".join(f"{n} {s}" for s, n in sorted(cmp.skipped.items())) or "none"
    lines = [
        f"- {cmp.kind} `{cmp.target}`{parent} in experiment `{cmp.experiment}`, tracking `{cmp.tracking_uri}`",
        f"- metric `{cmp.metric}` ({cmp.mode}); values at the {cmp.select} epoch of each run; "
        "AP in %, MPJPE in mm; mean ± sample std over n runs",
        f"- grouped by: {', '.join(f'`{k}`' for k in cmp.by) or 'nothing (all runs in one row)'}",
        f"- runs: {len(cmp.trials)} finished; left out: {skipped}",
    ]
    best = cmp.best_group()
    if best is not None:
        label = ", ".join(f"{k}={format_param(v)}" for k, v in zip(cmp.by, best.values, strict=True)) or "all"
        lines.append(f"- best: {label} ({metric_label(cmp.metric, unit=False)} {ours_cell(best, cmp.metric)})")
    if cmp.space is not None and cmp.space.paper is not None and cmp.has_paper:
        lines.append(f"- paper: SelfPose3d {cmp.paper_table} (search space `{cmp.space.name}`)"
                     + (f": {cmp.space.paper.notes.strip()}" if cmp.space.paper.notes else ""))
    lines += [f"- note: {n}" for n in cmp.notes]
    return lines


def markdown(cmp: Comparison, plots: Sequence[Path] = ()) -> str:
    """The full markdown report: summary, aggregated table, per-run table, plot links (relative names)."""
    lines = [f"# Comparison: {cmp.target}", "", *_summary(cmp), "", *_md_table(headers(cmp), rows(cmp)), ""]
    if cmp.references:
        lines += [f"Paper references ({cmp.paper_table}, not part of the sweep):", "",
                  *_md_table(*reference_table(cmp)), ""]
    lines += ["## Runs", "", *_md_table(*_trial_rows(cmp)), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.as_posix()})" for p in plots] + [""]
    return scrub_text("\n".join(lines))


def write_text(path: Path, text: str) -> Path:
    """Write `text` atomically (`atomic_output`); returns `path`."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
    return path


def write_report(cmp: Comparison, out_dir: Path, markdown_path: Path | None = None,
                 plots: bool = True) -> tuple[Path, list[Path]]:
    """Write the PNG plots into `out_dir` and the markdown report (default ``<out_dir>/compare.md``) linking
    them; returns (markdown path, plot paths)."""
    from sp3d.compare_plots import write_plots

    out_dir = Path(out_dir)
    pngs = write_plots(cmp, out_dir) if plots else []
    md_path = Path(markdown_path) if markdown_path else out_dir / "compare.md"
    links = [Path(os.path.relpath(p, md_path.parent)) for p in pngs]
    write_text(md_path, markdown(cmp, links))
    return md_path, pngs
