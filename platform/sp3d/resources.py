"""CPU shares for Ray Train workers that really fit on the cluster's nodes.

A worker's CPUs must come from ONE node, so "total CPUs / workers" is wrong on a cluster: two nodes of
1 CPU each, with 0.02 CPU taken by sweep trial drivers on the first, cannot hold two workers of 0.99 CPU.
`cpu_share` finds the largest share that fits node by node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_SHARE = 0.01  # Ray resolves fractional CPUs to 1/10000; 0.01 keeps shares readable


def _fits(node_cpus: Sequence[float], share: float) -> int:
    """How many workers of ``share`` CPUs fit on nodes with ``node_cpus`` free CPUs."""
    return sum(math.floor(c / share + 1e-9) for c in node_cpus if c > 0)


def cpu_share(node_cpus: Sequence[float], workers: int) -> float:
    """Largest CPUs per worker, a multiple of 0.01 in [0.01, 1], such that ``workers`` workers fit on
    nodes whose free CPUs are ``node_cpus`` (each worker on a single node); 0.01 when nothing fits better.

    >>> cpu_share([0.98, 1.0], 2), cpu_share([4.0], 2), cpu_share([1.0], 3)
    (0.98, 1.0, 0.33)
    """
    best = MIN_SHARE
    for cpus in node_cpus:
        for k in range(1, workers + 1):
            share = min(1.0, math.floor(100 * cpus / k + 1e-6) / 100)
            if share > best and _fits(node_cpus, share) >= workers:
                best = share
    return best


def node_cpus(reserved: float = 0.0, driver_resource: str | None = None) -> list[float]:
    """CPUs of the alive Ray nodes (Ray must be connected), minus ``reserved`` CPUs on every node that
    may host the drivers: the nodes with ``driver_resource`` if the cluster has any, else every node."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    drivers_anywhere = not any(driver_resource and r.get(driver_resource) for r in nodes)
    return [float(r.get("CPU", 0.0)) - (reserved if drivers_anywhere or r.get(driver_resource) else 0.0)
            for r in nodes]
