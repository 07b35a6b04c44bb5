"""`init_ray(cfg.ray)`: join the configured Ray cluster or start one for this command; used by every command
that runs on Ray (generate, train, serve, the toy world, the benchmarks)."""

from __future__ import annotations

import os

import ray

from alarm.config import RayConfig


def init_ray(cfg: RayConfig, *, log_to_driver: bool = False) -> bool:
    """Connect this process to Ray, unless it already is; returns True when it started a local Ray.

    Joins `cfg.address`, else RAY_ADDRESS; with neither, starts a Ray for this process with `cfg.num_cpus`
    logical CPUs, no dashboard unless `cfg.dashboard`, and token authentication off unless RAY_AUTH_MODE says
    otherwise (nothing but this process talks to it).

    Args:
        log_to_driver: print the workers' and actors' output here (training's progress lines come from its
            workers); off by default, as vLLM and Serve replicas log a lot.
    """
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=cfg.dashboard, log_to_driver=log_to_driver)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return not address
