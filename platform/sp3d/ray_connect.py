"""Connect a driver (`sp3d sweep`, `sp3d demo`, `sp3d study`) to Ray, and make a fresh local instance findable.

Ray's own helper actors (Train's placement-group cleaner uses the state API) look the cluster up by
address "auto": with several Ray instances on one machine that lookup picks an arbitrary one unless
``$RAY_TMPDIR/ray/ray_current_cluster`` names ours. So when ``$RAY_TMPDIR`` is set (a private Ray temp dir,
as tests and shared machines use) and a new local instance is started, its address is written there, with
an owner file next to it; the marker is removed at exit, and a stale one of ours (left by a killed driver)
is removed before starting, otherwise `ray.init()` would try to join the dead instance.
"""

from __future__ import annotations

import atexit
import os
import socket
from pathlib import Path

MARKER = "ray_current_cluster"
OWNER = "ray_current_cluster.sp3d"  # same content as MARKER when sp3d wrote it


def _marker() -> Path | None:
    tmp = os.environ.get("RAY_TMPDIR")
    return Path(tmp) / "ray" / MARKER if tmp else None


def _reachable(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def clear_stale_marker(marker: Path) -> bool:
    """Remove ``marker`` (and its owner file) if sp3d wrote it and its GCS no longer answers; True if removed."""
    owner = marker.with_name(OWNER)
    try:
        address = marker.read_text()
        ours = owner.read_text() == address
    except OSError:
        return False
    if not ours or _reachable(address):
        return False
    marker.unlink(missing_ok=True)
    owner.unlink(missing_ok=True)
    return True


def _forget(marker: Path, address: str) -> None:
    for path in (marker, marker.with_name(OWNER)):
        try:
            if path.read_text() == address:
                path.unlink()
        except OSError:
            pass


def connect_ray() -> None:
    """Connect to ``$RAY_ADDRESS`` or start a local Ray (`sp3d.train_loop.ensure_ray`), unless connected;
    with a private ``$RAY_TMPDIR``, record a freshly started instance's address (see module docstring)."""
    import ray

    from sp3d.train_loop import ensure_ray

    if ray.is_initialized():
        return
    marker = None if os.environ.get("RAY_ADDRESS") else _marker()
    if marker is not None:
        clear_stale_marker(marker)
    fresh = marker is not None and not marker.exists()
    ensure_ray()
    if fresh:
        address = ray.get_runtime_context().gcs_address
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(address)
        marker.with_name(OWNER).write_text(address)
        atexit.register(_forget, marker, address)
