"""The Serve application: one builder for `python -m alarm.serve`, `serve run`/`serve deploy` and KubeRay.

    app = build_app({"preset": "tiny", "overrides": ["llm.max_num_seqs=8"]})      # a bound Serve Application
    serve_config(cfg)            # the Serve config file (grpc_options + this import_path + args + deployments)

In a Serve config or a RayService `serveConfigV2`:

    grpc_options: {port: 9000, grpc_servicer_functions: [<GRPC_SERVICERS>]}
    applications:
    - name: alarm
      import_path: services.serve.app:build_app
      args: {preset: tiny, overrides: []}
"""

from __future__ import annotations

from typing import Any

from alarm.config import DeploymentSpec, ServeArgs, ServeConfig, load_config

IMPORT_PATH = "services.serve.app:build_app"
GRPC_SERVICERS = [
    "services.serve.proxy.add_alarm_service",  # the generated registration, plus our proxy shims (proxy.py)
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]


def load_serve_config(args: dict[str, Any] | ServeArgs | ServeConfig) -> ServeConfig:
    if isinstance(args, ServeConfig):
        return args
    a = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args or {})
    return load_config(ServeConfig, a.preset, a.overrides, section="serve")


def build_app(args: dict):
    """The bound application: ingress -> {encoder per configured encoder} -> fusion -> llm; with
    `deployments.colocate: true` ingress -> audio (every encoder and the fusion) -> llm; with `colocate: all` the
    ingress alone, every stage in its replicas.

    Args:
        args: `{"preset": ..., "overrides": [...]}` (ServeArgs), or a ServeConfig.
    """
    from services.serve.deployments import AudioServer, EncoderServer, FusionServer, LLMServer
    from services.serve.ingress import AlarmIngress

    cfg = load_serve_config(args)
    data = cfg.model_dump(mode="json")
    opts = deployment_options(cfg, here=True)
    if cfg.deployments.layout == "one":  # the ingress builds the audio and LLM stages in its own replica
        return AlarmIngress.options(name="ingress", **opts["ingress"]).bind(
            data, {}, None, None, required_deployments(cfg))
    llm = LLMServer.options(name="llm", **opts["llm"]).bind(data)
    if cfg.deployments.layout == "audio":  # one deployment for the audio: the ingress calls it in place of the encoders and the fusion
        audio = AudioServer.options(name="audio", **opts["audio"]).bind(data)
        return AlarmIngress.options(name="ingress", **opts["ingress"]).bind(
            data, {}, audio, llm, required_deployments(cfg))
    encoders = {}
    for name, enc in cfg.model.encoders.items():
        spec = cfg.deployments.for_encoder(name)
        encoders[name] = EncoderServer.options(name=f"encoder-{name}", **opts[f"encoder-{name}"]).bind(
            name, enc.model_dump(mode="json"), cfg.model.audio.resample_quality, spec.max_batch_size,
            spec.batch_wait_timeout_s, cfg.deployments.free_memory,
        )
    fusion = FusionServer.options(name="fusion", **opts["fusion"]).bind(data)
    return AlarmIngress.options(name="ingress", **opts["ingress"]).bind(
        data, encoders, fusion, llm, required_deployments(cfg))


def replica_env(cfg: ServeConfig) -> dict[str, str]:
    """Environment variables every replica gets (its runtime_env's env_vars; Serve adds them to the
    application's): `deployments.one_loop` as Serve's two event-loop switches."""
    if not cfg.deployments.one_loop:
        return {}
    return {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}


