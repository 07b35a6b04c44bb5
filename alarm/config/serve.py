"""The serving schema (`python -m alarm.serve`, services/serve/app.py:build_app): adapters, the LLM engine, request
defaults and limits, the Serve deployments, ports and Ray (`ServeConfig`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from alarm.config.base import RAY_RENAMED, RayConfig, Strict, WithModel
from alarm.config.model import EncoderKind, ModelConfig

# The gRPC service the server registers (protos/alarm/v1/alarm.proto), named in readiness probes and health checks.
GRPC_SERVICE = "alarm.v1.AlarmService"
# Serve's gRPC proxy reads its message-size limit from this variable at start-up (set it for `ray start` / pods).
GRPC_MAX_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"


class AdapterSpec(Strict):
    checkpoint: str | None = Field(
        None, description="Adapter checkpoint written by alarm.train (folder or s3://). None = freshly initialised "
        "from `model` with `seed`: an untrained adapter, for demos and tests only."
    )
    seed: int = Field(0, description="Init seed when checkpoint is None.")


class AutoscalingSpec(Strict):
    """Ray Serve replica autoscaling for one deployment (Ray Serve's `autoscaling_config`)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2, gt=0, description="Requests in flight per replica to aim for.")
    upscale_delay_s: float = Field(30, ge=0)
    downscale_delay_s: float = Field(600, ge=0)

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} must be <= max_replicas={self.max_replicas}")
        return self


class DeploymentSpec(Strict):
    """Resources, admission and scaling of one Serve deployment."""

    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    num_cpus: float = Field(1, ge=0, description="Logical CPUs per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica (fractions share one device).")
    memory_gb: float | None = Field(None, gt=0, description="Memory reserved per replica (scheduling only).")
    max_ongoing_requests: int = Field(16, gt=0, description="Requests a replica runs at once.")
    max_queued_requests: int = Field(
        64, ge=-1, description="Requests waiting per caller beyond that; more fail with RESOURCE_EXHAUSTED (-1 = no cap)."
    )
    graceful_shutdown_timeout_s: float = Field(
        20, ge=0, description="On downscale or upgrade, how long a replica may finish its requests before it is "
        "killed (long reasoning: set it to the client deadline)."
    )
    health_check_period_s: float = Field(
        1.0, gt=0, description="How often Serve's controller checks each replica. A dead replica is noticed at the "
        "next check: readiness turns NOT_SERVING and requests stop waiting for it within about this long."
    )
    health_check_timeout_s: float = Field(30, gt=0, description="A replica whose check takes longer is restarted.")


