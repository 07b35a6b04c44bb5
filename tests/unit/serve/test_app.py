"""The application builder, the Serve config it writes, and the client's request builder (no cluster)."""

from __future__ import annotations

import pytest

from alarm.client import make_request
from alarm.config import ConfigError, ServeArgs, ServeConfig, load_config
from services.serve.app import (
    GRPC_SERVICERS,
    IMPORT_PATH,
    build_app,
    deployment_options,
    load_serve_config,
    serve_config,
)


def test_serve_config_validates_against_rays_schema():
    from ray.serve.schema import ServeDeploySchema

    data = serve_config(ServeArgs(preset="alarm-ca"))
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == IMPORT_PATH and data["grpc_options"]["grpc_servicer_functions"] == GRPC_SERVICERS
    names = [d["name"] for d in data["applications"][0]["deployments"]]
    assert names == ["ingress", "encoder-whisper", "encoder-w2vbert", "encoder-muq", "encoder-sslam", "fusion", "llm"]
    llm = data["applications"][0]["deployments"][-1]
    assert llm["ray_actor_options"]["num_gpus"] == 1 and llm["autoscaling_config"]["max_replicas"] == 8
    assert load_serve_config(app.args).name == "alarm"  # the args validate as our app config


def test_build_app_binds_every_deployment():

    app = build_app({"preset": "tiny"})
    assert app._bound_deployment.name == "ingress"


@pytest.mark.parametrize("colocate", [False, True, "all"])
def test_the_layout_names_one_deployment_per_stage_or_one_for_the_audio(colocate):
    """colocate: encoders and fusion in one `audio` deployment with the fusion's resources; all: the ingress alone;
    the Serve config, the readiness list and the cluster sizing all follow deployment_names."""
    from services.serve.app import deployment_names, deployment_options, required_deployments

    cfg = load_config(ServeConfig, "tiny", [f"deployments.colocate={colocate}"], section="serve")
    split = ["ingress", "encoder-whisper", "encoder-w2vbert", "encoder-muq", "encoder-sslam", "fusion", "llm"]
    want = {False: split, True: ["ingress", "audio", "llm"], "all": ["ingress"]}[colocate]
    assert deployment_names(cfg) == want
    assert required_deployments(cfg) == deployment_names(cfg)
    assert list(deployment_options(cfg)) == deployment_names(cfg)
    if colocate is True:
        assert deployment_options(cfg)["audio"]["ray_actor_options"] == deployment_options(
            cfg.model_copy(update={"deployments": cfg.deployments.model_copy(update={"colocate": False})}))[
            "fusion"]["ray_actor_options"]
    args = ServeArgs(preset="tiny", overrides=[f"deployments.colocate={colocate}"])
    assert [d["name"] for d in serve_config(args)["applications"][0]["deployments"]] == deployment_names(cfg)
    app = build_app(args)
    bound = {d.name for d in _bound(app._bound_deployment)}
    assert bound == set(deployment_names(cfg))


def test_with_everything_in_the_ingress_it_takes_the_engines_resources_and_scaling():
    """colocate: all: the ingress hosts the engine, so its replicas ask for the LLM's GPUs and memory, the CPUs of
    the three stages together, scale like the LLM, and keep the ingress's admission limits."""
    from services.serve.app import deployment_options

    over = ["deployments.colocate=all", "deployments.llm.num_gpus=1", "deployments.llm.memory_gb=8",
            "deployments.llm.autoscaling.max_replicas=3", "deployments.llm.health_check_timeout_s=90"]
    cfg = load_config(ServeConfig, "tiny", over, section="serve")
    d, (opts,) = cfg.deployments, deployment_options(cfg).values()
    assert opts["ray_actor_options"]["num_cpus"] == pytest.approx(d.ingress.num_cpus + d.fusion.num_cpus + d.llm.num_cpus)
    assert opts["ray_actor_options"]["num_gpus"] == 1 and opts["ray_actor_options"]["memory"] == 8 * 2**30
    assert opts["autoscaling_config"]["max_replicas"] == 3 and opts["health_check_timeout_s"] == 90
    assert (opts["max_ongoing_requests"], opts["max_queued_requests"]) == (
        d.ingress.max_ongoing_requests, d.ingress.max_queued_requests)


def test_colocate_takes_false_true_or_all_and_names_what_else_it_could_be():
    from alarm.errors import ConfigError

    layouts = {v: load_config(ServeConfig, "tiny", [f"deployments.colocate={v}"], section="serve").deployments.layout
               for v in ("false", "true", "all")}
    assert layouts == {"false": "stages", "true": "audio", "all": "one"}
    with pytest.raises(ConfigError, match="deployments.colocate"):
        load_config(ServeConfig, "tiny", ["deployments.colocate=everything"], section="serve")


@pytest.mark.parametrize("one_loop", [False, True])
def test_one_loop_sets_serves_two_loop_switches_in_every_replica(one_loop):
    """deployments.one_loop: each replica's runtime_env carries the two variables, in the built application and in
    the Serve config alike, and Ray still reads them under those names (a rename would make the option a no-op)."""
    import inspect

    from ray.serve._private import constants

    cfg = load_config(ServeConfig, "tiny", [f"deployments.one_loop={one_loop}"], section="serve")
    want = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
    want = want if one_loop else None
    for name, opts in deployment_options(cfg).items():
        assert opts["ray_actor_options"].get("runtime_env", {}).get("env_vars") == want, name
    for d in _bound(build_app(cfg)._bound_deployment):
        assert (d.ray_actor_options.get("runtime_env") or {}).get("env_vars") == want, d.name
    for key in want or {}:
        assert f'"{key}"' in inspect.getsource(constants)
    args = ServeArgs(preset="tiny", overrides=[f"deployments.one_loop={one_loop}"])
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config(args))


