"""The OpenAI-API answerer (alarm.eval target=openai://...): the request it sends and how it reads the reply,
against the official client on a mock transport (no server)."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import openai

from alarm.config import EvalConfig
from alarm.eval.runner import Answerer
from services.serve.openai_answerer import OpenAIAnswerer, audio_part, base_url


def test_target_urls_and_audio_parts(tmp_path):
    assert base_url("openai://h:8000/v1", False) == "http://h:8000/v1"
    assert base_url("openai://h:443", True) == "https://h:443/v1"
    (tmp_path / "a.flac").write_bytes(b"fLaC..")
    assert audio_part(str(tmp_path / "a.flac"))["input_audio"] == {"data": base64.b64encode(b"fLaC..").decode(),
                                                                   "format": "flac"}
    assert audio_part("s3://b/a.wav") == {"type": "audio_url", "audio_url": {"url": "s3://b/a.wav"}}
    base = dict(benchmark="mmau", meta=["m.json"], audio_root="a", out="o")
    assert EvalConfig(**base, target="openai://127.0.0.1:8000/v1").target.startswith("openai://")
    assert EvalConfig(**base, target="127.0.0.1:9000").target == "127.0.0.1:9000"


def test_sends_vllm_field_names_and_reads_the_reasoning(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF..")
    seen = []

    def handler(request: httpx.Request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "other", "object": "model", "created": 0, "owned_by": "x"},
                {"id": "alarm-ca", "object": "model", "created": 0, "owned_by": "x", "default": True}]})
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 0, "model": "alarm-ca",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": "B", "reasoning_content": "hmm"}}]})

    async def go():
        client = openai.AsyncOpenAI(base_url="http://x/v1", api_key="t",
                                    http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        listed = (await client.models.list()).data
        model = next(m.id for m in listed if getattr(m, "default", False))
        answerer = OpenAIAnswerer(client, model, temperature=0.0)
        assert isinstance(answerer, Answerer)
        out = await answerer.answer(str(tmp_path / "a.wav"), "Q?", "SYS", 64, 256, 3)
        bare = await answerer.answer(None, "Q?", None, 0, 0, None)
        await answerer.aclose()
        return out, bare

    out, bare = asyncio.run(go())
    assert out == ("B", "hmm", "LENGTH") and bare[2] == "LENGTH"
    req, bare_req = seen
    assert req["model"] == "alarm-ca" and req["messages"][0] == {"role": "system", "content": "SYS"}
    assert req["messages"][1]["content"][1]["input_audio"]["format"] == "wav"
    assert (req["max_completion_tokens"], req["thinking_token_budget"], req["seed"], req["temperature"]) == (
        256, 64, 3, 0.0)
    assert [m["role"] for m in bare_req["messages"]] == ["user"]
    assert not {"max_completion_tokens", "thinking_token_budget", "seed"} & set(bare_req)
