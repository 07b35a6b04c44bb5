"""`init_ray(cfg.ray)`: join the configured Ray cluster or start one for this command; used by every command
that runs on Ray (generate, train, serve, the toy world, the benchmarks). Plus what a job must know about the
cluster it runs on: the resource its GPUs are (`gpu_options`) and whether its local paths reach every node
(`check_shared_paths`)."""

from __future__ import annotations

import json
import os

import ray

from alarm import env, numerics
from alarm.config import RayConfig
from alarm.errors import InvalidInput

# What `python -m alarm.cluster local up` records in the cluster's GCS for drivers that join it from outside
# (a driver submitted with `ray job submit` runs on the head and has it in its environment).
KV_NAMESPACE, KV_KEY = b"alarm", b"cluster"


def init_ray(cfg: RayConfig, *, log_to_driver: bool = False) -> bool:
    """Connect this process to Ray, unless it already is; returns True when it started a local Ray.

    Joins `cfg.address`, else RAY_ADDRESS; with neither, starts a Ray for this process with `cfg.num_cpus`
    logical CPUs, no dashboard unless `cfg.dashboard`, and token authentication off unless RAY_AUTH_MODE says
    otherwise (nothing but this process talks to it). A process in portable numerics (`alarm.numerics`) gives
    its job's workers the same environment variables.

    Args:
        log_to_driver: print the workers' and actors' output here (training's progress lines come from its
            workers); off by default, as vLLM and Serve replicas log a lot.
    """
    if ray.is_initialized():
        return False
    address = _address(cfg)
    # portable numerics reach the job's workers on a cluster started without them, too
    runtime_env = {"env_vars": dict(numerics.PORTABLE)} if numerics.portable() else None
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, runtime_env=runtime_env)
        adopt_cluster_settings(ray.get_runtime_context().gcs_address)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=cfg.dashboard, log_to_driver=log_to_driver,
                 runtime_env=runtime_env)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return not address


def _address(cfg: RayConfig) -> str | None:
    return cfg.address or os.environ.get("RAY_ADDRESS") or None


def cluster_settings(gcs_address: str) -> dict:
    """What a cluster declares about itself in its GCS ({} for clusters we did not start)."""
    from ray._raylet import GcsClient

    value = GcsClient(address=gcs_address).internal_kv_get(KV_KEY, KV_NAMESPACE, timeout=10)
    return json.loads(value) if value else {}


def adopt_cluster_settings(gcs_address: str) -> None:
    """Take the GPU resource and the node count the cluster declares, unless this process's environment already
    says (the cluster's own processes have them in theirs)."""
    settings = cluster_settings(gcs_address)
    for name, key in ((env.GPU_RESOURCE_ENV, "gpu_resource"), (env.CLUSTER_NODES_ENV, "nodes")):
        if key in settings:
            os.environ.setdefault(name, str(settings[key]))


def gpu_options(n: float) -> dict:
    """Ray options that ask for `n` GPUs on this cluster (none for 0): `num_gpus`, or, on a local multi-node
    cluster, the custom resource standing in for GPUs (ALARM_GPU_RESOURCE), so that a config says GPU once."""
    if not n:
        return {}
    name = env.gpu_resource()
    return {"num_gpus": n} if name == "GPU" else {"resources": {name: n}}


def real_gpus() -> bool:
    """False on a cluster whose GPUs are a stand-in resource: the work then runs on CPU, placed as on GPUs."""
    return env.gpu_resource() == "GPU"


def max_nodes(cfg: RayConfig) -> tuple[int, str]:
    """The most nodes the job's cluster can have, and how we know. 1 when the command starts its own Ray; else the
    larger of the nodes alive and what the cluster declares (ALARM_CLUSTER_NODES, or its GCS record), since an
    autoscaling cluster may have only its head when a job starts. Asks GCS directly: no driver is started."""
    if ray.is_initialized():
        gcs = ray.get_runtime_context().gcs_address
    else:
        address = _address(cfg)
        if not address:
            return 1, "a Ray started for this command"
        if address.startswith("ray://"):
            return 2, f"a Ray Client connection to {address}, so the driver is not on this machine"
        import ray._private.services as services

        gcs = services.canonicalize_bootstrap_address_or_die(address)
    from ray._raylet import GcsClient
    from ray.core.generated import gcs_pb2

    nodes = GcsClient(address=gcs).get_all_node_info(timeout=10).values()
    alive = sum(n.state == gcs_pb2.GcsNodeInfo.ALIVE for n in nodes)
    declared = env.cluster_nodes() or int(cluster_settings(gcs).get("nodes", 0))
    if declared > alive:
        return declared, f"{alive} node(s) alive, up to {declared} as it autoscales"
    return alive, f"{alive} nodes alive"


def check_shared_paths(cfg: RayConfig, paths: dict[str, str], shared: bool) -> None:
    """Refuse local paths for a job on a cluster of more than one node, unless declared shared: each node (and
    the driver) would read and write its own disk. `paths`: dotted config key -> path; s3://, tiny://,
    pretrained:// and hub ids are not local.

    Raises:
        InvalidInput: naming the keys, the cluster, and the two ways out.
    """
    from alarm.checkpoints import is_local

    local = {k: v for k, v in paths.items() if v and is_local(v)}
    if shared or not local:
        return
    n, why = max_nodes(cfg)
    if n <= 1:
        return
    keys = ", ".join(f"{k}={v}" for k, v in local.items())
    raise InvalidInput(
        f"{keys}: local path(s), but this job runs on a Ray cluster of more than one node ({why}), where the "
        "driver and each worker see their own disk. Use s3:// (e.g. output=s3://bucket/prefix), or, if the "
        "path is on a filesystem every node mounts at the same place (NFS, a shared volume), declare it with "
        "storage.shared=true."
    )
