"""Detached service processes: free ports, spawn in a new session, health polling, group shutdown.

Used by `sp3d.stack` and the test fixtures; only ever signals process groups it started (by pid).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HOST = "127.0.0.1"


class ServiceStartError(RuntimeError):
    """A service exited during start-up or did not become healthy in time; names the log file."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 2.0, any_status: bool = False) -> bool:
    """True if GET ``url`` answers 2xx (no proxies); with ``any_status`` any HTTP answer counts (an
    external S3 endpoint answers 403 to anonymous requests)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except urllib.error.HTTPError:
        return any_status
    except (OSError, ValueError):
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def process_alive(pid: int, marker: bytes | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when ``marker`` is given, its command line contains it."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return marker is None
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        if state in ("Z", "X") or (marker is not None and marker not in cmdline):
            return False
    return True


def _group_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_process_groups(pids: list[int], timeout: float = 20.0) -> None:
    """SIGTERM the process groups led by ``pids`` (started with a new session) together, SIGKILL the
    ones still alive after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if _group_alive(pid)]
        for pid in alive:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _group_alive(pid)]
            time.sleep(0.1)


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``cmd`` detached (new session, stdin closed, output appended to ``log``); return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"=== {datetime.now(timezone.utc).isoformat()} {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=log.parent, start_new_session=True,
        )
    return proc.pid


def wait_healthy(name: str, url: str, timeout: float, pid: int | None = None, log: Path | None = None) -> float:
    """Poll ``url`` until it answers 2xx; return the seconds waited. Raises `ServiceStartError` pointing at ``log``
    if the process ``pid`` exits or ``timeout`` seconds pass."""
    start = time.monotonic()
    where = f"; see {log}" if log else ""
    while time.monotonic() - start < timeout:
        if http_ok(url):
            return time.monotonic() - start
        if pid is not None and not process_alive(pid):
            raise ServiceStartError(f"{name} exited during start-up{where}")
        time.sleep(0.25)
    raise ServiceStartError(f"{name} not healthy at {url} after {timeout:.0f} s{where}")
