"""The OpenAI-compatible bodies against the official `openai` client: what it sends parses into the RequestSpec the
gRPC path would build, and what we answer (plain, streamed, errors) it reads as a user's code would."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from alarm.errors import InvalidInput
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.chat import (
    chunk,
    completion_body,
    error_body,
    final_chunk,
    models_body,
    parse_body,
    sse,
    to_spec,
)
from services.serve.validate import validate_request
from tests.unit.serve import CFG, wav

REPLY = pb.GenerateResponse(
    answer="A dog barks.", reasoning="I hear barking.", reasoning_complete=True, finish_reason=pb.STOP,
    usage=pb.Usage(prompt_tokens=40, audio_tokens=25, reasoning_tokens=5, answer_tokens=4, total_tokens=9),
    request_id="r1")


def client(handler) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://alarm.test/v1", api_key="tok",
                         http_client=httpx.Client(transport=httpx.MockTransport(handler)), max_retries=0)


def sent_by_the_client(**kwargs) -> tuple[dict, httpx.Request]:
    seen = {}

    def handler(request: httpx.Request):
        seen["body"], seen["request"] = json.loads(request.content), request
        return httpx.Response(200, json=completion_body(REPLY, "alarm-ca", 0))

    client(handler).chat.completions.create(**kwargs)
    return seen["body"], seen["request"]


def test_what_the_openai_client_sends_becomes_the_grpc_request():
    audio = wav()
    body, request = sent_by_the_client(
        model="alarm-ca", max_completion_tokens=256, temperature=0.0, top_p=0.9, seed=7,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [
                      {"type": "text", "text": "What is happening?"},
                      {"type": "input_audio",
                       "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}]}],
        extra_body={"thinking_token_budget": 64, "top_k": 5})
    assert request.headers["authorization"] == "Bearer tok" and request.url.path == "/v1/chat/completions"
    spec = to_spec(parse_body(json.dumps(body).encode()), "rid")
    assert (spec.prompt, spec.system_prompt, spec.audio_bytes, spec.adapter_id) == (
        "What is happening?", "Be brief.", audio, "alarm-ca")
    assert (spec.max_tokens, spec.max_thinking_tokens, spec.temperature, spec.top_p, spec.top_k, spec.seed) == (
        256, 64, 0.0, 0.9, 5, 7)
    assert spec.return_reasoning and spec.request_id == "rid" and spec.audio_uri is None


@pytest.mark.parametrize("stop, want", [("\n\n", ("\n\n",)), (["Q:", "."], ("Q:", ".")), (None, ()), ([], ())])
def test_stop_as_the_client_sends_it(stop, want):
    body, _ = sent_by_the_client(model="m", messages=[{"role": "user", "content": "Hi"}], stop=stop)
    assert to_spec(parse_body(json.dumps(body).encode()), "r").stop == want


@pytest.mark.parametrize("stop, needle", [
    ("", "stop[0] must be a string of 1 to 64 characters, found 0"), (["a"] * 5, "stop holds 5 strings"),
    (["ok", "y" * 65], "stop[1] must be a string of 1 to 64 characters, found 65"),
])
def test_bad_stops_are_refused_at_the_edge_naming_the_field(stop, needle):
    from services.serve.validate import validate_request
    from tests.unit.serve import CFG

    spec = to_spec(parse_body(json.dumps({"messages": [{"role": "user", "content": "x"}], "stop": stop}).encode()),
                   "r")
    with pytest.raises(InvalidInput) as e:
        validate_request(spec, CFG, "r", sampling_prefix="")
    assert needle in str(e.value)


def test_the_client_reads_which_stop_string_ended_the_answer():
    reply = pb.GenerateResponse(answer="A dog", finish_reason=pb.STOP, stop_string=" barks", request_id="r2")
    out = client(lambda r: httpx.Response(200, json=completion_body(reply, "m", 1))).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stop=" barks")
    assert (out.choices[0].finish_reason, out.choices[0].stop_reason) == ("stop", " barks")
    assert final_chunk(reply, "m", 1)["choices"][0]["stop_reason"] == " barks"
    assert completion_body(REPLY, "m", 1)["choices"][0]["stop_reason"] is None  # the model's end of turn


def test_defaults_uri_and_ensemble():
    body, _ = sent_by_the_client(model="a+b", max_tokens=12, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Hi"}, {"type": "audio_url", "audio_url": {"url": "s3://b/ok/x.wav"}}]}])
    spec = to_spec(parse_body(json.dumps(body).encode()), "r")
    assert spec.ensemble_adapter_ids == ("a", "b") and spec.adapter_id == "" and spec.audio_uri == "s3://b/ok/x.wav"
    assert (spec.max_tokens, spec.max_thinking_tokens, spec.temperature, spec.system_prompt) == (12, 0, None, None)
    text_only = to_spec(parse_body(b'{"messages": [{"role": "user", "content": "Hello"}]}'), "r")
    assert text_only.prompt == "Hello" and text_only.audio_bytes is None and text_only.adapter_id == ""
    assert not text_only.no_thinking


def test_a_thinking_budget_of_0_answers_without_reasoning():
    spec = to_spec(parse_body(b'{"messages": [{"role": "user", "content": "x"}], "thinking_token_budget": 0}'), "r")
    assert spec.no_thinking and spec.max_thinking_tokens == 0
    assert validate_request(spec, CFG, "r").llm.max_thinking_tokens == 0


@pytest.mark.parametrize("body, needle", [
    (b"{nope", "not JSON"),
    (b'{"messages": []}', "messages"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}', "messages.0.role"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', "n must be 1"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stop": [3]}', "stop"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}', "max_completion_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "thinking_token_budget": -2}', "thinking_token_budget must be"),
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', "one user"),
    (b'{"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%%"}}]}]}',
     "messages.0.content.0.input_audio.data is not valid base64"),
    (b'{"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": '
     b'{"data": "AA==", "format": "aiff"}}]}]}', "format must be one of"),
    (b'{"messages": [{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": "s3://a"}},'
     b'{"type": "audio_url", "audio_url": {"url": "s3://b"}}]}]}', "at most one clip"),
])
def test_bad_bodies_name_the_field(body, needle):
    with pytest.raises(InvalidInput, match=needle):
        to_spec(parse_body(body), "r")


def test_the_client_reads_our_answer_reasoning_and_usage():
    out = client(lambda r: httpx.Response(200, json=completion_body(REPLY, "alarm-ca", 1))).chat.completions.create(
        model="alarm-ca", messages=[{"role": "user", "content": "x"}])
    msg = out.choices[0].message
    assert (msg.content, msg.reasoning, out.choices[0].finish_reason) == ("A dog barks.", "I hear barking.", "stop")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (40, 9, 49)
    assert out.usage.completion_tokens_details.reasoning_tokens == 5
    assert out.usage.prompt_tokens_details.audio_tokens == 25 and out.id == "chatcmpl-r1"


def test_the_client_reads_our_stream():
    events = [sse(chunk("r1", "m", 1, {"role": "assistant", "content": ""})),
              sse(chunk("r1", "m", 1, {"reasoning": "I hear "})), sse(chunk("r1", "m", 1, {"reasoning": "barking."})),
              sse(chunk("r1", "m", 1, {"content": "A dog "})), sse(chunk("r1", "m", 1, {"content": "barks."})),
              sse(final_chunk(REPLY, "m", 1)), sse("[DONE]")]
    stream = client(lambda r: httpx.Response(200, content=b"".join(events),
                                             headers={"content-type": "text/event-stream"})).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    chunks = list(stream)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert (reasoning, content) == (REPLY.reasoning, REPLY.answer)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens == 9


def test_the_client_raises_our_errors_by_status():
    def handler(code):
        return lambda r: httpx.Response(code, json=error_body("prompt is empty", code, "INVALID_ARGUMENT"))

    for code, kind in [(400, openai.BadRequestError), (401, openai.AuthenticationError),
                       (429, openai.RateLimitError), (503, openai.InternalServerError)]:
        with pytest.raises(kind) as e:
            client(handler(code)).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == code and "prompt is empty" in str(e.value)


def test_models_list_reads_as_openai_models():
    models = [pb.Model(id="alarm-ca", encoders=["whisper"], base_model="tiny://qwen3", is_default=True)]
    page = client(lambda r: httpx.Response(200, json=models_body(models, 5))).models.list()
    assert [m.id for m in page.data] == ["alarm-ca"] and page.data[0].root == "tiny://qwen3"
