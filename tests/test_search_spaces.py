"""Search spaces: shipped files, validation errors, Optuna define-by-run, Tune param spaces, overrides."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.samplers import TPESampler
from sp3d.search_space import SearchSpaceError, list_spaces, load_space, metric_value

from selfpose3d.config import load_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

# space -> (swept key, values of the paper table, in the table's order)
PAPER_GRIDS = {
    "lambda": ("loss.joint_lambda", [0.001, 0.01, 0.1, 1.0]),
    "sigma": ("loss.attn_sigma", [0.01, 0.1, 1.0]),
    "attention_backbone": ("model.attn_backbone", ["resnet18", "resnet34", "resnet50", "shared"]),
    "views": ("dataset.num_views", [3, 4, 5]),
    "root_input": ("model.root_input", ["root", "all"]),
    "label_strategy": ("loss.label_strategy", ["soft", "hard", "soft_hard"]),
}

VALID: dict[str, Any] = {
    "name": "bad",
    "description": "test space",
    "base_config": "tiny",
    "metric": "ap50",
    "mode": "max",
    "num_samples": 4,
    "params": {
        "loss.joint_lambda": {"type": "loguniform", "low": 0.001, "high": 1.0},
        "loss.label_strategy": {"type": "choice", "values": ["soft", "hard"]},
        "loss.hard_threshold": {"type": "uniform", "low": 0.5, "high": 0.9,
                                "when": {"loss.label_strategy": {"not": "soft"}}},
    },
}


def _write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _ask(space: Any, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n trials of a seeded TPE study driven by the define-by-run function (told a toy objective)."""
    study = optuna.create_study(sampler=TPESampler(seed=seed, n_startup_trials=5), direction="maximize")
    out = []
    for _ in range(n):
        trial = study.ask()
        space.optuna_define_by_run(trial)
        out.append(dict(trial.params))
        study.tell(trial, -abs(math.log10(trial.params["loss.joint_lambda"]) + 2))
    return out


def test_every_shipped_space_loads_and_validates() -> None:
    assert set(list_spaces()) == set(PAPER_GRIDS) | {"full"}
    for name in list_spaces():
        space = load_space(name)
        assert space.name == name
        assert space.source == f"search_spaces/{name}.yaml"
        assert "Table" in space.description
        assert load_config(space.base_config, space.fixed) is not None
        assert space.modes[0] == space.mode and space.metrics[0] == space.metric


@pytest.mark.parametrize("name", sorted(PAPER_GRIDS))
def test_grid_spaces_have_the_paper_values(name: str) -> None:
    key, values = PAPER_GRIDS[name]
    space = load_space(name)
    assert space.is_grid and not space.is_conditional
    assert space.grid() == [{key: v} for v in values]
    assert space.total_samples == len(values) and space.tune_num_samples == 1
    rows = [r for r in space.paper_table() if r.in_sweep]
    assert [r.params for r in rows] == space.grid()
    assert all(r.metrics for r in rows)
    for point in space.grid():  # every grid point builds a valid config
        cfg = load_config(space.base_config, space.to_overrides(point))
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == point[key]


def test_paper_rows_transcribed() -> None:
    rows = {r.label: r.metrics for r in load_space("sigma").paper_table()}
    assert set(rows["loss.attn_sigma=0.01"].values()) == {None}  # diverged in the paper
    views = load_space("views").paper_table()
    assert [r.in_sweep for r in views] == [True, True, True, False, False]
    assert load_space("root_input").metric == "root_ap50"


def test_define_by_run_respects_conditions() -> None:
    space = load_space("full")
    trials = _ask(space, 30)
    seen = {t["loss.label_strategy"] for t in trials}
    assert seen == {"soft", "hard", "soft_hard"}
    for params in trials:
        strategy = params["loss.label_strategy"]
        assert ("loss.hard_threshold" in params) == (strategy != "soft")
        assert ("loss.hard_last_epochs" in params) == (strategy == "soft_hard")
        if strategy != "soft":
            assert 0.5 <= params["loss.hard_threshold"] <= 0.9
        assert 1e-3 <= params["loss.joint_lambda"] <= 1.0
        cfg = load_config(space.base_config, space.to_overrides(params))
        assert cfg.loss.label_strategy == strategy


def test_seeded_tpe_repeats() -> None:
    space = load_space("full")
    assert _ask(space, 8, seed=0) == _ask(space, 8, seed=0)
    assert _ask(space, 8, seed=0) != _ask(space, 8, seed=1)


def test_define_by_run_returns_fixed_constants() -> None:
    trial = optuna.create_study().ask()
    assert load_space("lambda").optuna_define_by_run(trial) == {"loss.joint_lambda_start_epoch": 0}
    assert set(trial.params) == {"loss.joint_lambda"}
    assert load_space("full").optuna_define_by_run(optuna.create_study().ask()) is None


