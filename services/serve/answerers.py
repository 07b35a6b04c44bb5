"""The evaluation `Answerer`s (alarm.eval.runner.Answerer): the serving pipeline in this process, a running server
over gRPC, or any OpenAI-compatible server (`openai_answerer.py`).

    answerer = await LocalAnswerer.create(load_config(ServeConfig, "tiny", [...], section="serve"))
    answerer = GrpcAnswerer("127.0.0.1:9000", concurrency=8)

Both send the same `GenerateRequest` (`make_request`) through the same validation, encoders, fusion and LLM
code, so in-process and served scores agree. `python -m alarm.eval` builds one with `build_answerer`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from alarm.config import ServeConfig
from services.serve._proto.alarm.v1.alarm_pb2 import FinishReason
from services.serve.client import AlarmClient, make_request


class LocalAnswerer:
    """`services.serve.local.LocalPipeline` in this process: no Ray, no gRPC."""

    def __init__(self, pipe, temperature: float | None = None):
        self.pipe, self.temperature = pipe, temperature

    @classmethod
    async def create(cls, cfg: ServeConfig, temperature: float | None = None) -> LocalAnswerer:
        from services.serve.local import LocalPipeline  # torch, the encoders, vLLM: only when inference runs

        return cls(await LocalPipeline.create(cfg), temperature)

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        req = await asyncio.to_thread(  # reads a local audio file: off the event loop
            make_request, audio, prompt, system_prompt=system_prompt, max_thinking_tokens=max_thinking_tokens,
            max_tokens=max_tokens, temperature=self.temperature, seed=seed, return_reasoning=True)
        reply = await self.pipe.generate(req)
        return reply.answer, reply.reasoning, FinishReason.Name(reply.finish_reason)

    async def aclose(self) -> None:
        await self.pipe.aclose()


async def build_answerer(target: str | None, serve: ServeConfig | None, *, concurrency: int = 8,
                         temperature: float | None = None, timeout_s: float = 900.0, model: str | None = None,
                         tls: bool = False, ca: str | None = None, token: str | None = None):
    """An OpenAI-API answerer for `target` openai://host:port/v1, a gRPC one for host:port, else the in-process
    pipeline of the serve config `serve`. model: the adapter id (gRPC) or model name (OpenAI API)."""
    if target and target.startswith("openai://"):
        from services.serve.openai_answerer import OpenAIAnswerer

        return await OpenAIAnswerer.create(target, model=model, token=token, tls=tls, ca=ca, temperature=temperature,
                                           concurrency=concurrency, timeout_s=timeout_s)
    if target:
        return GrpcAnswerer(target, concurrency=concurrency, temperature=temperature, timeout_s=timeout_s,
                            adapter_id=model or "", tls=tls, ca=ca, token=token)
    return await LocalAnswerer.create(serve, temperature)


class GrpcAnswerer:
    """`AlarmClient` (synchronous) on a thread pool of `concurrency` workers."""

    def __init__(self, target: str, *, concurrency: int = 8, temperature: float | None = None,
                 timeout_s: float = 900.0, adapter_id: str = "", tls: bool = False, ca: str | None = None,
                 token: str | None = None):
        self.client = AlarmClient(target, timeout_s=timeout_s, tls=tls, ca=ca, token=token)
        self.temperature, self.adapter_id = temperature, adapter_id
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="alarm-eval")

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        def call():
            return self.client.generate(
                audio, prompt, system_prompt=system_prompt, max_thinking_tokens=max_thinking_tokens,
                max_tokens=max_tokens, temperature=self.temperature, seed=seed, return_reasoning=True,
                adapter_id=self.adapter_id)

        reply = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        return reply.answer, reply.reasoning, FinishReason.Name(reply.finish_reason)

    async def aclose(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
