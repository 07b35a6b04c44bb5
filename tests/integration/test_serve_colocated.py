"""`deployments.colocate`: the encoders and the fusion in one `audio` deployment, end to end over gRPC (ports
8102/9102). The same answers as the in-process pipeline, ALARM-E and adapter multiplexing, streaming, and
readiness over the three deployments; test_serve.py covers the one-deployment-per-stage layout."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import pytest

from alarm.client import AlarmClient
from alarm.config import ServeConfig, load_config
from tests.integration.test_serve import GREEDY, OVERRIDES, wav

HTTP_PORT, GRPC_PORT = 8102, 9102
COLOCATED = [*[o for o in OVERRIDES if not o.startswith("deployments.colocate")], "deployments.colocate=true"]


@pytest.fixture(scope="module")
def served(ray_cluster):
    from ray import serve
    from ray.serve.api import _run
    from ray.serve.config import gRPCOptions

    from services.serve.app import GRPC_SERVICERS, build_app

    cfg = load_config(ServeConfig, "tiny", COLOCATED, section="serve")
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT},
                grpc_options=gRPCOptions(port=GRPC_PORT, grpc_servicer_functions=GRPC_SERVICERS))
    _run(build_app(cfg), name=cfg.name, route_prefix="/", _blocking=False)
    client = AlarmClient(f"127.0.0.1:{GRPC_PORT}", timeout_s=120)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 600:
        try:
            if client.health() == "SERVING":
                break
        except grpc.RpcError:
            pass  # the ingress replica is not up yet
        time.sleep(0.5)
    else:
        pytest.fail("the application never reported SERVING")
    yield SimpleNamespace(cfg=cfg, client=client, serve=serve)
    client.close()
    serve.shutdown()


def test_three_deployments_and_the_same_answer_as_in_process(served):
    from alarm.client import make_request
    from services.serve.local import LocalPipeline

    status = served.serve.status().applications[served.cfg.name]
    assert set(status.deployments) == {"ingress", "audio", "llm"}
    kwargs = dict(return_reasoning=True, max_thinking_tokens=8, max_tokens=24, **GREEDY)
    remote = served.client.generate(wav(1.5, rate=44100, freq=500), "What is it?", **kwargs)
    cfg = load_config(ServeConfig, "tiny", [*COLOCATED, "llm.backend=hf"], section="serve")

    async def local():
        pipe = await LocalPipeline.create(cfg)
        try:
            return await pipe.generate(make_request(wav(1.5, rate=44100, freq=500), "What is it?", **kwargs))
        finally:
            await pipe.aclose()

    mine = asyncio.run(local())
    assert (mine.reasoning, mine.answer, mine.usage) == (remote.reasoning, remote.answer, remote.usage)


def test_ensemble_multiplexing_and_streaming(served):
    one = served.client.generate(wav(), "What is it?", adapter_id="tiny", max_tokens=24, **GREEDY)
    other = served.client.generate(wav(), "What is it?", adapter_id="tiny-b", max_tokens=24, **GREEDY)
    assert one.usage.audio_tokens == other.usage.audio_tokens == 2 * 25 + 2
    assert (one.reasoning, one.answer) != (other.reasoning, other.answer)
    both = served.client.generate(wav(), "What is it?", ensemble=["tiny", "tiny-b"], max_tokens=24, **GREEDY)
    assert both.usage.audio_tokens == 2 * one.usage.audio_tokens
    answer, final = "", None
    for msg in served.client.stream(wav(), "What is it?", adapter_id="tiny-b", max_tokens=24, **GREEDY):
        answer += msg.answer_delta
        final = msg.final if msg.WhichOneof("event") == "final" else final
    assert (answer, final.usage) == (other.answer, other.usage)


def test_bad_adapter_is_invalid_argument(served):
    with pytest.raises(grpc.RpcError) as e:
        served.client.generate(wav(), "What is it?", adapter_id="nope")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
