"""The application builder, the Serve config it writes, and the client's request builder (no cluster)."""

from __future__ import annotations

import pytest

from alarm.client import make_request
from alarm.config import ConfigError, ServeArgs, ServeConfig, load_config
from services.serve.app import (
    GRPC_SERVICERS,
    IMPORT_PATH,
    build_app,
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
