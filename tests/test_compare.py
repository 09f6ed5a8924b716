"""`sp3d compare` against a REAL local MLflow store (sqlite + local artifacts) holding a sweep written the
way the sweep runner logs it: a parent run, finished child runs with per-epoch metric histories, plus a
FAILED and a RUNNING child that must be ignored, and an experiment of plain training runs."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import typer
from conftest import use_sqlite_store
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from sp3d import tracking
from sp3d.commands.compare import register
from sp3d.compare import CompareError, load_comparison
from sp3d.compare_report import markdown, write_report
from sp3d.compare_source import check_reachable
from sp3d.procs import free_port
from sp3d.search_space import load_space
from typer.testing import CliRunner

SWEEP = "lambda-demo"
PLAIN = "plain-runs"
EPOCHS = 5
LAMBDAS = [0.001, 0.01, 0.01, 0.1, 1.0]  # 0.01 is run twice (two seeds)
COLUMNS = ("ap25", "ap50", "ap100", "mpjpe")


def _history(rng: np.random.Generator, final_ap50: float, peak_epoch: int) -> dict[str, list[float]]:
    """Per-epoch eval metrics (AP fractions, MPJPE mm) and training loss rising to a peak then flat/declining."""
    ramp = np.minimum(np.arange(EPOCHS), peak_epoch) / max(peak_epoch, 1)
    decay = np.clip(np.arange(EPOCHS) - peak_epoch, 0, None) * 0.04
    ap50 = np.clip(final_ap50 * (0.5 + 0.5 * ramp) - decay + rng.normal(0, 0.005, EPOCHS), 0, 1)
    return {
        "eval/ap25": list(ap50 * 0.35), "eval/ap50": list(ap50), "eval/ap100": list(np.minimum(ap50 * 1.05, 1)),
        "eval/mpjpe": list(60.0 - 30.0 * ap50), "train/total": list(2.0 / (1 + np.arange(EPOCHS)) + rng.random(EPOCHS) * 0.05),
    }


def _log_run(client: MlflowClient, exp: str, name: str, tags: dict[str, str], params: dict[str, object],
             history: dict[str, list[float]], status: str | None) -> str:
    run = client.create_run(exp, run_name=name, tags=tags, start_time=int(time.time() * 1000))
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now + step, step) for k, vals in history.items() for step, v in enumerate(vals)]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    if status is not None:
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _sweep(client: MlflowClient, exp: str, rng: np.random.Generator) -> SimpleNamespace:
    parent = _log_run(client, exp, SWEEP, {"sp3d.kind": "sweep", "sp3d.sweep": SWEEP, "sp3d.space": "lambda",
                                            "sp3d.metric": "ap50", "sp3d.mode": "max"}, {}, {}, None)
    finals = [0.90, 0.95, 0.93, 0.80, 0.45]
    peaks = [4, 4, 2, 4, 1]  # runs 2 and 4 peak early: their best epoch is not the last one
    runs = []
    for i, (lam, final, peak) in enumerate(zip(LAMBDAS, finals, peaks, strict=True)):
        hist = _history(rng, final, peak)
        tags = {"mlflow.parentRunId": parent, "sp3d.kind": "trial", "sp3d.sweep": SWEEP, "sp3d.trial_id": f"t{i}"}
        params = {"loss.joint_lambda": lam, "sweep.loss.joint_lambda": lam, "train.seed": i, "dataset.num_views": 5}
        runs.append(SimpleNamespace(lam=lam, history=hist,
                                    run_id=_log_run(client, exp, f"trial-{i}", tags, params, hist, "FINISHED")))
    junk = {k: [0.0] * EPOCHS for k in ("eval/ap25", "eval/ap50", "eval/ap100")}  # would drag the means down
    for j, status in enumerate(("FAILED", None)):  # None = still RUNNING
        tags = {"mlflow.parentRunId": parent, "sp3d.kind": "trial", "sp3d.sweep": SWEEP, "sp3d.trial_id": f"x{j}"}
        _log_run(client, exp, f"trial-x{j}", tags, {"sweep.loss.joint_lambda": 0.01}, junk, status)
    client.set_terminated(parent, "FINISHED")
    broken = _log_run(client, exp, "broken", {"sp3d.kind": "sweep", "sp3d.sweep": "broken"}, {}, {}, "FAILED")
    _log_run(client, exp, "b0", {"mlflow.parentRunId": broken, "sp3d.kind": "trial"}, {}, junk, "FAILED")
    return SimpleNamespace(parent=parent, runs=runs)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A sqlite MLflow store with the sweep and a plain-runs experiment; env points sp3d at it."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        uri = use_sqlite_store(mp, root)
        tracking.configure()
        client = MlflowClient(tracking_uri=uri)
        rng = np.random.default_rng(0)
        sweep = _sweep(client, tracking.get_or_create_experiment("sp3d-sweeps"), rng)
        plain_exp = tracking.get_or_create_experiment(PLAIN)
        plain = {}
        for views in (3, 4, 5):
            hist = _history(rng, 0.5 + 0.1 * views, EPOCHS - 1)
            params = {"dataset.num_views": views, "train.seed": views * 7, "loss.joint_lambda": 0.01}
            _log_run(client, plain_exp, f"train-v{views}", {"sp3d.kind": "train"}, params, hist, "FINISHED")
            plain[views] = hist
        try:
            yield SimpleNamespace(root=root, uri=uri, client=client, sweep=sweep, plain=plain)
        finally:
            tracking.reset()


def _expected(store: SimpleNamespace, lam: float, metric: str, epoch: int | None = None) -> list[float]:
    scale = 1.0 if metric == "mpjpe" else 100.0
    return [scale * r.history[f"eval/{metric}"][-1 if epoch is None else epoch]
            for r in store.sweep.runs if r.lam == lam]


def test_sweep_rows_are_percent_means_with_paper_columns(store: SimpleNamespace) -> None:
    cmp = load_comparison(SWEEP)
    assert (cmp.kind, cmp.experiment, cmp.by, cmp.metric, cmp.select) == ("sweep", "sp3d-sweeps",
                                                                          ["loss.joint_lambda"], "ap50", "last")
    assert cmp.parent_run_id == store.sweep.parent
    assert cmp.skipped == {"FAILED": 1, "RUNNING": 1}  # ignored, not averaged in
    assert [g.values[0] for g in cmp.groups] == [0.001, 0.01, 0.1, 1.0]
    assert [len(g.trials) for g in cmp.groups] == [1, 2, 1, 1]
    assert tuple(cmp.columns) == COLUMNS
    paper = {row.params["loss.joint_lambda"]: row.metrics for row in load_space("lambda").paper_table()}
    for group in cmp.groups:
        lam = group.values[0]
        for metric in COLUMNS:
            mean, std, n = group.stats(metric)
            want = _expected(store, lam, metric)
            assert mean == pytest.approx(statistics.fmean(want)) and n == len(want)
            assert std == (pytest.approx(statistics.stdev(want)) if len(want) > 1 else None)
        assert group.paper == paper[lam] and group.epochs == [EPOCHS - 1]
    assert cmp.best_group().values == (0.01,)


def test_best_epoch_differs_from_last(store: SimpleNamespace) -> None:
    last = {t.run_id: t for t in load_comparison(SWEEP).trials}
    best = {t.run_id: t for t in load_comparison(SWEEP, best=True).trials}
    changed = 0
    for run in store.sweep.runs:
        ap50 = run.history["eval/ap50"]
        epoch = int(np.argmax(ap50))
        assert last[run.run_id].epoch == EPOCHS - 1
        assert best[run.run_id].epoch == epoch
        assert best[run.run_id].metrics["ap50"] == pytest.approx(ap50[epoch])
        assert best[run.run_id].metrics["mpjpe"] == pytest.approx(run.history["eval/mpjpe"][epoch])
        changed += epoch != EPOCHS - 1
    assert changed >= 2


def test_markdown_and_plots(store: SimpleNamespace, tmp_path: Path) -> None:
    cmp = load_comparison(SWEEP)
    md_path, pngs = write_report(cmp, tmp_path / "out")
    text = md_path.read_text()
    assert md_path == tmp_path / "out" / "compare.md"
    assert "| loss.joint_lambda | n | epoch | AP25 (%) | AP25 paper | AP50 (%) | AP50 paper |" in text
    two = _expected(store, 0.01, "ap50")
    assert f"{statistics.fmean(two):.1f} ± {statistics.stdev(two):.1f}" in text
    assert "| 93.5 |" in text and "| 2.71 |" in text and "| 34.0 |" in text  # paper values, as printed
    assert "**95.1**" in text  # the best row (lambda 0.01 here) is bold, paper cells included
    assert "1 FAILED, 1 RUNNING" in text and "Table 11" in text
    names = sorted(p.name for p in pngs)
    assert names == ["learning_curves.png", "metric_vs_loss.joint_lambda.png", "parallel_coordinates.png"]
    for png in pngs:
        assert f"]({png.name})" in text and png.stat().st_size > 20_000
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and min(image.shape[:2]) > 300 and image.std() > 0.05
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind
    no_paper = markdown(load_comparison(SWEEP, paper=False))
    assert "paper" not in no_paper.split("## Runs")[0].split("| loss")[1]


def test_experiment_groups_by_varying_params(store: SimpleNamespace) -> None:
    cmp = load_comparison(PLAIN)
    assert cmp.kind == "experiment" and cmp.parent_run_id is None
    assert cmp.by == ["dataset.num_views"]  # train.seed also varies but is not a factor
    assert [g.values for g in cmp.groups] == [(3,), (4,), (5,)]
    for group in cmp.groups:
        assert group.stats("ap50")[0] == pytest.approx(100 * store.plain[group.values[0]]["eval/ap50"][-1])
    with_space = load_comparison(PLAIN, space="views")
    assert [g.paper["ap50"] for g in with_space.groups] == [66.1, 89.6, 96.4]
    assert len(with_space.references) == 2


def test_errors_name_what_exists(store: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(CompareError, match=f"unknown sweep or experiment 'nope'.*{SWEEP}.*{PLAIN}"):
        load_comparison("nope")
    with pytest.raises(CompareError, match="unknown experiment 'missing-exp'.*sp3d-sweeps"):
        load_comparison(SWEEP, experiment="missing-exp")
    with pytest.raises(CompareError, match="'broken'.*no finished runs.*1 FAILED"):
        load_comparison("broken")
    with pytest.raises(CompareError, match="--by loss.joint_lamda: not a param.*loss.joint_lambda"):
        load_comparison(SWEEP, by=["loss.joint_lamda"])
    with pytest.raises(CompareError, match="--metric ap_50: unknown metric"):
        load_comparison(SWEEP, metric="ap_50")
    missing_db = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(CompareError, match="MLflow unreachable: no tracking database"):
        load_comparison(SWEEP, tracking_uri=missing_db)
    assert not (tmp_path / "none.db").exists()
    start = time.monotonic()
    with pytest.raises(CompareError, match=r"MLflow unreachable at http://\*\*\*REDACTED\*\*\*@127\.0\.0\.1") as err:
        check_reachable(f"http://user:pw-secret@127.0.0.1:{free_port()}")
    assert "pw-secret" not in str(err.value)
    assert time.monotonic() - start < 5


def test_cli_prints_table_writes_files_and_logs_to_parent(store: SimpleNamespace, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps typer from collapsing the group
    runner = CliRunner()
    out = tmp_path / "report"
    result = runner.invoke(app, ["compare", SWEEP, "--best", "--out", str(out)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "best epoch by ap50" in result.output and "AP50 paper" in result.output
    assert "left out (not finished): 1 FAILED, 1 RUNNING" in result.output
    assert f"markdown: {out / 'compare.md'}" in result.output and "plot: " in result.output
    logged = {a.path for a in store.client.list_artifacts(store.sweep.parent, "compare")}
    assert {"compare/compare.md", "compare/learning_curves.png"} <= logged
    bad = runner.invoke(app, ["compare", "nope"], env={"COLUMNS": "220"})
    assert bad.exit_code == 1 and "error: unknown sweep or experiment 'nope'" in bad.output
