"""A rendered KubeRay cluster run on this machine: every worker pod a Ray node that the real Ray autoscaler (v2)
starts and stops, through Ray's fake multi-node provider (the setup of `ray.cluster_utils.AutoscalingCluster`).

    cluster = LocalCluster.from_ray_cluster(ray_cluster_manifest, cfg.local, env=cfg.env)
    cluster.up()                  # the head; worker nodes come and go with the demand
    kill_node(node_id)            # lose a worker node the way a machine is lost
    LocalCluster.down()           # `ray stop --force`: every Ray process on this machine

The node types are what KubeRay's in-tree autoscaler reads from the same manifest (Ray's own translation of a
RayCluster spec), adapted to one machine by `local_resources`: logical CPUs scaled by one factor, GPUs replaced by a
custom resource of the same count, memory left to Ray. A fake node is a raylet with its agents and workers on this
machine, started by the autoscaler's process; all nodes share this machine's disk.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alarm.config.cluster import LocalConfig
from alarm.env import CLUSTER_NODES_ENV, GPU_RESOURCE_ENV
from alarm.errors import AlarmError
from alarm.files import atomic_write
from services.connect import KV_KEY, KV_NAMESPACE

# Ray's fake provider (with a runtime-env folder per node: services.local_provider), loaded as an "external"
# provider: the `fake_multinode` type also reads a defaults file (fake_multi_node/example.yaml) that the Ray 2.60
# wheel does not ship.
PROVIDER_MODULE = "services.local_provider.LocalNodeProvider"
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # set on every process of a fake node (the node's id)
LOCAL_KEY = "alarm_local"  # our notes in the config (the scaling factor, the pods' own resources); not written out


class ClusterError(AlarmError):
    """The local cluster cannot start or be reached."""


def cpu_factor(node_types: dict, max_node_cpus: int) -> float:
    """One factor for every node type's logical CPUs: the largest worker node gets at most `max_node_cpus`."""
    largest = max((t["resources"].get("CPU", 0) for t in node_types.values() if t.get("max_workers")), default=0)
    return min(1.0, max_node_cpus / largest) if largest else 1.0


