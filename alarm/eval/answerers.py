"""The two `Answerer`s: the serving pipeline in this process, or a running server over gRPC.

    answerer = await LocalAnswerer.create("tiny", ["adapters.tiny.checkpoint=runs/x/adapter"])
    answerer = GrpcAnswerer("127.0.0.1:9000", concurrency=8)

Both send the same `GenerateRequest` (`alarm.client.make_request`) through the same validation, encoders,
fusion and LLM code, so in-process and served scores agree. The heavy imports (torch, vLLM, grpc, the
protobuf stubs) happen inside these functions: `alarm.eval` itself stays importable without them.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


class LocalAnswerer:
    """`services.serve.local.LocalPipeline` in this process: no Ray, no gRPC."""

    def __init__(self, pipe, temperature: float | None = None):
        self.pipe, self.temperature = pipe, temperature

    @classmethod
    async def create(cls, preset: str, overrides: list[str] = (),
                     temperature: float | None = None) -> LocalAnswerer:
        from alarm.config import ServeConfig, load_config
        from services.serve.local import LocalPipeline

        cfg = load_config(ServeConfig, preset, list(overrides), section="serve")
        return cls(await LocalPipeline.create(cfg), temperature)

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        from alarm.client import make_request
        from services.serve._proto.alarm.v1.alarm_pb2 import FinishReason

        req = await asyncio.to_thread(  # reads a local audio file: off the event loop
            make_request, audio, prompt, system_prompt=system_prompt, max_thinking_tokens=max_thinking_tokens,
            max_tokens=max_tokens, temperature=self.temperature, seed=seed, return_reasoning=True)
        reply = await self.pipe.generate(req)
        return reply.answer, reply.reasoning, FinishReason.Name(reply.finish_reason)

    async def aclose(self) -> None:
        await self.pipe.aclose()


async def build_answerer(target: str | None, serve_preset: str, serve_overrides: list[str], *,
                         concurrency: int = 8, temperature: float | None = None,
                         timeout_s: float = 900.0) -> LocalAnswerer | GrpcAnswerer:
    """A gRPC answerer for `target` (host:port), else the in-process pipeline of the serve preset."""
    if target:
        return GrpcAnswerer(target, concurrency=concurrency, temperature=temperature, timeout_s=timeout_s)
    return await LocalAnswerer.create(serve_preset, serve_overrides, temperature)


class GrpcAnswerer:
    """`alarm.client.AlarmClient` (synchronous) on a thread pool of `concurrency` workers."""

    def __init__(self, target: str, *, concurrency: int = 8, temperature: float | None = None,
                 timeout_s: float = 900.0):
        from alarm.client import AlarmClient

        self.client = AlarmClient(target, timeout_s=timeout_s)
        self.temperature = temperature
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="alarm-eval")

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        from services.serve._proto.alarm.v1.alarm_pb2 import FinishReason

        def call():
            return self.client.generate(
                audio, prompt, system_prompt=system_prompt, max_thinking_tokens=max_thinking_tokens,
                max_tokens=max_tokens, temperature=self.temperature, seed=seed, return_reasoning=True)

        reply = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        return reply.answer, reply.reasoning, FinishReason.Name(reply.finish_reason)

    async def aclose(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
