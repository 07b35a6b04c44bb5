"""The HTTP side of the ingress (routes.py) over a fake pipeline with the real validation, token check and status
table: routing, OpenAI error bodies with the table's HTTP codes, request ids, the body limit, the event stream."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from starlette.testclient import TestClient

from alarm.config.serve import AuthConfig
from alarm.errors import EngineDead
from alarm.llm.backends import GenerationResult, StreamEvent
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.auth import Tokens
from services.serve.core import Final
from services.serve.routes import handle
from services.serve.validate import validate_request
from tests.unit.serve import CFG, wav

RESULT = GenerationResult(text="I hear a tone.</think>\n\nA tone.", reasoning="I hear a tone.", answer="A tone.",
                          reasoning_complete=True, thinking_truncated=False, finish_reason="stop", n_prompt=30,
                          n_reasoning_tokens=6, n_answer_tokens=3, n_tokens=9, first_token_ms=1.0, decode_ms=5.0)


class FakeIngress:
    """AlarmIngress's surface for routes.py: the real validation, a scripted LLM stage."""

    def __init__(self, tokens: Tokens, fail_after: int | None = None):
        self.cfg, self.tokens, self.fail_after = CFG, tokens, fail_after
        self.specs, self.recorded = [], []

    async def models(self):
        return [pb.Model(id=a, encoders=["whisper"], base_model="tiny://qwen3", is_default=a == CFG.default_adapter)
                for a in sorted(CFG.adapters)]

    async def final(self, spec, rid):
        parsed = validate_request(spec, self.cfg, rid)
        self.specs.append(spec)
        return parsed, Final(RESULT, 25, 1.0, 1.0)

    async def events(self, spec, rid):
        parsed = validate_request(spec, self.cfg, rid)
        self.specs.append(spec)
        yield parsed
        script = [StreamEvent("reasoning", "I hear "), StreamEvent("reasoning", "a tone."),
                  StreamEvent("answer", "A tone.")]
        for i, ev in enumerate(script):
            if self.fail_after is not None and i == self.fail_after:
                raise EngineDead("the engine died")
            yield ev
        yield Final(RESULT, 25, 1.0, 1.0)

    def _record(self, method, code, arrival):
        self.recorded.append((method, code))


def app(ingress) -> TestClient:
    async def asgi(scope, receive, send):
        from starlette.requests import Request

        response = await handle(ingress, Request(scope, receive, send))
        await response(scope, receive, send)

    return TestClient(asgi)


def body(**kw) -> dict:
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav()).decode(), "format": "wav"}}
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, audio]}], **kw}


def test_answer_models_and_request_id():
    ingress = FakeIngress(Tokens(AuthConfig()))
    http = app(ingress)
    r = http.post("/v1/chat/completions", json=body(max_completion_tokens=64), headers={"x-request-id": "abc"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "A tone.", "reasoning": "I hear a tone."}
    assert out["id"] == "chatcmpl-abc" and out["model"] == CFG.default_adapter and out["usage"]["total_tokens"] == 39
    assert ingress.specs[0].max_tokens == 64 and ingress.specs[0].request_id == "abc"
    models = http.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == sorted(CFG.adapters) and models[0]["root"] == "tiny://qwen3"
    assert ingress.recorded == [("ChatCompletions", "OK"), ("Models", "OK")]


def test_stream_is_openai_server_sent_events():
    http = app(FakeIngress(Tokens(AuthConfig())))
    r = http.post("/v1/chat/completions", json=body(stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning", "") for d in deltas) == "I hear a tone."
    assert "".join(d.get("content", "") for d in deltas) == "A tone."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 9


def test_failure_after_the_200_ends_the_stream_with_an_error_event():
    ingress = FakeIngress(Tokens(AuthConfig()), fail_after=2)
    r = app(ingress).post("/v1/chat/completions", json=body(stream=True))
    last = json.loads([line[6:] for line in r.text.splitlines() if line.startswith("data: ")][-1])
    assert last["error"]["code"] == "UNAVAILABLE" and "engine died" in last["error"]["message"]
    assert ingress.recorded == [("ChatCompletions", "UNAVAILABLE")]


@pytest.mark.parametrize("method, path, payload, headers, status, code", [
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, {}, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/chat/completions", body(temperature=3.0), {}, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/chat/completions", body(model="nope+nope"), {}, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/chat/completions", body(stream=True, top_p=0), {}, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/chat/completions", body(), {"x-request-id": "x" * 200}, 400, "INVALID_ARGUMENT"),
    ("get", "/v1/chat/completions", None, {}, 405, "METHOD_NOT_ALLOWED"),
    ("get", "/v2/models", None, {}, 404, "NOT_FOUND"),
])
def test_errors_are_openai_bodies_with_the_tables_http_codes(method, path, payload, headers, status, code):
    http = app(FakeIngress(Tokens(AuthConfig())))
    r = getattr(http, method)(path, headers=headers, **({"json": payload} if payload is not None else {}))
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (status, code) and err["message"] and err["type"], r.text


def test_tokens_and_the_body_limit(tmp_path, monkeypatch):
    f = tmp_path / "tokens"
    f.write_text("good\n")
    http = app(FakeIngress(Tokens(AuthConfig(token_file=str(f)))))
    for headers in ({}, {"authorization": "Bearer bad"}):
        for r in (http.get("/v1/models", headers=headers), http.post("/v1/chat/completions", json=body(),
                                                                      headers=headers)):
            assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    assert http.get("/v1/models", headers={"authorization": "Bearer good"}).status_code == 200
    monkeypatch.setattr("services.serve.routes.BASE64_SLACK", 0)
    small = FakeIngress(Tokens(AuthConfig()))
    small.cfg = CFG.model_copy(update={"limits": CFG.limits.model_copy(update={"max_message_bytes": 3000})})
    r = app(small).post("/v1/chat/completions", json=body())
    assert r.status_code == 413 and r.json()["error"]["code"] == "RESOURCE_EXHAUSTED"


def test_the_fake_matches_the_ingress_surface():
    from services.serve.ingress import AlarmIngress

    cls = AlarmIngress.func_or_class
    for name in ("models", "final", "events", "_record", "__call__"):
        assert callable(getattr(cls, name)), name
    assert asyncio.iscoroutinefunction(cls.final) and not asyncio.iscoroutinefunction(cls.events)
