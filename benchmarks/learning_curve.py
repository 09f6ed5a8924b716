"""Learning curves of SelfPose3d (self-supervised, no 3D labels) vs. the supervised VoxelPose baseline.

Generates a synthetic world if missing (``--data``, default ``<out>/data``): ``--train-sequences``
training sequences ``synth_train1..N`` (default 24: ~55 people, so the 2D net generalises to the test people)
plus the config's own test sequences, which are held out of training. Trains one or both modes with the
same schedule and budget (the config's ``train`` section, ``--epochs`` / ``--set`` overrides) and
evaluates on the test split after every epoch: 2D heatmap accuracy (PCK: heatmap argmax within 2 heatmap
px of a GT-visible joint's projection; GT used for scoring only), AP@25..150, MPJPE (mm), root AP. The
self-supervised mode never reads 3D labels for training. Results are merged into
``<out>/learning_curve.json`` (each mode may run separately, even concurrently), a table is printed and
``<out>/learning_curve.png`` is (re)drawn from every mode in the JSON.

Usage::

    python benchmarks/learning_curve.py --config tiny --out runs/learning_curve --modes self_supervised
    python benchmarks/learning_curve.py --config tiny --out runs/learning_curve --modes supervised \
        --epochs backbone_2d=6,pose_net=4 --set train.max_iters_per_epoch=50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfpose3d.config import Config, load_config
from selfpose3d.config.schema import SynthConfig
from selfpose3d.data.dataset import collate_samples
from selfpose3d.data.synthetic import MANIFEST, generate_dataset
from selfpose3d.data.synthetic.writer import RENDERER_VERSION, written_renderer_version
from selfpose3d.engine.callbacks import Callback, EpochEnd
from selfpose3d.engine.trainer import STAGES, Trainer
from selfpose3d.fileio import atomic_output
from selfpose3d.geometry.cameras import project_points_torch
from selfpose3d.losses.render import in_heatmap, original_to_heatmap_px
from selfpose3d.losses.supervised import gt_person_mask

MODES = ("self_supervised", "supervised")
RESULTS = "learning_curve.json"
PLOT = "learning_curve.png"
TABLE_KEYS = [("pck2px", "PCK2px"), ("ap25", "AP25"), ("ap50", "AP50"), ("ap100", "AP100"), ("ap150", "AP150"),
              ("mpjpe", "MPJPE"), ("root_ap100", "rAP100"), ("root_ap150", "rAP150"), ("root_mpjpe", "rMPJPE"),
              ("num_pred", "#pred")]


class BenchmarkError(ValueError):
    """Bad command-line input (the message names the option and what was expected)."""


def parse_epochs(text: str | None) -> dict[str, int]:
    """``"backbone_2d=6,pose_net=4"`` -> ``{"train.backbone_2d.epochs": 6, ...}`` (stage names of the engine)."""
    out: dict[str, int] = {}
    for item in filter(None, (text or "").split(",")):
        stage, _, value = item.partition("=")
        if stage.strip() not in STAGES or not value.strip().isdigit():
            raise BenchmarkError(f"--epochs {item!r}: expected STAGE=N with STAGE in {', '.join(STAGES)}")
        out[f"train.{stage.strip()}.epochs"] = int(value)
    return out


def parse_sets(items: list[str]) -> list[str]:
    """Validate ``--set KEY=VALUE`` items (passed on to `load_config` as dotted overrides)."""
    for item in items:
        if "=" not in item:
            raise BenchmarkError(f"--set {item!r}: expected KEY=VALUE, e.g. train.max_iters_per_epoch=50")
    return list(items)


def data_overrides(config: str, root: Path, train_sequences: int) -> list[str]:
    """Overrides pointing the config at the benchmark's synthetic world: ``train_sequences`` training
    sequences ``synth_train1..N`` plus the config's own (held-out) test sequences, at ``root``."""
    if train_sequences < 1:
        raise BenchmarkError(f"--train-sequences {train_sequences}: expected >= 1")
    test = load_config(config).dataset.test_sequences
    train = [f"synth_train{i}" for i in range(1, train_sequences + 1)]
    if set(train) & set(test):
        raise BenchmarkError(f"--config {config}: test sequences {test} overlap the training names {train}")
    return [f"dataset.root={root}", f"dataset.train_sequences={json.dumps(train)}",
            f"synth.sequences={json.dumps(train + list(test))}"]


def ensure_dataset(cfg: Config) -> Path:
    """Generate the synthetic dataset of ``cfg.synth`` at ``cfg.dataset.root`` unless it exists; an existing
    one must hold every sequence the config reads."""
    root = Path(cfg.dataset.root)
    manifest = root / MANIFEST
    if not manifest.is_file():
        print(f"generating synthetic dataset at {root} ...", flush=True)
        generate_dataset(cfg, root)
        return root
    data = json.loads(manifest.read_text())
    have = {s["name"] for s in data.get("sequences", [])}
    missing = sorted(set(cfg.dataset.train_sequences + cfg.dataset.test_sequences) - have)
    if missing:
        raise BenchmarkError(f"{manifest}: dataset lacks sequences {missing}; pass another --data folder")
    differ = synth_differences(data.get("synth", {}), cfg)
    renderer = written_renderer_version(root)
    if renderer != RENDERER_VERSION:
        differ.append(f"renderer version {renderer} vs {RENDERER_VERSION}")
    if differ:
        raise BenchmarkError(f"{manifest}: dataset was generated with other synth settings ({', '.join(differ)}); "
                             "pass another --data folder")
    return root


