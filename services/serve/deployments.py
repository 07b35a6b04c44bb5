"""The Serve deployments behind the gRPC ingress (`ingress.py`): one per frozen encoder, the fusion-compressor, the LLM.

    client --gRPC--> AlarmIngress --+--> encoder-whisper --+
                      (validate,     +--> encoder-w2vbert --+--> fusion (adapter per id) --> llm (vLLM) --> deltas
                       decode audio) +--> ...             --+        @serve.multiplexed          prompt_embeds

Encoder states and audio blocks travel as DeploymentResponses from stage to stage (Serve resolves them in the
downstream replica), so they never pass through the ingress. Each deployment is a thin wrapper over
`services/serve/core.py`; its resources and autoscaling come from the `deployments` section of the serve preset.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing

import numpy as np
import torch
from ray import serve

from alarm.audio.features import extract_features
from alarm.config import EncoderConfig, ServeConfig
from alarm.types import Waveform
from services.engines.encoders import encode_clips, load_frozen_encoder
from services.serve.core import AudioBlock, Final, FusionCore, LLMCore
from services.serve.validate import LLMRequest


def _use_assigned_cpus() -> None:
    """torch threads = the replica's logical CPUs (>= 1), not every core of the node."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:
        cpus = 1
    torch.set_num_threads(max(1, round(cpus)))


@serve.deployment
class EncoderServer:
    """One frozen encoder. `encode(wave)` runs the front-end for its clip, then waits for a batch: concurrent
    requests share one padded forward (@serve.batch)."""

    def __init__(self, name: str, encoder: dict, resample_quality: str, max_batch_size: int,
                 batch_wait_timeout_s: float):
        _use_assigned_cpus()
        self.name, self.quality = name, resample_quality
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = load_frozen_encoder(name, EncoderConfig.model_validate(encoder), self.device)
        self._forward.set_max_batch_size(max_batch_size)
        self._forward.set_batch_wait_timeout_s(batch_wait_timeout_s)
        # one forward on silence before Serve routes here: lazy kernels and allocations are not a client's cost
        silence = Waveform(np.zeros(16000, dtype=np.float32), 16000)
        encode_clips(self.encoder, name, [self._features(silence)], self.device)
        self.batch_sizes: Counter[int] = Counter()

    async def encode(self, wave: Waveform) -> tuple[np.ndarray, float]:
        """-> tapped states `(L, T, D)` float32 and the milliseconds spent (front-end + forward)."""
        t0 = time.perf_counter()
        feats = await asyncio.to_thread(self._features, wave)
        states = await self._forward(feats)
        return states, (time.perf_counter() - t0) * 1e3

    def _features(self, wave: Waveform) -> tuple[torch.Tensor, int]:
        """The front-end, as wide as the loaded checkpoint takes (e.g. 80 mel bins for Whisper tiny.en)."""
        return extract_features(self.name, wave, self.quality, self.encoder.feature_dim)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _forward(self, feats: list[tuple[torch.Tensor, int]]) -> list[np.ndarray]:
        self.batch_sizes[len(feats)] += 1
        return await asyncio.to_thread(encode_clips, self.encoder, self.name, feats, self.device)

    def stats(self) -> dict:
        """Batches run so far, by size (bench/serve.py reports the distribution under load)."""
        return {"batch_sizes": dict(self.batch_sizes)}


@serve.deployment
class FusionServer:
    """The fusion-compressor: encoder states -> one adapter's audio block. Adapter checkpoints are chosen per
    request by `multiplexed_model_id` and kept in an LRU of `max_adapters_per_replica`."""

    def __init__(self, cfg: dict):
        _use_assigned_cpus()
        self.core = FusionCore(ServeConfig.model_validate(cfg))
        async def load(adapter_id: str):  # a plain function: Serve keeps its LRU as an attribute of it
            return await asyncio.to_thread(self.core.load, adapter_id)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=self.core.cfg.max_adapters_per_replica)(load)
        self.default = self.core.load(self.core.cfg.default_adapter)  # ready = the default adapter is in memory

    def catalog(self) -> dict[str, tuple[str, ...]]:
        return self.core.catalog

    async def fuse(self, **encoded: tuple[np.ndarray, float]) -> AudioBlock:
        """encoder name -> (states, encode_ms) as returned by the encoder deployments."""
        aid = serve.get_multiplexed_model_id()
        adapter = self.default if aid in ("", self.core.cfg.default_adapter) else await self.get_adapter(aid)
        t0 = time.perf_counter()
        states = {k: v[0] for k, v in encoded.items()}
        block = await asyncio.to_thread(self.core.fuse, adapter, states)
        return AudioBlock(block, max(v[1] for v in encoded.values()), (time.perf_counter() - t0) * 1e3)


@serve.deployment
class LLMServer:
    """The frozen LLM: one engine per replica (vLLM AsyncLLM with prompt_embeds, or transformers), built and
    warmed up in the replica's event loop before Serve routes to it."""

    async def __init__(self, cfg: dict):
        _use_assigned_cpus()
        self.core = await LLMCore.create(ServeConfig.model_validate(cfg))

    async def generate(self, req: LLMRequest, *blocks: AudioBlock) -> Final:
        return await self.core.generate(req, blocks)

    async def stream(self, req: LLMRequest, *blocks: AudioBlock) -> AsyncIterator:
        async with aclosing(self.core.stream(req, blocks)) as events:  # cancelled here = engine request aborted
            async for ev in events:
                yield ev

    def num_unfinished(self) -> int:
        return self.core.num_unfinished()

    def check_health(self) -> None:
        """Serve restarts a replica whose engine died."""
        if self.core.dead():
            raise RuntimeError("the LLM engine died; this replica must restart")

    async def __del__(self):
        await self.core.aclose()
