"""Atomic file output: readers never see a half-written checkpoint, report, state or profile file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp", mode: int | None = 0o644) -> Iterator[str]:
    """Yield a temp file name in ``path``'s folder (created if missing); when the block succeeds the file
    gets ``mode`` (None keeps mkstemp's 0600) and replaces ``path`` (os.replace); on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
