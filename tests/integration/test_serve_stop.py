"""Stop strings end to end: the official `openai` client (plain and streamed) and the gRPC client (unary and streamed)
against one application (ports 8118/9118) on the scripted tiny Qwen3, whose answer about any clip is known in
advance (`alarm.tiny.scripted.HEARD_OUTPUT`) and says the stop string in its reasoning and again in its answer."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import openai
import pytest

from alarm.config import ServeConfig, load_config
from alarm.llm.thinking import split_reasoning
from alarm.tiny.scripted import HEARD_OUTPUT
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from tests.integration.test_openai import ask
from tests.integration.test_serve import GREEDY, start_app, wav

HTTP_PORT, GRPC_PORT = 8118, 9118
OVERRIDES = ["deployments.colocate=true"]  # the tiny preset's scripted LLM; one audio deployment starts faster
SYSTEM = "You are an audio-understanding model."
STOP = "sound"  # "I hear a sound in this clip, ..." (reasoning), "... contains one clear sound lasting ..." (answer)
REASONING, ANSWER, _ = split_reasoning(HEARD_OUTPUT)
CUT = ANSWER[:ANSWER.index(STOP)]


@pytest.fixture(scope="module")
def served(ray_cluster):
    from ray import serve

    cfg = load_config(ServeConfig, "tiny", OVERRIDES, section="serve")
    client, _ = start_app(cfg, HTTP_PORT, GRPC_PORT)
    oai = openai.OpenAI(base_url=f"http://127.0.0.1:{HTTP_PORT}/v1", api_key="none", max_retries=0, timeout=120)
    llm = serve.get_deployment_handle("llm", app_name=cfg.name)
    yield SimpleNamespace(cfg=cfg, client=client, oai=oai, llm=llm)
    client.close()
    serve.shutdown()


def test_the_answer_ends_before_the_stop_string_on_both_protocols(served):
    clip = wav(1.5, freq=500)
    grpc_kw = dict(system_prompt=SYSTEM, return_reasoning=True, **GREEDY)
    whole = served.client.generate(clip, "What is it?", **grpc_kw)
    assert (whole.reasoning, whole.answer, whole.stop_string) == (REASONING, ANSWER, "")  # the model's own end
    assert STOP in REASONING and STOP in ANSWER

    reply = served.client.generate(clip, "What is it?", stop=[STOP, "nowhere"], **grpc_kw)
    assert (reply.reasoning, reply.answer, reply.finish_reason, reply.stop_string) == (REASONING, CUT, pb.STOP, STOP)
    assert reply.usage.reasoning_tokens == whole.usage.reasoning_tokens
    assert reply.usage.answer_tokens < whole.usage.answer_tokens
    answer, final = "", None
    for msg in served.client.stream(clip, "What is it?", stop=[STOP], **grpc_kw):
        answer += msg.answer_delta
        final = msg.final if msg.WhichOneof("event") == "final" else final
    assert (answer, final.answer, final.stop_string, final.usage) == (CUT, CUT, STOP, reply.usage)

    kw = dict(model=served.cfg.default_adapter, messages=ask("What is it?", clip), temperature=0.0)
    out = served.oai.chat.completions.create(stop=[STOP, "nowhere"], **kw)
    choice = out.choices[0]
    assert (choice.message.content, choice.message.reasoning) == (CUT, REASONING)
    assert (choice.finish_reason, choice.stop_reason) == ("stop", STOP)
    assert out.usage.completion_tokens == reply.usage.total_tokens
    chunks = list(served.oai.chat.completions.create(stop=STOP, stream=True, **kw))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == CUT
    assert "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks) == REASONING
    last = chunks[-1].choices[0]
    assert (last.finish_reason, last.stop_reason, chunks[-1].usage.completion_tokens) == (
        "stop", STOP, reply.usage.total_tokens)
    assert served.llm.num_unfinished.remote().result() == 0  # each request ended at its stop string


def test_bad_stops_are_refused_on_both_protocols(served):
    with pytest.raises(openai.BadRequestError) as e:
        served.oai.chat.completions.create(model=served.cfg.default_adapter, messages=ask("Hi", None),
                                           stop=["a", "b", "c", "d", "e"])
    assert "stop holds 5 strings" in e.value.body["message"] and e.value.body["code"] == "INVALID_ARGUMENT"
    with pytest.raises(grpc.RpcError) as e:
        served.client.generate(None, "Hi", stop=["ok", ""])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stop[1]" in e.value.details()
