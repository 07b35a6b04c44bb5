"""The serving pipeline in one process, without Ray or gRPC: the same validation, encoders, fusion and LLM code
as the Serve deployments, called directly. It is the in-process baseline of bench/serve.py and the reference the
serving tests compare the distributed path with.

    pipe = await LocalPipeline.create(load_config(ServeConfig, "tiny", section="serve"))
    reply = await pipe.generate(pb.GenerateRequest(audio_bytes=..., prompt="What do you hear?"))
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator

import torch

from alarm.audio.features import extract_features
from alarm.config import ServeConfig
from services.engines.encoders import encode_clips, load_frozen_encoder
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.core import AudioBlock, Final, FusionCore, LLMCore, response_pb, stream_pb
from services.serve.validate import check_adapters, parse_request, request_id_of


class LocalPipeline:
    """Every stage in this process; concurrent requests share the LLM engine but not encoder batches."""

    def __init__(self, cfg: ServeConfig, encoders: dict, fusion: FusionCore, llm: LLMCore):
        self.cfg, self.encoders, self.fusion, self.llm = cfg, encoders, fusion, llm
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._adapters: dict[str, object] = {}
        self._lock = threading.Lock()  # concurrent requests run _blocks in threads

    @classmethod
    async def create(cls, cfg: ServeConfig) -> LocalPipeline:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        encoders = {n: load_frozen_encoder(n, e, device) for n, e in cfg.model.encoders.items()}
        return cls(cfg, encoders, FusionCore(cfg), await LLMCore.create(cfg))

    async def stream(self, req: pb.GenerateRequest) -> AsyncIterator[pb.GenerateStreamResponse]:
        arrival = time.time()
        rid = request_id_of(req, uuid.uuid4().hex)
        parsed = await asyncio.to_thread(parse_request, req, self.cfg, rid)
        blocks = await asyncio.to_thread(self._blocks, parsed) if parsed.audio is not None else []
        async for ev in self.llm.stream(parsed.llm, blocks):
            if isinstance(ev, Final):
                yield pb.GenerateStreamResponse(
                    final=response_pb(ev, rid, parsed.return_reasoning, arrival, parsed.decode_ms))
            elif (msg := stream_pb(ev, parsed.return_reasoning)) is not None:
                yield msg

    async def generate(self, req: pb.GenerateRequest) -> pb.GenerateResponse:
        async for msg in self.stream(req):
            if msg.WhichOneof("event") == "final":
                return msg.final
        raise RuntimeError("the pipeline ended without a final response")

    def _blocks(self, parsed) -> list[AudioBlock]:
        catalog = self.fusion.catalog
        check_adapters(parsed.adapters, catalog)
        t0 = time.perf_counter()
        states = {}
        for e in sorted({e for a in parsed.adapters for e in catalog[a]}):
            feats = extract_features(e, parsed.audio, self.cfg.model.audio.resample_quality,
                                     self.encoders[e].feature_dim)
            states[e] = encode_clips(self.encoders[e], e, [feats], self.device)[0]
        encode_ms = (time.perf_counter() - t0) * 1e3
        blocks = []
        for a in parsed.adapters:
            with self._lock:
                if a not in self._adapters:
                    self._adapters[a] = self.fusion.load(a)
            t1 = time.perf_counter()
            block = self.fusion.fuse(self._adapters[a], {e: states[e] for e in catalog[a]})
            blocks.append(AudioBlock(block, encode_ms, (time.perf_counter() - t1) * 1e3))
        return blocks

    async def aclose(self) -> None:
        await self.llm.aclose()
