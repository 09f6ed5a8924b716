"""Shared fixtures: isolate HOME / temp dirs, quiet telemetry, a tiny config, one synthetic dataset per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="sp3d-tests-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    """A temp dir shared by the whole test session."""
    return _SESSION_TMP
