"""The two Answerers build the serving request the same way and map the reply, checked against fakes of the
in-process pipeline and of the gRPC client (no model, no server)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from alarm.eval.runner import Answerer
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.answerers import GrpcAnswerer, LocalAnswerer


class FakePipeline:
    def __init__(self):
        self.requests, self.closed = [], False

    async def generate(self, req):
        self.requests.append(req)
        return pb.GenerateResponse(answer="<answer>1</answer>", reasoning="hmm", finish_reason=pb.LENGTH)

    async def aclose(self):
        self.closed = True


def test_local_answerer_sends_one_generate_request(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF....")
    pipe = FakePipeline()
    answerer = LocalAnswerer(pipe, temperature=0.0)
    assert isinstance(answerer, Answerer)

    async def go():
        out = await answerer.answer(str(tmp_path / "a.wav"), "Q?", "SYS", 64, 256, 3)
        uri = await answerer.answer("s3://b/a.wav", "Q?", None, 0, 0, None)
        await answerer.aclose()
        return out, uri

    out, _ = asyncio.run(go())
    assert out == ("<answer>1</answer>", "hmm", "LENGTH") and pipe.closed
    req, uri_req = pipe.requests
    assert req.audio_bytes == b"RIFF...." and req.prompt == "Q?" and req.system_prompt == "SYS"
    assert (req.max_thinking_tokens, req.max_tokens, req.return_reasoning) == (64, 256, True)
    assert req.sampling.seed == 3 and req.sampling.HasField("temperature") and req.sampling.temperature == 0.0
    assert uri_req.audio_uri == "s3://b/a.wav" and not uri_req.HasField("system_prompt")
    assert not uri_req.sampling.HasField("seed")


def test_grpc_answerer_calls_the_client_in_threads():
    answerer = GrpcAnswerer("127.0.0.1:1", concurrency=2)  # the channel connects lazily
    calls = []

    def generate(audio, prompt, **kw):
        calls.append((audio, prompt, kw))
        return SimpleNamespace(answer="B", reasoning="", finish_reason=pb.STOP)

    answerer.client.generate = generate

    async def go():
        got = await asyncio.gather(*(answerer.answer(b"x", f"Q{i}", None, 8, 16, 1) for i in range(3)))
        await answerer.aclose()
        return got

    assert asyncio.run(go()) == [("B", "", "STOP")] * 3
    assert sorted(p for _, p, _ in calls) == ["Q0", "Q1", "Q2"]
    assert calls[0][2] == {"system_prompt": None, "max_thinking_tokens": 8, "max_tokens": 16,
                           "temperature": None, "seed": 1, "return_reasoning": True, "adapter_id": ""}
