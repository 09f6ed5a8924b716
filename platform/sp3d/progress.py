"""Rich terminal progress for training runs (an engine `Callback`)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from selfpose3d.engine.callbacks import Callback, EpochEnd

SUMMARY_KEYS = ("eval/ap25", "eval/ap50", "eval/ap100", "eval/mpjpe", "eval/root_ap100")


class RichProgress(Callback):
    """One bar per epoch with the running loss; one summary line per epoch. Rank 0 only."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: int | None = None

    def on_train_start(self, trainer) -> None:  # noqa: ANN001 - engine Trainer
        if not self.enabled or trainer.rank != 0:
            self.enabled = False
            return
        plan = trainer.schedule()
        self.console.print(f"[bold]sp3d train[/] {trainer.cfg.name}: {len(plan)} epochs "
                           f"({', '.join(f'{s} x{getattr(trainer.cfg.train, s).epochs}' for s in ('backbone_2d', 'root_net', 'pose_net', 'finetune') if getattr(trainer.cfg.train, s).epochs)}), "
                           f"{len(trainer.train_set)} train / {len(trainer.test_set)} test samples, device {trainer.device}")
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                                  console=self.console, transient=True)
        self._progress.start()

    def on_step(self, trainer, stage: str, step: int, total: int, losses: dict[str, float]) -> None:  # noqa: ANN001
        if not self.enabled or self._progress is None:
            return
        if step == 0 or self._task is None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(f"{stage:>11}", total=total, loss="")
        self._progress.update(self._task, completed=step + 1, loss=f"loss {losses.get('total', 0.0):.4g}")

    def on_epoch_end(self, trainer, event: EpochEnd) -> None:  # noqa: ANN001
        if not self.enabled:
            return
        shown = "  ".join(f"{k.split('/')[-1]} {event.metrics[k]:.3g}" for k in SUMMARY_KEYS if k in event.metrics)
        loss = event.metrics.get("train/total", float("nan"))
        self.console.print(f"epoch {event.global_epoch + 1:>3} {event.stage:>11}[{event.stage_epoch}]  "
                           f"loss {loss:.4g}  {shown}")

    def on_train_end(self, trainer, metrics: dict[str, float]) -> None:  # noqa: ANN001
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.enabled:
            self.console.print(metrics_table(metrics))


def metrics_table(metrics: dict[str, float], title: str = "Evaluation") -> Table:
    """A rich table of the paper's headline metrics (AP in %, MPJPE in mm) from an ``eval/...`` dict."""
    table = Table(title=title)
    for col in ("AP25", "AP50", "AP100", "AP150", "MPJPE (mm)", "Recall@500"):
        table.add_column(col, justify="right")
    def pct(key: str) -> str:
        value = metrics.get(f"eval/{key}", metrics.get(key))
        return "-" if value is None else f"{100 * value:.1f}"
    mpjpe = metrics.get("eval/mpjpe", metrics.get("mpjpe"))
    shown = "-" if mpjpe is None or not math.isfinite(mpjpe) else f"{mpjpe:.1f}"  # inf: nothing matched
    table.add_row(pct("ap25"), pct("ap50"), pct("ap100"), pct("ap150"), shown, pct("recall500"))
    return table
