"""vLLM's engine statistics as Ray metrics, for every engine that runs inside Ray (the serving LLM, the corpus
engines): running/waiting requests, KV-cache usage, time to first token, inter-token latency, tokens.

    AsyncLLM.from_engine_args(args, stat_loggers=ray_stat_loggers())

vLLM's `RayPrometheusStatLogger` records them through `ray.util.metrics`, so they leave on each node's metrics
export port beside Ray's and Serve's own, as `ray_vllm_<name>` (vLLM's `vllm:` prefix sanitised), tagged with
`model_name`, `engine` and, inside a Serve replica, `ReplicaId`. A custom logger turns the engine's statistics
on without vLLM's default ones (a log line every 10 s and a second, process-local Prometheus registry).
"""

from __future__ import annotations


def ray_stat_loggers() -> list:
    """The stat logger factories for `AsyncLLM(stat_loggers=...)` in a Ray worker or Serve replica."""
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    return [RayPrometheusStatLogger]
