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
import contextvars
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
from services.serve.heap import free_memory
from services.serve.metrics import ServeMetrics
from services.serve.validate import LLMRequest

_loaded = contextvars.ContextVar("adapter_loaded", default=False)  # this request's adapter came from its checkpoint


def _use_assigned_cpus() -> None:
    """torch threads = the replica's logical CPUs (>= 1), not every core of the node."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:
        cpus = 1
    torch.set_num_threads(max(1, round(cpus)))


class EncoderStage:
    """One frozen encoder. `encode(wave)` runs the front-end for its clip, then waits for a batch: concurrent
    requests share one padded forward (@serve.batch)."""

    def __init__(self, name: str, encoder: EncoderConfig, resample_quality: str, max_batch_size: int,
                 batch_wait_timeout_s: float):
        self.name, self.quality = name, resample_quality
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = load_frozen_encoder(name, encoder, self.device)
        # one batch queue per stage: @serve.batch on the method would share one queue between the stages of a
        # replica (deployments.colocate), batching one encoder's features with another's
        self._forward = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)(
            self._forward_batch)
        # one forward on silence before Serve routes here: lazy kernels and allocations are not a client's cost
        silence = Waveform(np.zeros(16000, dtype=np.float32), 16000)
        encode_clips(self.encoder, name, [self._features(silence)], self.device)
        self.batch_sizes: Counter[int] = Counter()
        self.metrics = ServeMetrics.create("alarm_encoder_batch_size", "alarm_encoder_ms")
        self.tags = {"encoder": name}

    async def encode(self, wave: Waveform) -> tuple[np.ndarray, float]:
        """-> tapped states `(L, T, D)` float32 and the milliseconds spent (front-end + forward)."""
        t0 = time.perf_counter()
        feats = await asyncio.to_thread(self._features, wave)
        states = await self._forward(feats)
        ms = (time.perf_counter() - t0) * 1e3
        self.metrics["alarm_encoder_ms"].observe(ms, tags=self.tags)
        return states, ms

    async def encode_alone(self, wave: Waveform) -> tuple[np.ndarray, float]:
        """`encode` for this clip alone (front-end and forward in one worker thread), without waiting for a batch."""
        t0 = time.perf_counter()
        states = await asyncio.to_thread(lambda: encode_clips(self.encoder, self.name, [self._features(wave)],
                                                              self.device)[0])
        self.batch_sizes[1] += 1  # counted on the event loop, never from two threads at once
        ms = (time.perf_counter() - t0) * 1e3
        self.metrics["alarm_encoder_ms"].observe(ms, tags=self.tags)
        return states, ms

    def _features(self, wave: Waveform) -> tuple[torch.Tensor, int]:
        """The front-end, as wide as the loaded checkpoint takes (e.g. 80 mel bins for Whisper tiny.en)."""
        return extract_features(self.name, wave, self.quality, self.encoder.feature_dim)

    async def _forward_batch(self, feats: list[tuple[torch.Tensor, int]]) -> list[np.ndarray]:
        self.batch_sizes[len(feats)] += 1
        self.metrics["alarm_encoder_batch_size"].observe(len(feats), tags=self.tags)
        return await asyncio.to_thread(encode_clips, self.encoder, self.name, feats, self.device)


class FusionStage:
    """The fusion-compressor: encoder states -> one adapter's audio block. Adapter checkpoints are kept in an LRU
    of `max_adapters_per_replica` (@serve.multiplexed); the default adapter stays loaded."""

    def __init__(self, cfg: ServeConfig):
        self.core = FusionCore(cfg)
        self.metrics = ServeMetrics.create("alarm_fusion_ms", "alarm_adapter_cache")

        async def load(adapter_id: str):  # a plain function: Serve keeps its LRU as an attribute of it
            _loaded.set(True)  # Serve awaits this in the caller's task: fuse() sees the miss in its context
            return await asyncio.to_thread(self.core.load, adapter_id)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=cfg.max_adapters_per_replica)(load)
        self.default = self.core.load(cfg.default_adapter)  # ready = the default adapter is in memory

    async def fuse(self, adapter_id: str, encoded: dict[str, tuple[np.ndarray, float]]) -> AudioBlock:
        """encoder name -> (states, encode_ms) as the encoder stages return them."""
        aid = adapter_id or self.core.cfg.default_adapter
        _loaded.set(False)
        adapter = self.default if aid == self.core.cfg.default_adapter else await self.get_adapter(aid)
        self.metrics["alarm_adapter_cache"].inc(tags={"adapter": aid, "result": "miss" if _loaded.get() else "hit"})
        t0 = time.perf_counter()
        states = {k: v[0] for k, v in encoded.items()}
        block = await asyncio.to_thread(self.core.fuse, adapter, states)
        ms = (time.perf_counter() - t0) * 1e3
        self.metrics["alarm_fusion_ms"].observe(ms, tags={"adapter": aid})
        return AudioBlock(block, max(v[1] for v in encoded.values()), ms)


@serve.deployment
class EncoderServer:
    """One frozen encoder per replica (an `EncoderStage`)."""

    def __init__(self, name: str, encoder: dict, resample_quality: str, max_batch_size: int,
                 batch_wait_timeout_s: float, free: str = "trim"):
        """free: `deployments.free_memory` (heap.py)."""
        _use_assigned_cpus()
        free_memory(free)  # resident memory returns to the working set after a burst (heap.py)
        self.stage = EncoderStage(name, EncoderConfig.model_validate(encoder), resample_quality, max_batch_size,
                                  batch_wait_timeout_s)

    async def encode(self, wave: Waveform) -> tuple[np.ndarray, float]:
        return await self.stage.encode(wave)

    def stats(self) -> dict:
        """Batches run so far, by size (bench/serve.py reports the distribution under load)."""
        return {"batch_sizes": dict(self.stage.batch_sizes)}


@serve.deployment
class FusionServer:
    """The fusion-compressor (a `FusionStage`); the adapter is the request's `multiplexed_model_id`, so Serve
    routes a request to a replica that holds its adapter."""

    def __init__(self, cfg: dict):
        _use_assigned_cpus()
        c = ServeConfig.model_validate(cfg)
        free_memory(c.deployments.free_memory)  # resident memory returns to the working set after a burst (heap.py)
        self.stage = FusionStage(c)

    def catalog(self) -> dict[str, tuple[str, ...]]:
        return self.stage.core.catalog

    async def fuse(self, **encoded: tuple[np.ndarray, float]) -> AudioBlock:
        """encoder name -> (states, encode_ms) as returned by the encoder deployments."""
        return await self.stage.fuse(serve.get_multiplexed_model_id(), encoded)


@serve.deployment
class AudioServer:
    """`deployments.colocate`: every encoder stage and the fusion stage in one replica, so a request makes one Serve
    call for its audio blocks instead of one per encoder plus one per adapter, and encoder states never leave the
    process. For small machines (the tiny preset), where each call's cost is a large share of the work; cluster
    presets keep a deployment per encoder and a separate fusion, which scale and place independently."""

    def __init__(self, cfg: dict, per_request: bool = False):
        """per_request: each encoder runs this request's clip alone in a worker thread, without batching across
        requests (`colocate: all`, where the engine shares the replica). On 2 cores, concurrency 16, the same
        replica made 3.6-3.9 requests/s with batches and 4.8-5.0 without: a batch finishes every request's audio
        at about the same time, and the engine then decodes them while the encoders have nothing to do."""
        _use_assigned_cpus()
        c = ServeConfig.model_validate(cfg)
        free_memory(c.deployments.free_memory)  # resident memory returns to the working set after a burst (heap.py)
        d = c.deployments
        self.encoders = {n: EncoderStage(n, e, c.model.audio.resample_quality, d.for_encoder(n).max_batch_size,
                                         d.for_encoder(n).batch_wait_timeout_s) for n, e in c.model.encoders.items()}
        self.fusion = FusionStage(c)
        self.per_request = per_request

    def catalog(self) -> dict[str, tuple[str, ...]]:
        return self.fusion.core.catalog

    async def blocks(self, wave: Waveform, adapters: list[str]) -> list[AudioBlock]:
        """One audio block per adapter id (in order), each encoder run once for all of them."""
        catalog = self.catalog()
        needed = sorted({e for a in adapters for e in catalog[a]})
        runs = (self.encoders[e].encode_alone(wave) if self.per_request else self.encoders[e].encode(wave)
                for e in needed)
        encoded = dict(zip(needed, await asyncio.gather(*runs), strict=True))
        return list(await asyncio.gather(*(self.fusion.fuse(a, {e: encoded[e] for e in catalog[a]})
                                           for a in adapters)))

    def stats(self) -> dict:
        return {"batch_sizes": {n: dict(s.batch_sizes) for n, s in self.encoders.items()}}


@serve.deployment
class LLMServer:
    """The frozen LLM: one engine per replica (vLLM AsyncLLM with prompt_embeds, or transformers), built and
    warmed up in the replica's event loop before Serve routes to it."""

    async def __init__(self, cfg: dict):
        _use_assigned_cpus()
        c = ServeConfig.model_validate(cfg)
        free_memory(c.deployments.free_memory)  # resident memory returns to the working set after a burst (heap.py)
        self.core = await LLMCore.create(c, engine_stats=True)  # Ray metrics

    async def generate(self, req: LLMRequest, *blocks: AudioBlock | list[AudioBlock]) -> Final:
        """blocks: one AudioBlock per adapter (from the fusion deployment), or one list of them (AudioServer)."""
        return await self.core.generate(req, _flat(blocks))

    async def stream(self, req: LLMRequest, *blocks: AudioBlock | list[AudioBlock]) -> AsyncIterator:
        async with aclosing(self.core.stream(req, _flat(blocks))) as events:  # cancelled here = engine request aborted
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


def _flat(blocks) -> list[AudioBlock]:
    return [b for x in blocks for b in (x if isinstance(x, list) else [x])]