def local_resources(resources: dict, factor: float, gpu_resource: str, object_store_bytes: int) -> dict:
    """A pod's Ray resources on a local node: CPUs scaled (a pod with CPUs keeps at least one), every GPU as one
    `gpu_resource`, custom resources as they are, `memory` dropped (each fake node reports this machine's)."""
    out = {"CPU": max(1, math.floor(resources["CPU"] * factor)) if resources.get("CPU") else 0}
    if resources.get("GPU"):
        out[gpu_resource] = resources["GPU"]
    out |= {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory")}
    return out | {"object_store_memory": object_store_bytes}


def autoscaling_config(ray_cluster: dict, local: LocalConfig) -> dict:
    """The autoscaler config of a RayCluster manifest (`kind: RayCluster`, as rendered) on this machine."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FAKE_HEAD_NODE_TYPE
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.util import validate_config

    cfg = _derive_autoscaling_config_from_ray_cr(ray_cluster)  # what KubeRay's autoscaler runs on
    types = cfg["available_node_types"]
    factor = cpu_factor(types, local.max_node_cpus)
    store = local.object_store_mib * 2**20
    head = types.pop(cfg["head_node_type"])
    local_types = {FAKE_HEAD_NODE_TYPE: {**head, "resources": local_resources(head["resources"], factor,
                                                                               local.gpu_resource, store)}}
    for name, t in types.items():
        local_types[name] = {**t, "resources": local_resources(t["resources"], factor, local.gpu_resource, store)}
    cfg |= {
        "provider": {"type": "external", "module": PROVIDER_MODULE, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "launch_multiple": True, "head_node_id": FAKE_HEAD_NODE_ID},
        "head_node_type": FAKE_HEAD_NODE_TYPE,
        "available_node_types": local_types,
    }
    validate_config(cfg)
    pods = {FAKE_HEAD_NODE_TYPE: head["resources"], **{k: t["resources"] for k, t in types.items()}}
    return cfg | {LOCAL_KEY: {"cpu_factor": factor, "pods": pods}}


@dataclass
class LocalCluster:
    """A head node started with `ray start --head` and an autoscaler that adds and removes fake worker nodes."""

    config: dict  # from autoscaling_config
    gpu_resource: str = "fake_gpu"
    port: int = 6379
    dashboard_port: int = 8265
    env: dict[str, str] = field(default_factory=dict)  # for every process of every node

    @classmethod
    def from_ray_cluster(cls, ray_cluster: dict, local: LocalConfig, env: dict[str, str] | None = None):
        return cls(autoscaling_config(ray_cluster, local), local.gpu_resource, local.port, local.dashboard_port,
                   dict(env or {}))

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def address(self) -> str:
        import ray._private.services as services

        return f"{services.get_node_ip_address()}:{self.port}"

    def worker_types(self) -> dict[str, dict]:
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_TYPE

        return {k: v for k, v in self.config["available_node_types"].items() if k != FAKE_HEAD_NODE_TYPE}

    def up(self, timeout_s: float = 120) -> float:
        """Start the head (the autoscaler starts the workers) and wait until jobs can be submitted; returns the
        seconds it took. Refuses to start next to another Ray on this machine, which `down` would stop too."""
        from ray.autoscaler._private.fake_multi_node.node_provider import (
            FAKE_HEAD_NODE_ID,
            FAKE_HEAD_NODE_TYPE,
        )

        if running := running_ray():
            raise ClusterError(f"a Ray cluster already runs on this machine (GCS {', '.join(running)}); stop it "
                               "first (`python -m alarm.cluster local down` stops every Ray here, as `ray stop` does)")
        t0 = time.perf_counter()
        path = Path(tempfile.gettempdir()) / "alarm-local-cluster" / f"{self.config['cluster_name']}.json"
        atomic_write(path, json.dumps({k: v for k, v in self.config.items() if k != LOCAL_KEY}, indent=1))
        head = dict(self.config["available_node_types"][FAKE_HEAD_NODE_TYPE]["resources"])
        cmd = ["ray", "start", "--head", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}",
               "--include-dashboard=true", f"--autoscaling-config={path}", f"--num-cpus={head.pop('CPU')}",
               f"--object-store-memory={head.pop('object_store_memory')}", "--disable-usage-stats"]
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        env = {**os.environ, **self.env, **self.ray_env(FAKE_HEAD_NODE_ID)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode:
            raise ClusterError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
        wait_for(self.jobs_ready, timeout_s, f"the job API at {self.dashboard_url}")
        self._publish()
        return time.perf_counter() - t0

    def ray_env(self, head_id: str) -> dict[str, str]:
        """What `AutoscalingCluster.start(autoscaler_v2=True)` sets, and the GPU stand-in for our configs."""
        return {"RAY_FAKE_CLUSTER": "1", "RAY_enable_autoscaler_v2": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                "RAY_CLOUD_INSTANCE_ID": head_id, NODE_ID_ENV: head_id, GPU_RESOURCE_ENV: self.gpu_resource,
                CLUSTER_NODES_ENV: str(self.settings()["nodes"]),
                "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}

    def jobs_ready(self) -> bool:
        """The job API answers and the head's agent, which runs submitted jobs, has registered."""
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/api/v0/nodes?limit=1", timeout=2) as r:
                return r.status == 200 and json.loads(r.read()).get("result") is not False
        except OSError:
            return False

    def settings(self) -> dict:
        """What the cluster declares to the jobs on it (services.connect reads it): the GPU stand-in, and the most
        nodes it can have, so that jobs refuse local paths even while only the head runs."""
        return {"gpu_resource": self.gpu_resource, "nodes": 1 + self.config["max_workers"]}

    def _publish(self) -> None:
        """The settings, in the cluster's GCS, for drivers that join it from outside (a submitted job's driver
        has them in its environment)."""
        from ray._raylet import GcsClient

        GcsClient(address=self.address).internal_kv_put(KV_KEY, json.dumps(self.settings()).encode(), True,
                                                         KV_NAMESPACE, timeout=10)

    def describe(self, what: str, seconds: float, job: list[str]) -> str:
        """What runs, how it maps the pods, and how to use it (`job`: a command to submit)."""
        import shlex

        cfg, notes = self.config, self.config[LOCAL_KEY]
        lines = [f"local cluster {cfg['cluster_name']} ({what}): head up in {seconds:.1f} s at {self.address}"]
        for name, t in cfg["available_node_types"].items():
            res = {k: v for k, v in t["resources"].items() if k != "object_store_memory"}
            pod = notes["pods"][name]
            bounds = "" if not t.get("max_workers") else f", {t['min_workers']}..{t['max_workers']} nodes"
            lines.append(f"  {name:<18} {', '.join(f'{v:g} {k}' for k, v in res.items())}{bounds}"
                         f"   (pod: {pod.get('CPU', 0):g} CPU, {pod.get('GPU', 0):g} GPU)")
        auth = os.environ.get("RAY_AUTH_MODE", "disabled")
        lines += [
            f"  CPUs x {notes['cpu_factor']:g} (local.max_node_cpus), GPUs as {self.gpu_resource!r}; idle nodes go "
            f"after {cfg['idle_timeout_minutes'] * 60:g} s; every node shares this machine's disk",
            f"submit: RAY_AUTH_MODE={auth} ray job submit --address {self.dashboard_url} --working-dir . -- "
            + " ".join(shlex.quote(a) if "$" not in a else a for a in job),
            f"watch:  python -m alarm.cluster local status   (or `ray status`, or {self.dashboard_url})",
            "stop:   python -m alarm.cluster local down",
        ]
        return "\n".join(lines)

    @staticmethod
    def down() -> None:
        """`ray stop --force`: stops every Ray process on this machine, the fake worker nodes included."""
        subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120)


