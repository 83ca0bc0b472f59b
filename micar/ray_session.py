"""One way to start or join Ray for every command (prepare, train, demo)."""

from __future__ import annotations

import math
import os


def ensure_ray(address: str | None = None, *, min_cpus: float = 0) -> None:
    """Join ``address`` / ``$RAY_ADDRESS``, or start a local Ray with at least ``min_cpus`` logical CPUs.

    Does nothing when Ray is already initialised. A local Ray gets more logical CPUs than cores
    when asked (room for Ray Data's read/decode tasks next to the training workers) and keeps its
    dashboard on 127.0.0.1: Ray Train's placement-group cleaner polls the state API it serves
    (without it, it logs a warning every few seconds), and it is never on a public address.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(
        num_cpus=int(max(os.cpu_count() or 1, math.ceil(min_cpus))),
        dashboard_host="127.0.0.1",
    )
