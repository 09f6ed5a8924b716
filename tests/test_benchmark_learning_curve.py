"""benchmarks/learning_curve.py: a reused synthetic dataset must match the config's synth settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from learning_curve import BenchmarkError, ensure_dataset, synth_differences  # noqa: E402

from selfpose3d.config import load_config  # noqa: E402
from selfpose3d.data.synthetic import MANIFEST  # noqa: E402
from selfpose3d.data.synthetic.writer import RENDERER_VERSION  # noqa: E402


def test_synth_differences_names_changed_missing_and_unknown_keys() -> None:
    cfg = load_config("tiny")
    written = cfg.synth.model_dump(mode="json")
    assert synth_differences(written, cfg) == []
    assert synth_differences({**written, "sequences": ["other"]}, cfg) == []  # the sequence list is checked apart
    assert synth_differences({**written, "frames": 41}, cfg) == ["synth.frames: 41 vs 40"]
    assert synth_differences({**written, "new_knob": 1}, cfg) == ["synth.new_knob: unknown setting"]
    older = {k: v for k, v in written.items() if k != "outside_dome_prob"}  # missing key -> its default
    assert synth_differences(older, cfg) == []


def test_ensure_dataset_refuses_a_dataset_generated_with_other_settings(tmp_path: Path) -> None:
    cfg = load_config("tiny", {"dataset.root": str(tmp_path)})
    synth = cfg.synth.model_dump(mode="json")
    names = cfg.dataset.train_sequences + cfg.dataset.test_sequences
    manifest = {"synth": {**synth, "max_persons": 2}, "sequences": [{"name": n} for n in names]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BenchmarkError, match="synth.max_persons: 2 vs 3"):
        ensure_dataset(cfg)
    manifest["synth"] = synth
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))  # no renderer_version: written by renderer 1
    with pytest.raises(BenchmarkError, match=f"renderer version 1 vs {RENDERER_VERSION}"):
        ensure_dataset(cfg)
    manifest["renderer_version"] = RENDERER_VERSION
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert ensure_dataset(cfg) == tmp_path
