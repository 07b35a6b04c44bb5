"""The audio stage (deployments.AudioServer) per request (`colocate: all`: each encoder runs one request's clip in a
worker thread) gives the blocks a batched forward gives (`colocate: true` batches across requests)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from alarm.types import Waveform
from services.serve import deployments
from tests.unit.serve import CFG


class Sink:
    def set(self, *a, **k):
        pass

    inc = observe = set


@pytest.fixture(autouse=True)
def no_ray_metrics(monkeypatch):  # Serve's metrics need a replica; what they record is not the subject here
    monkeypatch.setattr(deployments.ServeMetrics, "create", classmethod(lambda cls, *names: {n: Sink() for n in names}))


def waves():
    t = np.arange(24000) / 16000
    return [Waveform((0.2 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000) for f in (220, 660, 1500)]


def test_per_request_blocks_equal_those_of_a_batched_forward():
    """(Serve's @serve.batch needs a replica; the batched reference is the forward it would run on the 3 clips.)"""
    from services.engines.encoders import encode_clips

    stage = deployments.AudioServer.func_or_class(CFG.model_dump(mode="json"), per_request=True)

    async def run():
        return await asyncio.gather(*(stage.blocks(w, [CFG.default_adapter]) for w in waves()))

    got = asyncio.run(run())
    states = {name: encode_clips(enc.encoder, name, [enc._features(w) for w in waves()], enc.device)
              for name, enc in stage.encoders.items()}
    fusion = stage.fusion
    for i, (block,) in enumerate(got):
        want = fusion.core.fuse(fusion.default, {name: states[name][i] for name in stage.encoders})
        np.testing.assert_allclose(block.embeds, want, rtol=1e-4, atol=1e-5)
    assert all(dict(s.batch_sizes) == {1: 3} for s in stage.encoders.values())  # never batched across requests
