"""`deployments.colocate`: true = the encoders and the fusion in one `audio` deployment; all = every stage in the
ingress's replica. End to end over gRPC (ports 8103/9103), each layout in turn: the same answers as the in-process
pipeline, ALARM-E and adapter multiplexing, streaming, and readiness; test_serve.py covers the one-deployment-per-
stage layout."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from alarm.config import ServeConfig, load_config
from tests.integration.test_serve import GREEDY, OVERRIDES, assert_same_as_in_process, start_app, wav

HTTP_PORT, GRPC_PORT = 8103, 9103
SEEDED = dict(temperature=1.0, seed=7, return_reasoning=True)  # 24 tokens: all reasoning
DEPLOYMENTS = {"true": {"ingress", "audio", "llm"}, "all": {"ingress"}}


@pytest.fixture(scope="module", params=list(DEPLOYMENTS))
def served(ray_cluster, request):
    from ray import serve

    overrides = [*[o for o in OVERRIDES if not o.startswith("deployments.colocate")],
                 f"deployments.colocate={request.param}"]
    cfg = load_config(ServeConfig, "tiny", overrides, section="serve")
    client, _ = start_app(cfg, HTTP_PORT, GRPC_PORT)
    yield SimpleNamespace(cfg=cfg, client=client, serve=serve, overrides=overrides, layout=request.param)
    client.close()
    serve.shutdown()


def test_the_layouts_deployments_and_the_same_answer_as_in_process(served):
    status = served.serve.status().applications[served.cfg.name]
    assert set(status.deployments) == DEPLOYMENTS[served.layout]
    assert_same_as_in_process(served.client, served.overrides)


def test_ensemble_multiplexing_and_streaming(served):
    # sampled with one seed: the random tiny LLM's greedy text is blank whatever it hears, its samples are not
    one = served.client.generate(wav(), "What is it?", adapter_id="tiny", max_tokens=24, **SEEDED)
    other = served.client.generate(wav(), "What is it?", adapter_id="tiny-b", max_tokens=24, **SEEDED)
    assert one.usage.audio_tokens == other.usage.audio_tokens == 2 * 25 + 2
    assert (one.reasoning, one.answer) != (other.reasoning, other.answer)
    both = served.client.generate(wav(), "What is it?", ensemble=["tiny", "tiny-b"], max_tokens=24, **GREEDY)
    assert both.usage.audio_tokens == 2 * one.usage.audio_tokens
    answer, final = "", None
    for msg in served.client.stream(wav(), "What is it?", adapter_id="tiny-b", max_tokens=24, **SEEDED):
        answer += msg.answer_delta
        final = msg.final if msg.WhichOneof("event") == "final" else final
    assert (answer, final.usage) == (other.answer, other.usage)


def test_bad_adapter_is_invalid_argument(served):
    with pytest.raises(grpc.RpcError) as e:
        served.client.generate(wav(), "What is it?", adapter_id="nope")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
