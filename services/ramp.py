"""The serving drill on a local multi-node cluster (services.cluster): the application deployed with per-deployment
autoscaling, a load ramp up and down (services.serve.load), and the node of an LLM replica lost at the peak. It
records on one timeline what an operator watches: offered load, latency, replicas per deployment, nodes, health,
requests by status. bench/scale.py draws it; tests/integration/test_multinode.py checks its invariants.

    load = ramp(cluster, serve_config(max_replicas=2), timeline, ramp=(1, 3, 6), hold_s=15)
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from pathlib import Path

from alarm.config import ServeConfig, load_config
from alarm.env import CLUSTER_NODES_ENV, GPU_RESOURCE_ENV
from services.cluster import ClusterError, LocalCluster, nodes, wait_for
from services.drills import Sampler, Timeline, actor_nodes, kill_when, since, worker_nodes
from services.drills import figures as drill_figures
from services.serve.load import Load

ROOT = Path(__file__).resolve().parents[1]
GRPC_PORT, HTTP_PORT = 9104, 8104
SCALED = ("ingress", "fusion", "llm")  # the deployments' specs (with deployments.colocate, `fusion` is the audio's)


def serve_config(max_replicas: int = 2, *overrides: str) -> ServeConfig:
    """The tiny application sized for a 2-core machine: the encoders and the fusion in one `audio` deployment,
    each LLM replica on a GPU of its own (the cluster's stand-in), every deployment autoscaled from 1 replica to
    `max_replicas` within seconds rather than minutes."""
    scaling = [f"deployments.{d}.autoscaling.{k}={v}" for d in SCALED for k, v in (
        ("min_replicas", 1), ("max_replicas", max_replicas), ("upscale_delay_s", 2), ("downscale_delay_s", 10))]
    # one request in flight per LLM replica is its target: a few clients are enough to ask for a second one
    return load_config(ServeConfig, "tiny", ["deployments.colocate=true", "deployments.llm.num_gpus=1",
                                             "deployments.llm.autoscaling.target_ongoing_requests=1",
                                             "request_timeout_s=60", *scaling, *overrides], section="serve")


def deploy(cluster: LocalCluster, cfg: ServeConfig) -> None:
    """Deploy the application from this process, joined to the cluster as a driver (the replicas inherit its
    PYTHONPATH). Serve's proxy runs on the head only: every local node shares this machine's ports, and the head
    is never the node that is lost (on KubeRay each pod has its own proxy behind the Service)."""
    import ray
    from ray import serve
    from ray.serve.api import _run
    from ray.serve.config import gRPCOptions

    from services.connect import adopt_cluster_settings
    from services.serve.app import GRPC_SERVICERS, build_app

    os.environ.setdefault("RAY_AUTH_MODE", cluster.ray_env("")["RAY_AUTH_MODE"])  # as the cluster was started
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    adopt_cluster_settings(cluster.address)  # build_app asks for the cluster's GPU stand-in
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": HTTP_PORT},
                grpc_options=gRPCOptions(port=GRPC_PORT, grpc_servicer_functions=GRPC_SERVICERS,
                                         request_timeout_s=cfg.request_timeout_s))
    _run(build_app(cfg), name=cfg.name, route_prefix="/", _blocking=False)


def undeploy(environ: dict[str, str | None]) -> None:
    """Delete the application, leave the cluster, and put back the variables that joining it set (`environ`:
    their values before, None = unset)."""
    import ray
    from ray import serve

    try:
        if ray.is_initialized():
            serve.shutdown()
    finally:
        ray.shutdown()
        for name, value in environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def replicas(app: str) -> dict[str, int]:
    """Running replicas per deployment, as Serve's controller counts them."""
    import ray
    from ray import serve

    if not ray.is_initialized():  # serve.status() would start a Ray of its own
        return {}
    deployments = serve.status().applications[app].deployments
    return {name: sum(n for state, n in d.replica_states.items() if getattr(state, "value", state) == "RUNNING")
            for name, d in deployments.items()}


def serving(client) -> int:
    """1 while the readiness check answers SERVING, else 0."""
    try:
        return int(client.health(timeout_s=2) == "SERVING")
    except Exception:
        return 0


def settled(cluster: LocalCluster, app: str, deployment: str) -> bool:
    """Every live replica actor of `deployment` is one Serve counts as RUNNING: none is still stopping after a
    downscale (killing the node of a stopping replica would lose nothing; the drill saw 'recovered' in 4 s)."""
    return len(actor_nodes(cluster, f"ServeReplica:{app}:{deployment}")) == replicas(app).get(deployment, 0)


def back(cluster: LocalCluster, app: str, deployment: str, lost: str, n: int, probe) -> bool:
    """After node `lost` went: no live replica of `deployment` is counted on it any more, `n` replicas run again
    and readiness says SERVING. (Serve counts a replica on a killed node as RUNNING until it notices the loss, so
    the count alone would be back at once.)"""
    return (lost not in actor_nodes(cluster, f"ServeReplica:{app}:{deployment}")
            and replicas(app).get(deployment, 0) >= n and bool(serving(probe)))


def busiest_llm_node(cluster: LocalCluster, app: str):
    """A picker for kill_when: of the nodes holding an LLM replica, the one holding the most of the application's
    replicas (losing it costs the most)."""

    def pick(llm_nodes: list[str]) -> str | None:
        every = Counter(actor_nodes(cluster, f"ServeReplica:{app}:"))  # replicas per node
        return max(llm_nodes, key=lambda n: every[n], default=None)

    return pick


def audio_node(cluster: LocalCluster, app: str):
    """A picker for kill_when: of the nodes holding an `audio` replica, one that holds no LLM replica if there is
    one (so the loss is the encoders' alone), else the first."""

    def pick(audio_nodes: list[str]) -> str | None:
        llm = set(actor_nodes(cluster, f"ServeReplica:{app}:llm"))
        return next((n for n in audio_nodes if n not in llm), next(iter(audio_nodes), None))

    return pick


def ramp(cluster: LocalCluster, cfg: ServeConfig, timeline: Timeline, ramp: tuple[int, ...] = (1, 3, 6),
         hold_s: float = 15, max_requests: int = 5000, max_s: float = 1500) -> Load:
    """Deploy, ramp the clients up through `ramp` (each step held `hold_s`), wait at the peak for the LLM's
    replicas at their maximum, lose the node of an LLM replica, wait for readiness and the LLM replicas to come
    back, lose the node of an encoders' replica and wait for them likewise, ramp down, and wait until the replicas are back at their minimum and no worker node is idle. Events: submit
    (the deploy), serving, clients <n>, node killed, recovered, encoder node killed, encoders recovered, load end, scaled down, undeployed; every wait is
    bounded, and one that runs out ends the drill with the event `gave up` (its reason) instead of an error."""
    from services.serve.client import AlarmClient

    app, top = cfg.name, cfg.deployments.llm.autoscaling.max_replicas
    environ = {k: os.environ.get(k) for k in (GPU_RESOURCE_ENV, CLUSTER_NODES_ENV, "RAY_AUTH_MODE")}
    probe = AlarmClient(f"127.0.0.1:{GRPC_PORT}")
    load = Load(f"127.0.0.1:{GRPC_PORT}", max_clients=max(ramp), max_requests=max_requests, max_s=max_s,
                retries=6, timeout_s=90, clock=timeline.now)
    probes = {"load": lambda: load.rate(5), "clients": lambda: load.clients,
              "latency/p50": lambda: load.latency(0.5, 10), "latency/p95": lambda: load.latency(0.95, 10),
              "replicas/": lambda: replicas(app), "serving": lambda: serving(probe), "errors/": load.errors,
              "progress/ok": lambda: sum(n for k, n in load.counts().items() if k.startswith("OK"))}
    try:
        with Sampler(timeline, cluster.address, probes):
            timeline.event("submit", app=app)
            deploy(cluster, cfg)
            wait_for(lambda: serving(probe), 600, "the application to turn SERVING", every_s=1.0)
            timeline.event("serving")
            base = replicas(app)
            with load:
                _ramp_and_kill(cluster, app, top, load, probe, timeline, ramp, hold_s)
            # at the minimum: the replicas as when first SERVING, and no worker node without a replica left
            wait_for(lambda: replicas(app) == base and _workers(cluster) <= len(_replica_nodes(cluster, app)),
                     cfg.deployments.llm.autoscaling.downscale_delay_s + 60 * cluster.config["idle_timeout_minutes"]
                     + 240, "the replicas and the nodes back at their minimum", every_s=1.0)
            timeline.event("scaled down")
    except ClusterError as e:  # a bounded wait ran out: the timeline so far is the finding
        timeline.event("gave up", reason=str(e))
    finally:
        probe.close()
        undeploy(environ)
    timeline.event("undeployed")
    return load


def _ramp_and_kill(cluster: LocalCluster, app: str, top: int, load: Load, probe, timeline: Timeline,
                   ramp: tuple[int, ...], hold_s: float) -> None:
    for n in ramp:
        load.clients = n
        timeline.event(f"clients {n}")
        time.sleep(hold_s)
    wait_for(lambda: replicas(app).get("llm", 0) >= top, 300, f"{top} LLM replicas", every_s=1.0)
    time.sleep(5)
    node = kill_when(cluster, timeline, lambda: settled(cluster, app, "llm"), f"ServeReplica:{app}:llm",
                     pick=busiest_llm_node(cluster, app))
    wait_for(lambda: back(cluster, app, "llm", node, top, probe), 300,
             "readiness and the LLM replicas to come back", every_s=1.0)
    timeline.event("recovered")
    time.sleep(hold_s)
    # then the node of the encoders' replica (`audio`: the encoders and the fusion), one without an LLM if any
    audio = replicas(app).get("audio", 0)
    node = kill_when(cluster, timeline, lambda: settled(cluster, app, "audio"), f"ServeReplica:{app}:audio",
                     pick=audio_node(cluster, app), label="encoder node killed")
    wait_for(lambda: back(cluster, app, "audio", node, audio, probe), 300,
             "readiness and the encoders' replicas to come back", every_s=1.0)
    timeline.event("encoders recovered")
    time.sleep(hold_s)
    for n in reversed(ramp[:-1]):
        load.clients = n
        timeline.event(f"clients {n}")
        time.sleep(hold_s)
    load.clients = 0
    timeline.event("load end")


def figures(timeline: Timeline, load: Load, margin_s: float = 30) -> dict:
    """The drill's figures, in seconds from the event that starts each: the deploy to the first worker node and
    the first OK answer; the peak's start to every LLM replica running; the LLM node's kill to a replacement node,
    to the LLM replicas back and to readiness SERVING again (0: it never left); the encoder node's kill to
    readiness SERVING again and to its replicas back (`encoder_*`); the load's end to the replicas and nodes at
    their minimum. Plus latency and every request by status (`requests`), and the UNAVAILABLE answers that ended
    outside both [kill, recovered + margin_s] windows (0 expected)."""
    out = drill_figures(timeline, "progress/ok", "replicas/llm")
    peak = timeline.at(f"clients {load.max_clients}")
    top = max((v for _, v in timeline.series.get("replicas/llm", [])), default=None)
    if peak is not None and top is not None:
        out["replicas_up_s"] = since(peak, timeline.first("replicas/llm", lambda v: v >= top, peak))
    windows = []
    for prefix, killed, back in (("", "node killed", "recovered"),
                                 ("encoder_", "encoder node killed", "encoders recovered")):
        if (kill := timeline.at(killed)) is None:
            continue
        end = timeline.at(back)
        windows.append((kill, (end if end is not None else timeline.now()) + margin_s))
        down = timeline.first("serving", lambda v: not v, kill)
        if down is not None and end is not None and down > end:  # a later dip is not this kill's
            down = None
        up = timeline.first("serving", bool, down) if down is not None else kill
        out[f"{prefix}serving_again_s"] = since(kill, up)
        if prefix:
            out["encoder_recovered_s"] = since(kill, end)
        elif out.get("recovered_s") is None and end is not None:
            # the replicas' series showed no dip (the replica came back between two samples): the drill's own
            # `recovered` event, once readiness and every LLM replica were back, bounds it
            out["recovered_s"] = since(kill, end)
    for label, a, b in (("scale_down_s", "load end", "scaled down"), ("drained_s", "undeployed", "no worker node")):
        if (t0 := timeline.at(a)) is not None:
            out[label] = since(t0, timeline.at(b))
    ok = sorted(o.end - o.start for o in load.outcomes if o.code == "OK")
    times = {t for k, v in timeline.series.items() if k.startswith("nodes/") for t, _ in v}
    out |= {"p50_s": _q(ok, 0.5), "p95_s": _q(ok, 0.95),
            "peak_worker_nodes": max((worker_nodes(timeline, t) for t in times), default=0)}
    out["unavailable_outside_kill"] = sum(o.code == "UNAVAILABLE" and not any(a <= o.end <= b for a, b in windows)
                                          for o in load.outcomes)
    out["requests"] = {"sent": load.sent, "ended": len(load.outcomes), **dict(sorted(load.counts().items()))}
    return out


def _q(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile of sorted values."""
    return round(values[max(0, math.ceil(q * len(values)) - 1)], 2) if values else None


def _replica_nodes(cluster: LocalCluster, app: str) -> set[str]:
    return set(actor_nodes(cluster, f"ServeReplica:{app}:"))


def _workers(cluster: LocalCluster) -> int:
    return nodes(cluster.address).workers()