def synth_differences(written: dict[str, Any], cfg: Config) -> list[str]:
    """``synth.KEY`` settings (sequence list aside) of a dataset manifest that differ from ``cfg.synth``; keys
    missing from an older manifest count as their defaults, keys this version does not know always differ."""
    unknown = sorted(set(written) - set(SynthConfig.model_fields))
    known = {k: v for k, v in written.items() if k in SynthConfig.model_fields}
    try:
        old = SynthConfig.model_validate({**known, "sequences": cfg.synth.sequences}).model_dump()
    except ValueError as err:
        return [f"unreadable manifest synth section ({str(err).splitlines()[0]})"]
    new = cfg.synth.model_dump()
    return [f"synth.{k}: {old[k]} vs {new[k]}" for k in new if k != "sequences" and old[k] != new[k]] + [
        f"synth.{k}: unknown setting" for k in unknown]


@torch.no_grad()
def heatmap_pck(model: torch.nn.Module, dataset: Any, cfg: Config, max_frames: int, radius_px: float = 2.0) -> float:
    """Fraction of GT-visible joints (in view) whose heatmap argmax lies within ``radius_px`` heatmap px of
    the joint's projection (per view and joint, nearest GT person). GT is used for scoring only."""
    was_training = model.training
    model.eval()
    w = cfg.dataset.heatmap_size[0]
    hits, total = 0, 0
    for i in range(min(len(dataset), max_frames)):
        batch = collate_samples([dataset[i]])
        heatmaps, _ = model.forward_2d(batch["images"])  # (1, V, J, h, w)
        flat = heatmaps.flatten(-2).argmax(-1)
        peak = torch.stack([flat % w, flat // w], dim=-1).float()  # (1, V, J, 2) heatmap px
        gt, vis = batch["gt_3d"], batch["gt_vis"] & gt_person_mask(batch)[..., None]
        b, m, j, _ = gt.shape
        v = batch["K"].shape[1]
        pixels = project_points_torch(gt.reshape(b, 1, m * j, 3).expand(b, v, m * j, 3), batch["K"], batch["R"],
                                      batch["t"], batch["dist"])
        pixels = original_to_heatmap_px(pixels, batch["affine"], cfg.dataset.image_size,
                                        cfg.dataset.heatmap_size).reshape(b, v, m, j, 2)
        shown = in_heatmap(pixels, cfg.dataset.heatmap_size) & vis[:, None]  # (1, V, M, J)
        dist = (pixels - peak[:, :, None]).norm(dim=-1).masked_fill(~shown, float("inf"))
        nearest = dist.min(dim=2).values  # (1, V, J)
        counted = shown.any(dim=2)
        hits += int((nearest[counted] <= radius_px).sum())
        total += int(counted.sum())
    model.train(was_training)
    return hits / max(total, 1)


class CurveRecorder(Callback):
    """Per epoch: stage, step time, train losses, 2D PCK and the engine's eval metrics (test split)."""

    def __init__(self, cfg: Config, pck_frames: int) -> None:
        self.cfg, self.pck_frames = cfg, pck_frames
        self.rows: list[dict[str, Any]] = []
        self._epoch_start = time.time()
        self._steps = 0

    def on_step(self, trainer: Trainer, stage: str, step: int, total: int, losses: dict[str, float]) -> None:
        """Count steps (for the step time) and print a heartbeat every 25 steps."""
        self._steps += 1
        if (step + 1) % 25 == 0:
            print(f"  {stage} step {step + 1}/{total} loss {losses['total']:.5f}", flush=True)

    def on_epoch_end(self, trainer: Trainer, event: EpochEnd) -> None:
        """Record one row (train time excludes this callback's own PCK evaluation)."""
        elapsed = time.time() - self._epoch_start
        row: dict[str, Any] = {"stage": event.stage, "stage_epoch": event.stage_epoch,
                               "epoch": event.global_epoch, "steps": self._steps,
                               "epoch_seconds": round(elapsed, 2),
                               "step_seconds": round(elapsed / max(self._steps, 1), 3)}
        row.update({k.split("/", 1)[1]: v for k, v in event.metrics.items() if k.startswith(("eval/", "train/"))})
        row["pck2px"] = heatmap_pck(trainer.model, trainer.test_set, self.cfg, self.pck_frames)
        self.rows.append(row)
        print(format_table([row], header=not self.rows[:-1]), flush=True)
        self._epoch_start, self._steps = time.time(), 0


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.1f}" if "mpjpe" in key else f"{value:.0f}" if key.startswith("num") else f"{value:.3f}"


def format_table(rows: list[dict[str, Any]], header: bool = True) -> str:
    """Fixed-width table: epoch, stage, step time, then `TABLE_KEYS` (AP in [0, 1], MPJPE in mm)."""
    cols = ["epoch", "stage", "s/step"] + [title for _, title in TABLE_KEYS]
    lines = [" ".join(f"{c:>11}" for c in cols)] if header else []
    for row in rows:
        cells = [str(row["epoch"]), f"{row['stage']}:{row['stage_epoch']}", f"{row['step_seconds']:.2f}"]
        cells += [_cell(row, key) for key, _ in TABLE_KEYS]
        lines.append(" ".join(f"{c:>11}" for c in cells))
    return "\n".join(lines)


def run_mode(config: str, mode: str, overrides: list[str], threads: int, pck_frames: int) -> dict[str, Any]:
    """Train one mode from scratch with the benchmark's schedule; returns its record (config, rows, times)."""
    cfg = load_config(config, overrides + [f"loss.mode={mode}"])
    ensure_dataset(cfg)
    torch.set_num_threads(threads)
    recorder = CurveRecorder(cfg, pck_frames)
    start, cpu_start = time.time(), time.process_time()
    trainer = Trainer(cfg, [recorder], device="cpu")
    final = trainer.fit()
    wall, cpu = time.time() - start, time.process_time() - cpu_start
    return {"mode": mode, "config": config, "overrides": overrides, "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),
            "rows": recorder.rows, "final": {k: v for k, v in final.items() if isinstance(v, float)},
            "train_frames": len(trainer.train_set), "test_frames": len(trainer.test_set),
            "eval_frames": cfg.eval.max_test_frames, "torch_threads": threads,
            "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
            "torch": torch.__version__, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def read_results(path: Path) -> dict[str, Any]:
    """The merged results JSON ({mode: record}); empty if missing. Raises `BenchmarkError` if unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{path}: not valid JSON ({err}); delete it or pick another --out") from None
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a JSON object {{mode: record}}")
    return data


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """PNG with AP@50/100/150 (solid/dashed/dotted), MPJPE and root AP@150 / 2D PCK vs. global epoch per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for mode, record in results.items():
        rows = record["rows"]
        epochs = [r["epoch"] for r in rows]
        for key, style in (("ap50", ":"), ("ap100", "--"), ("ap150", "-")):
            axes[0].plot(epochs, [r.get(key, np.nan) for r in rows], style, marker="o", label=f"{mode} {key}")
        axes[1].plot(epochs, [r.get("mpjpe", np.nan) if np.isfinite(r.get("mpjpe", np.nan)) else np.nan
                              for r in rows], marker="o", label=mode)
        axes[2].plot(epochs, [r.get("root_ap150", np.nan) for r in rows], "-", marker="o", label=f"{mode} root AP150")
        axes[2].plot(epochs, [r["pck2px"] for r in rows], "--", marker="s", label=f"{mode} 2D PCK@2px")
    titles = ("pose AP (test split)", "MPJPE (mm, matched < 500 mm)", "root AP@150 / 2D heatmap PCK")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch (all stages)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    ap.add_argument("--out", required=True, type=Path, help="output folder for JSON + PNG")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of self_supervised, supervised")
    ap.add_argument("--epochs", default=None, help="per-stage epoch overrides, e.g. backbone_2d=6,pose_net=4")
    ap.add_argument("--data", type=Path, default=None, help="synthetic dataset root (default: <out>/data)")
    ap.add_argument("--train-sequences", type=int, default=24, help="synthetic training sequences (default 24)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE config override")
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="torch threads")
    ap.add_argument("--pck-frames", type=int, default=10, help="test frames scored by the 2D PCK")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the requested modes, merge into <out>/learning_curve.json, print tables, draw the PNG."""
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise BenchmarkError(f"--modes {args.modes!r}: expected a comma list of {', '.join(MODES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    data = (args.data or args.out / "data").resolve()
    overrides = data_overrides(args.config, data, args.train_sequences)
    overrides += [f"{k}={v}" for k, v in parse_epochs(args.epochs).items()] + parse_sets(args.sets)
    path = args.out / RESULTS
    for mode in modes:
        print(f"=== {mode}: config {args.config}, overrides {overrides}", flush=True)
        record = run_mode(args.config, mode, overrides, args.threads, args.pck_frames)
        results = read_results(path)  # re-read: another process may have written the other mode meanwhile
        results[mode] = record
        with atomic_output(path, suffix="", mode=None) as tmp:
            Path(tmp).write_text(json.dumps(results, indent=1))
        print(f"{mode}: wall time {record['wall_seconds']:.0f} s, process CPU time {record['cpu_seconds']:.0f} s",
              flush=True)
    results = read_results(path)
    for mode, record in results.items():
        cpu = f", CPU {record['cpu_seconds']:.0f} s" if "cpu_seconds" in record else ""
        print(f"\n{mode} (wall {record['wall_seconds']:.0f} s{cpu}, overrides {record['overrides']})")
        print(format_table(record["rows"]))
    plot_curves(results, args.out / PLOT)
    print(f"\nwrote {path} and {args.out / PLOT}")


if __name__ == "__main__":
    main()