class EncoderDeploymentSpec(DeploymentSpec):
    max_batch_size: int = Field(8, gt=0, description="@serve.batch: clips per encoder forward.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="@serve.batch: wait this long to fill a batch.")


class ServeDeploymentsConfig(Strict):
    colocate: bool | Literal["all"] = Field(
        False, description="false: one deployment per encoder and a separate fusion, each scaled on its own (the "
        "cluster presets). true: every encoder and the fusion in one deployment, `audio` (resources and scaling: "
        "`fusion`; batching: `encoder`, `encoder_overrides`): one Serve call per request for the audio instead of "
        "one per encoder plus one per adapter. all: every stage, the LLM engine included, in the ingress's replicas "
        "(admission: `ingress`; resources, scaling and health checks: `llm`, with the CPUs of ingress, fusion and "
        "llm together): one Serve call per request. For small machines, where each call between deployments costs "
        "as much as the tiny models do."
    )
    one_loop: bool = Field(
        True, description="Every replica runs Serve's request handling, our code and its calls to other deployments on "
        "one asyncio event loop (Ray Serve's RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 and "
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0, set in each deployment's runtime_env) instead of Serve's default "
        "of three loops on three threads, so a request crosses no thread inside a replica. Safe here: the replicas' "
        "blocking work (audio decoding, encoder and fusion forwards) already runs in worker threads."
    )
    free_memory: Literal["trim", "mmap", "off"] = Field(
        "trim", description="How replicas give a burst's freed memory back to the system (services/serve/heap.py): "
        "trim = glibc's malloc_trim(0) every 2 s in a background thread; mmap = every buffer of 128 KiB or more in "
        "its own mapping, returned at once but paying its page faults on every allocation (about 30% more CPU per "
        "clip in the encoder replicas); off = glibc's default, which keeps a burst's high-water mark resident."
    )
    ingress: DeploymentSpec = Field(default_factory=lambda: DeploymentSpec(num_cpus=0.5, max_ongoing_requests=64))
    encoder: EncoderDeploymentSpec = Field(
        default_factory=EncoderDeploymentSpec, description="Every encoder deployment, unless encoder_overrides names it."
    )
    encoder_overrides: dict[EncoderKind, EncoderDeploymentSpec] = Field(default_factory=dict)
    fusion: DeploymentSpec = Field(default_factory=DeploymentSpec)
    llm: DeploymentSpec = Field(
        default_factory=lambda: DeploymentSpec(max_ongoing_requests=64, max_queued_requests=64),
        description="max_ongoing_requests at most llm.max_num_seqs: a request Serve routes to the engine runs at once.",
    )

    def for_encoder(self, name: str) -> EncoderDeploymentSpec:
        return self.encoder_overrides.get(name, self.encoder)

    @property
    def layout(self) -> Literal["stages", "audio", "one"]:
        """`colocate` by name: a deployment per stage, one `audio` deployment, or one deployment for everything."""
        return "one" if self.colocate == "all" else "audio" if self.colocate else "stages"


class LLMServeConfig(Strict):
    """The LLM deployment's engine (one per replica)."""

    backend: Literal["vllm", "hf"] = Field(
        "vllm", description="vllm: AsyncLLM with prompt_embeds (continuous batching); hf: transformers "
        "generate(inputs_embeds=...), one request at a time, for machines without vLLM."
    )
    max_model_len: int = Field(8192, gt=0, description="Prompt + new tokens per request.")
    max_num_seqs: int = Field(64, gt=0, description="Sequences the engine batches at once.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, gt=0)
    enable_prefix_caching: bool = Field(
        False, description="Off: prompt-embedding masks are missing from prefix-cache keys in some vLLM versions "
        "(vLLM issue #56655); enable only with the regression test passing."
    )
    enforce_eager: bool = Field(False, description="Skip CUDA graphs / torch.compile (fast start; CPU).")


class RequestDefaults(Strict):
    """What a request's unset (0 / absent) fields mean."""

    max_thinking_tokens: int = Field(1024, gt=0)
    max_tokens: int = Field(8192, gt=0, description="Lowered to what fits the context when the request leaves it 0.")
    temperature: float = Field(0.6, ge=0, le=2, description="In [0, 2] (vLLM's range, alarm.llm.limits).")
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(20, ge=0)


class ServeLimits(Strict):
    max_message_bytes: int = Field(
        32 * 2**20, gt=0, description="gRPC messages over this fail with RESOURCE_EXHAUSTED (Ray's default is 2 GiB)."
    )
    max_prompt_chars: int = Field(16384, gt=0)
    max_ensemble: int = Field(4, ge=2, description="Most adapters in one ALARM-E request.")
    replica_wait_s: float = Field(
        3.0, ge=0, description="How long a request waits for a deployment that has no running replica (one "
        "restarting) before it fails with UNAVAILABLE; deployments that may scale to zero (min_replicas 0) are "
        "waited for until the request's deadline."
    )
    audio_uri_prefixes: list[str] = Field(
        default_factory=list, description="audio_uri must start with one of these (e.g. s3://bucket/audio/); the "
        "server reads them with its own credentials, so list only what clients may read. Empty = audio_uri off."
    )


class AuthConfig(Strict):
    """Bearer tokens the ingress accepts on both protocols (gRPC `authorization` metadata, HTTP `Authorization`
    header); neither source set = no authentication. The health service stays open for probes."""

    token_file: str | None = Field(
        None, description="File of accepted tokens, one per line (e.g. a mounted Kubernetes Secret); reread when it "
        "changes, so tokens rotate without a restart."
    )
    token_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of an environment variable of the ingress "
        "replicas holding accepted tokens, comma- or newline-separated (e.g. set from a Secret)."
    )

    @property
    def enabled(self) -> bool:
        return bool(self.token_file or self.token_env)


class ServeConfig(WithModel):
    renamed: ClassVar[dict[str, str]] = RAY_RENAMED

    name: str = Field("alarm", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description="Serve application name.")
    model: ModelConfig = Field(description="Encoders, LLM and prompt format (a model preset name is expanded).")
    adapters: dict[str, AdapterSpec] = Field(
        min_length=1, description="Adapter id -> checkpoint; clients pick one with adapter_id (several = ALARM-E)."
    )
    default_adapter: str = Field(description="The adapter used when a request names none.")
    max_adapters_per_replica: int = Field(4, gt=0, description="@serve.multiplexed LRU size in the fusion replicas.")
    llm: LLMServeConfig = Field(default_factory=LLMServeConfig)
    defaults: RequestDefaults = Field(default_factory=RequestDefaults)
    limits: ServeLimits = Field(default_factory=ServeLimits)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    deployments: ServeDeploymentsConfig = Field(default_factory=ServeDeploymentsConfig)
    host: str = Field(
        "127.0.0.1", description="Bind address of Serve's HTTP proxy (0.0.0.0 in containers). Ray Serve's gRPC proxy "
        "cannot be bound to one address: it listens on grpc_port on every interface."
    )
    grpc_port: int = Field(9000, gt=0, lt=65536)
    http_port: int = Field(8000, gt=0, lt=65536, description="Serve's HTTP proxy (KubeRay probes /-/healthz on it).")
    request_timeout_s: float | None = Field(
        600, gt=0, description="Server-side end-to-end limit per request: past it the call ends with "
        "DEADLINE_EXCEEDED and its engine request is aborted (None = only the client's deadline). 600 s holds 8192 "
        "new tokens at 15 tokens/s."
    )
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.default_adapter not in self.adapters:
            raise ValueError(
                f"default_adapter={self.default_adapter!r} is not one of adapters {sorted(self.adapters)}"
            )
        if self.llm.backend == "vllm" and self.deployments.llm.max_ongoing_requests > self.llm.max_num_seqs:
            raise ValueError(
                f"deployments.llm.max_ongoing_requests={self.deployments.llm.max_ongoing_requests} is over "
                f"llm.max_num_seqs={self.llm.max_num_seqs}: the extra requests would wait inside the engine, where no "
                "queue limit applies; lower it (queue with deployments.llm.max_queued_requests) or raise max_num_seqs"
            )
        if self.grpc_port == self.http_port:
            raise ValueError(f"grpc_port and http_port must differ, both are {self.grpc_port}")
        bad = [p for p in self.limits.audio_uri_prefixes if not p.startswith("s3://") or p.count("/") < 3]
        if bad:
            raise ValueError(
                f"limits.audio_uri_prefixes {bad}: each must be an s3://bucket/ prefix (ending in a bucket or folder)"
            )
        return self


class ServeArgs(Strict):
    """A serve preset (name or YAML path) and dotted overrides, as on the command line: the `args` of the Serve
    application (services/serve/app.py) and the in-process pipeline `alarm.eval` runs."""

    preset: str = Field("tiny", description="Serve preset name (alarm/presets/serve) or a YAML path.")
    overrides: list[str] = Field(default_factory=list, description="key.sub=value, as on the command line.")
