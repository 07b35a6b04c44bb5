"""The serving metrics our deployments record, in one table: Ray exports each on every node's metrics port as
`ray_<name>` (counters with `_total`, histograms as `_bucket`/`_sum`/`_count`), with Serve's `application`,
`deployment` and `replica` tags added. docs/monitoring.md lists them (a test checks the list is complete).

    m = ServeMetrics.create("alarm_requests", "alarm_request_latency_ms")   # inside a Serve replica
    m["alarm_requests"].inc(tags={"method": "Generate", "code": "OK"})
"""

from __future__ import annotations

from dataclasses import dataclass

MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000]


@dataclass(frozen=True)
class Metric:
    """One metric: its Ray name (without the `ray_` prefix), kind, tag keys, meaning, histogram boundaries."""

    name: str
    kind: str  # counter | gauge | histogram
    tags: tuple[str, ...]
    meaning: str
    boundaries: tuple[float, ...] = ()


METRICS = {m.name: m for m in (
    Metric("alarm_requests", "counter", ("method", "code"),
           "Requests (gRPC and HTTP) by method and final status code (Serve's own request metrics count a failed unary call "
           "as OK: the status travels in the gRPC context)."),
    Metric("alarm_request_latency_ms", "histogram", ("method",),
           "Server-side latency of a request, arrival at the ingress to its last byte, in ms.", tuple(MS[3:])),
    Metric("alarm_requests_in_flight", "gauge", (),
           "Requests an ingress replica has admitted and not yet answered (the queue behind it: encoders, "
           "fusion, LLM)."),
    Metric("alarm_audio_seconds", "counter", (),
           "Seconds of audio decoded by the ingress (requests that carry audio)."),
    Metric("alarm_encoder_batch_size", "histogram", ("encoder",),
           "Clips per encoder forward (@serve.batch): how far concurrent requests are batched.",
           (1, 2, 4, 8, 16, 32, 64)),
    Metric("alarm_encoder_ms", "histogram", ("encoder",),
           "Front-end plus batched forward per clip at an encoder replica, in ms.", tuple(MS)),
    Metric("alarm_fusion_ms", "histogram", ("adapter",),
           "The fusion-compressor (layer mix, adapters, fusion) for one clip and adapter, in ms.", tuple(MS)),
    Metric("alarm_adapter_cache", "counter", ("adapter", "result"),
           "Adapter look-ups at the fusion replicas: result=hit (in memory: the default adapter or one in the "
           "@serve.multiplexed LRU) or miss (loaded from its checkpoint)."),
)}


class ServeMetrics(dict):
    """name -> the `ray.serve.metrics` object, for the metrics one deployment records."""

    @classmethod
    def create(cls, *names: str) -> ServeMetrics:
        from ray.serve import metrics

        out = cls()
        for name in names:
            m = METRICS[name]
            if m.kind == "counter":
                out[name] = metrics.Counter(name, description=m.meaning, tag_keys=m.tags)
            elif m.kind == "gauge":
                out[name] = metrics.Gauge(name, description=m.meaning, tag_keys=m.tags)
            else:
                out[name] = metrics.Histogram(name, description=m.meaning, boundaries=list(m.boundaries),
                                              tag_keys=m.tags)
        return out