def _options(spec, *, here: bool = True, env: dict[str, str] | None = None) -> dict:
    """A DeploymentSpec as Serve deployment options: for the cluster this process runs on (`here`: GPUs as its
    GPU resource, a stand-in on a local multi-node cluster, services.connect.gpu_options), or as written in a
    Serve config for any cluster (`num_gpus`); `env`: the replicas' environment variables (replica_env)."""
    a = spec.autoscaling
    if here:
        from services.connect import (
            gpu_options,  # imports ray: only when building the application, not rendering
        )

        gpus = gpu_options(spec.num_gpus)
    else:
        gpus = {"num_gpus": spec.num_gpus}
    actor = {"num_cpus": spec.num_cpus, **gpus}
    if spec.memory_gb is not None:
        actor["memory"] = int(spec.memory_gb * 2**30)
    if env:
        actor["runtime_env"] = {"env_vars": dict(env)}
    out = {
        "ray_actor_options": actor,
        "max_ongoing_requests": spec.max_ongoing_requests,
        "max_queued_requests": spec.max_queued_requests,
        "graceful_shutdown_timeout_s": spec.graceful_shutdown_timeout_s,
        "health_check_period_s": spec.health_check_period_s,
        "health_check_timeout_s": spec.health_check_timeout_s,
    }
    if a.min_replicas == a.max_replicas:
        out["num_replicas"] = a.min_replicas
    else:
        out["autoscaling_config"] = {
            "min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests, "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        }
    return out


def deployment_names(cfg: ServeConfig) -> list[str]:
    layout = cfg.deployments.layout
    if layout == "one":
        return ["ingress"]
    if layout == "audio":
        return ["ingress", "audio", "llm"]
    return ["ingress", *(f"encoder-{n}" for n in cfg.model.encoders), "fusion", "llm"]


def one_spec(d) -> DeploymentSpec:
    """`colocate: all`: the ingress hosts the engine, so its replicas take the LLM's resources, scaling and health
    checks, the CPUs of the ingress, the fusion and the LLM together, and the ingress's admission limits."""
    return d.llm.model_copy(update={
        "num_cpus": d.ingress.num_cpus + d.fusion.num_cpus + d.llm.num_cpus,
        "max_ongoing_requests": d.ingress.max_ongoing_requests, "max_queued_requests": d.ingress.max_queued_requests,
    })


def deployment_specs(cfg: ServeConfig) -> dict:
    """deployment name -> its DeploymentSpec, in deployment_names order."""
    d = cfg.deployments
    if d.layout == "one":
        return {"ingress": one_spec(d)}
    specs = {"ingress": d.ingress, "fusion": d.fusion, "audio": d.fusion, "llm": d.llm}
    specs |= {f"encoder-{n}": d.for_encoder(n) for n in cfg.model.encoders}
    return {name: specs[name] for name in deployment_names(cfg)}


def deployment_options(cfg: ServeConfig, *, here: bool = False) -> dict[str, dict]:
    """deployment name -> its Serve options, as a Serve config writes them (or for this cluster: `_options`)."""
    env = replica_env(cfg)
    return {name: _options(spec, here=here, env=env) for name, spec in deployment_specs(cfg).items()}


def required_deployments(cfg: ServeConfig) -> list[str]:
    """The deployments readiness needs a running replica of: those that never scale to zero (min_replicas >= 1)."""
    return [name for name, spec in deployment_specs(cfg).items() if spec.autoscaling.min_replicas >= 1]


def serve_config(args: ServeArgs, *, runtime_env: dict | None = None) -> dict:
    """The Serve config file (`serve run`, `serve deploy`, KubeRay serveConfigV2) for the application `args`
    builds. Deployment options are written out explicitly (the values build_app applies) so operators see them in
    one place; a value changed there overrides the preset for that deployment."""
    cfg = load_serve_config(args)
    app = {
        "name": cfg.name,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": args.model_dump(mode="json"),
        "deployments": [{"name": n, **opts} for n, opts in deployment_options(cfg).items()],
    }
    if runtime_env:
        app["runtime_env"] = runtime_env
    grpc = {"port": cfg.grpc_port, "grpc_servicer_functions": list(GRPC_SERVICERS)}
    if cfg.request_timeout_s:
        grpc["request_timeout_s"] = cfg.request_timeout_s
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.http_port},
        "grpc_options": grpc,
        "applications": [app],
    }