def test_ray_optuna_search_uses_define_by_run() -> None:
    from ray.tune.search.optuna import OptunaSearch

    space = load_space("full")
    search = OptunaSearch(space=space.optuna_define_by_run, metric=space.metrics, mode=space.modes,
                          sampler=TPESampler(seed=0))
    config = search.suggest("trial_0")
    assert set(space.params) >= set(config) >= {"loss.joint_lambda", "loss.label_strategy"}
    assert space.to_overrides(config)["loss.label_strategy"] == config["loss.label_strategy"]


def test_tune_param_space_grid() -> None:
    space = load_space("lambda")
    param_space = space.tune_param_space()
    assert param_space["loss.joint_lambda"] == {"grid_search": [0.001, 0.01, 0.1, 1.0]}
    assert param_space["loss.joint_lambda_start_epoch"] == 0
    assert len(load_space("attention_backbone").tune_param_space()["model.attn_backbone"]["grid_search"]) == 4


def test_tune_param_space_sampled_and_conditional(tmp_path: Path) -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    with pytest.raises(SearchSpaceError, match=r"full\.yaml: params\.loss\.hard_threshold\.when: .*Optuna"):
        load_space("full").tune_param_space()
    data = copy.deepcopy(VALID)
    del data["params"]["loss.hard_threshold"]
    data["params"]["loss.hard_last_epochs"] = {"type": "int", "low": 1, "high": 3}
    param_space = load_space(_write(tmp_path, data)).tune_param_space()
    assert isinstance(param_space["loss.label_strategy"], Categorical)
    lam = param_space["loss.joint_lambda"]
    assert isinstance(lam, Float) and (lam.lower, lam.upper) == (0.001, 1.0)
    epochs = param_space["loss.hard_last_epochs"]
    assert isinstance(epochs, Integer) and {epochs.sample() for _ in range(200)} == {1, 2, 3}


def test_to_overrides_rejects_bad_trials() -> None:
    space = load_space("full")
    good = {"loss.joint_lambda": 0.01, "loss.attn_sigma": 0.1, "model.attn_backbone": "resnet18",
            "loss.label_strategy": "soft"}
    assert space.to_overrides(good) == good
    nested = {"loss": {"joint_lambda": 0.01, "attn_sigma": 0.1, "label_strategy": "soft"},
              "model": {"attn_backbone": "resnet18"}}
    assert space.to_overrides(nested) == good
    for bad, msg in [
        ({**good, "loss.hard_threshold": 0.7}, "params.loss.hard_threshold: given but its `when` is false"),
        ({**good, "loss.label_strategy": "hard"}, "params.loss.hard_threshold: missing"),
        ({**good, "loss.joint_lambda": 2.0}, "outside the space"),
        ({**good, "train.seed": 1}, "train.seed: not a parameter"),
    ]:
        with pytest.raises(SearchSpaceError, match=msg):
            space.to_overrides(bad)
    with pytest.raises(SearchSpaceError, match="fixed.loss.joint_lambda_start_epoch"):
        load_space("lambda").to_overrides({"loss.joint_lambda": 0.1, "loss.joint_lambda_start_epoch": 3})