def _bound(dep) -> list:
    """Every deployment bound under `dep` (its init args, nested in dicts and lists)."""
    from ray.serve.deployment import Application

    out = [dep]
    stack = [*dep.init_args, *dep.init_kwargs.values()]
    while stack:
        x = stack.pop()
        if isinstance(x, Application):
            out += _bound(x._bound_deployment)
        elif isinstance(x, dict):
            stack += x.values()
        elif isinstance(x, list | tuple):
            stack += x
    return out


def test_app_args_are_strict():
    with pytest.raises(Exception, match="presett"):
        load_serve_config({"presett": "tiny"})
    with pytest.raises(ConfigError, match="unknown serve preset"):
        load_serve_config({"preset": "nope"})
    with pytest.raises(ConfigError, match="default_adapter"):
        load_config(ServeConfig, "tiny", ["default_adapter=missing"], section="serve")
    with pytest.raises(ConfigError, match="min_replicas"):
        load_config(ServeConfig, "tiny", ["deployments.llm.autoscaling.min_replicas=3"], section="serve")


def test_make_request(tmp_path):
    f = tmp_path / "a.wav"
    f.write_bytes(b"RIFF....")
    assert make_request(f, "q").audio_bytes == b"RIFF...."
    assert make_request(str(f), "q").WhichOneof("audio") == "audio_bytes"
    assert make_request(b"xyz", "q").audio_bytes == b"xyz"
    assert make_request("s3://b/k.flac", "q").audio_uri == "s3://b/k.flac"
    assert make_request(None, "q").WhichOneof("audio") is None
    r = make_request(None, "q", system_prompt="", temperature=0.0, seed=1, ensemble=["a", "b"])
    assert r.HasField("system_prompt") and r.sampling.HasField("temperature") and not r.sampling.HasField("top_p")
    assert list(r.ensemble_adapter_ids) == ["a", "b"]
    assert make_request(None, "q", no_thinking=True).no_thinking and not make_request(None, "q").no_thinking


def test_llm_deployment_cannot_queue_inside_the_engine():
    with pytest.raises(ConfigError, match="max_num_seqs"):
        load_config(ServeConfig, "tiny", ["deployments.llm.max_ongoing_requests=17"], section="serve")


def test_readiness_requires_the_deployments_that_never_scale_to_zero():
    from services.serve.app import required_deployments

    cfg = load_config(ServeConfig, "tiny", ["deployments.colocate=false", "deployments.fusion.autoscaling.min_replicas=0",
                                            "deployments.fusion.autoscaling.max_replicas=2"], section="serve")
    assert required_deployments(cfg) == ["ingress", "encoder-whisper", "encoder-w2vbert", "encoder-muq",
                                         "encoder-sslam", "llm"]


def test_replicas_are_health_checked_often_and_requests_time_out_by_default():
    data = serve_config(ServeArgs(preset="tiny"))
    assert data["grpc_options"]["request_timeout_s"] == ServeConfig.model_fields["request_timeout_s"].default
    for d in data["applications"][0]["deployments"]:
        assert d["health_check_period_s"] <= 1.0, d["name"]


def test_the_grpc_port_is_on_every_interface_and_every_first_mention_says_so():
    """Ray Serve 2.60's gRPC proxy binds [::]:port and has no host option: the startup lines and README's first
    mention of the port say so (when Ray grows an option, this fails and `host` can apply to gRPC too)."""
    import inspect
    import re
    from pathlib import Path

    from ray.serve._private import grpc_util
    from ray.serve.config import gRPCOptions

    from alarm.serve import where

    assert 'f"[::]:{grpc_options.port}"' in inspect.getsource(grpc_util.start_grpc_server)
    assert "host" not in gRPCOptions.model_fields
    assert "every interface" in where(load_config(ServeConfig, "tiny", section="serve"))
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    first = next(line for line in readme.splitlines() if re.search(r"\b9000\b", line))
    assert "every interface" in first, first


def test_replicas_ask_for_the_gpu_resource_of_the_cluster_they_run_on(monkeypatch):
    """Built on a local multi-node cluster (ALARM_GPU_RESOURCE=fake_gpu), a replica's GPUs are the stand-in; the
    Serve config written for any cluster keeps num_gpus."""
    from services.serve.app import _options

    cfg = load_serve_config(ServeArgs(preset="tiny", overrides=["deployments.llm.num_gpus=0.5"]))
    monkeypatch.setenv("ALARM_GPU_RESOURCE", "fake_gpu")
    here = _options(cfg.deployments.llm)["ray_actor_options"]
    assert here["resources"] == {"fake_gpu": 0.5} and "num_gpus" not in here
    assert deployment_options(cfg)["llm"]["ray_actor_options"]["num_gpus"] == 0.5
    monkeypatch.delenv("ALARM_GPU_RESOURCE")
    assert _options(cfg.deployments.llm)["ray_actor_options"]["num_gpus"] == 0.5