def running_ray() -> list[str]:
    """GCS addresses of the Ray clusters whose head runs on this machine."""
    import ray._private.services as services

    services.find_gcs_addresses.cache_clear()
    return sorted(services.find_gcs_addresses())


def wait_for(ready: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.25):
    """Poll `ready` until it returns something truthy (returned); ClusterError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if out := ready():
            return out
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(every_s)


@dataclass(frozen=True)
class Nodes:
    """The autoscaler's view: nodes per node type, running (idle or busy) and being launched."""

    running: dict[str, int]
    pending: dict[str, int]
    ids: dict[str, list[str]]  # node type -> ids of its running nodes

    def count(self, node_type: str) -> int:
        return self.running.get(node_type, 0)

    def workers(self) -> int:
        """Running nodes other than the head, of every type."""
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_TYPE

        return sum(n for t, n in self.running.items() if t != FAKE_HEAD_NODE_TYPE)


def nodes(gcs_address: str) -> Nodes:
    """Nodes per type from the autoscaler's status in GCS (no driver needed)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FAKE_HEAD_NODE_TYPE
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(gcs_address)
    running: dict[str, int] = {}
    ids: dict[str, list[str]] = {}
    for n in status.active_nodes + status.idle_nodes:
        # the autoscaler may report the local head's type as node_<id>: it is the head whatever its name
        kind = FAKE_HEAD_NODE_TYPE if n.node_id == FAKE_HEAD_NODE_ID else n.ray_node_type_name
        running[kind] = running.get(kind, 0) + 1
        ids.setdefault(kind, []).append(n.node_id)
    pending: dict[str, int] = {}
    for r in status.pending_launches:
        pending[r.ray_node_type_name] = pending.get(r.ray_node_type_name, 0) + r.count
    for n in status.pending_nodes:
        pending[n.ray_node_type_name] = pending.get(n.ray_node_type_name, 0) + 1
    return Nodes(running, pending, ids)


def node_pids(node_id: str) -> list[int]:
    """Every process of a fake node: the fake provider starts them with NODE_ID_ENV = the node's id, and the
    workers and agents a raylet starts inherit it."""
    import psutil

    pids = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(NODE_ID_ENV) == node_id:
                pids.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def kill_node(node_id: str) -> int:
    """Lose a worker node as a machine is lost: SIGKILL to its raylet, agents and workers at once, no drain. The
    autoscaler then sees the node dead, terminates it and launches a replacement if there is demand. Returns the
    number of processes killed."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    if node_id == FAKE_HEAD_NODE_ID:
        raise ValueError("that is the head node; kill a worker node")
    pids = node_pids(node_id)
    if not pids:
        raise ClusterError(f"no process of node {node_id} runs on this machine")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def describe_nodes(gcs_address: str) -> str:
    """`local status`: nodes per type, running and being launched."""
    n = nodes(gcs_address)
    types = sorted(set(n.running) | set(n.pending))
    return "\n".join(f"{t:<20} {n.running.get(t, 0)} running, {n.pending.get(t, 0)} launching" for t in types)