def _mutate(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


BAD_CASES = [
    (_mutate(("params", "loss.joint_lamda"), {"type": "uniform", "low": 0, "high": 1}),
     "params.loss.joint_lamda: unknown config key (did you mean loss.joint_lambda?)"),
    (_mutate(("params", "loss.joint_lambda", "low"), 0.0), "params.loss.joint_lambda.low: must be > 0 for loguniform"),
    (_mutate(("params", "loss.hard_threshold", "low"), 0.9), "params.loss.hard_threshold.high: must be > low (0.9)"),
    (_mutate(("params", "loss.joint_lambda", "when"), {"loss.label_strategy": "hard"}),
     "params.loss.joint_lambda.when.loss.label_strategy: refers to a parameter defined at or after"),
    (_mutate(("params", "loss.hard_threshold", "when"), {"loss.nope": "hard"}),
     "params.loss.hard_threshold.when.loss.nope: unknown parameter"),
    (_mutate(("params", "loss.hard_threshold", "when"), {"loss.label_strategy": "soft_hard"}),
     "params.loss.hard_threshold.when.loss.label_strategy: ['soft_hard'] not among"),
    (_mutate(("params", "model.attn_backbone"), {"type": "choice", "values": ["resnet18", "resnet101"]}),
     "params.model.attn_backbone.values[1]: 'resnet101' rejected by config tiny"),
    (_mutate(("params", "dataset.num_views"), {"type": "uniform", "low": 3, "high": 5}),
     "params.dataset.num_views.type: config field dataset.num_views is an integer"),
    (_mutate(("params", "loss"), {"type": "uniform", "low": 0, "high": 1}), "params.loss: is a config section"),
    (_mutate(("params", "loss.joint_lambda", "type"), "normal"), "params.loss.joint_lambda: Input tag 'normal'"),
    (_mutate(("params", "loss.joint_lambda", "step"), 0.1), "params.loss.joint_lambda.step: Extra inputs"),
    (_mutate(("metric",), KeyError), "bad.yaml: metric: required field is missing"),
    (_mutate(("num_samples",), KeyError), "num_samples: required for sampled"),
    (_mutate(("mode",), "min"), "mode: metric ap50 improves toward max"),
    (_mutate(("metric",), "ap@50"), "metric: unknown metric 'ap@50'"),
    (_mutate(("fixed",), {"loss.bogus": 1}), "fixed.loss.bogus: unknown config key"),
    (_mutate(("fixed",), {"loss.joint_lambda": 0.1}), "fixed.loss.joint_lambda: is also a searched parameter"),
    (_mutate(("fixed",), {"loss.joint_lambda_start_epoch": -1}), "fixed: rejected by config tiny"),
    (_mutate(("base_config",), "nope.yaml"), "base_config: cannot load 'nope.yaml'"),
    (_mutate(("params", "loss.label_strategy", "grid"), True), "params.loss.joint_lambda: space mixes grid"),
    (_mutate(("paper",), {"table": 16, "param": "loss.label_strategy", "rows": {"bogus": {"ap50": 1.0}}}),
     "paper.rows.bogus: not one of loss.label_strategy's values"),
]


@pytest.mark.parametrize("data,message", BAD_CASES, ids=[m.split(":")[0] for _, m in BAD_CASES])
def test_bad_space_names_the_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchSpaceError) as info:
        load_space(_write(tmp_path, data))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "bad.yaml") + ": ")
    assert message in text


def test_bad_grid_sizes_and_yaml(tmp_path: Path) -> None:
    grid = {**VALID, "num_samples": 3,
            "params": {"loss.label_strategy": {"type": "choice", "values": ["soft", "hard"], "grid": True}}}
    with pytest.raises(SearchSpaceError, match="num_samples: 3 is not a multiple of the grid size 2"):
        load_space(_write(tmp_path, grid))
    grid["num_samples"] = 4
    assert load_space(_write(tmp_path, grid)).tune_num_samples == 2
    with pytest.raises(SearchSpaceError, match=r"bad\.yaml: not valid YAML"):
        load_space(_write(tmp_path, "name: x\nparams: {loss.joint_lambda: [1, 2\n"))
    with pytest.raises(SearchSpaceError, match=r"unknown search space 'nope' \(available: .*lambda"):
        load_space("nope")


def test_conditional_grid_expands_only_active_branches(tmp_path: Path) -> None:
    data = {**VALID, "num_samples": None, "params": {
        "loss.label_strategy": {"type": "choice", "values": ["soft", "hard"], "grid": True},
        "loss.hard_threshold": {"type": "choice", "values": [0.6, 0.8], "grid": True,
                                "when": {"loss.label_strategy": ["hard"]}}}}
    space = load_space(_write(tmp_path, data))
    assert space.grid() == [{"loss.label_strategy": "soft"},
                            {"loss.label_strategy": "hard", "loss.hard_threshold": 0.6},
                            {"loss.label_strategy": "hard", "loss.hard_threshold": 0.8}]
    assert space.total_samples == 3


def test_base_config_override_revalidates(tmp_path: Path) -> None:
    cfg = tmp_path / "three_cams.yaml"
    cfg.write_text("base: tiny\ndataset: {camera_nodes: [3, 6, 12], num_views: 3}\n")
    with pytest.raises(SearchSpaceError, match=r"params\.dataset\.num_views\.values\[1\]: 4 rejected"):
        load_space("views", base_config=cfg)
    assert load_space("lambda", base_config=cfg).base_config == str(cfg)


def test_space_pickles_for_ray_checkpoints() -> None:
    space = load_space("full")
    clone = pickle.loads(pickle.dumps(space))
    assert clone == space and clone.source == space.source


def test_metric_value_finds_evaluation_spellings() -> None:
    assert metric_value({"ap50": 0.9, "ap25": 0.1}, "ap50") == 0.9
    assert metric_value({"eval/ap50": 0.8}, "ap50") == 0.8
    assert metric_value({"root_ap50": 0.3}, "root_ap50") == 0.3
    assert metric_value({"ap25": 1.0}, "ap50") is None


def test_docs_example_is_a_valid_space(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "search_spaces.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    space = load_space(_write(tmp_path, example))
    assert space.is_conditional and space.metrics == ["ap50", "train_seconds"]
    assert [r.in_sweep for r in space.paper_table()] == [True, False]
