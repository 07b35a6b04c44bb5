"""The serving pipeline without Ray: the fusion and LLM stages and the responses (validation is `validate.py`, the
status table `status.py`).

    parsed = parse_request(pb_request, cfg, request_id)           # validate.py: checks, decodes audio (InvalidInput)
    feats = extract_features("whisper", parsed.audio, feature_dim=encoder.feature_dim)  # checkpoint's width
    states = encode_clips(encoder, "whisper", [feats])             # per encoder
    block = fusion.fuse(adapter, {"whisper": states, ...})         # (S_a, D_llm)
    async for ev in llm.stream(parsed.llm, [block]): ...           # reasoning/answer deltas, then Final

The Serve deployments in `deployments.py` are thin wrappers over these classes, and `LocalPipeline` chains them
in one process (the in-process baseline of bench/serve.py and the reference in tests), so both paths run the same
code. Every error a client can cause is one of `alarm.errors`; `status.status_of` maps them to status codes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np
import torch

from alarm.checkpoints import resolve_checkpoint
from alarm.config import ModelConfig, ServeConfig
from alarm.errors import ContextOverflow, InvalidInput
from alarm.llm.backends import GenerationParams, GenerationResult, StreamEvent
from alarm.model.audio_adapter import AudioAdapter, build_audio_adapter
from alarm.model.checkpoint import check_fit, load_adapter, read_adapter_config
from alarm.model.llm import load_llm, load_tokenizer, resolve_llm
from alarm.model.prompt import PromptBuilder
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.validate import LLMRequest

log = logging.getLogger(__name__)


# -- stage 2: fusion-compressor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioBlock:
    """One adapter's LLM input vectors for one clip `(S_a, D_llm)`, with the stage times that produced it."""

    embeds: np.ndarray
    encode_ms: float
    fusion_ms: float


class FusionCore:
    """The adapter checkpoints a server offers: validated at start-up, weights loaded on demand.

    Every adapter must fit the served model (`alarm.model.checkpoint.fit_problems`): it reads states this server's
    encoders produce, and its LLM width is the served LLM's. An untrained adapter is built from the served model.
    """

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.folders: dict[str, str | None] = {}
        self.configs: dict[str, ModelConfig] = {}
        for aid, spec in cfg.adapters.items():
            if spec.checkpoint is None:
                self.folders[aid], self.configs[aid] = None, cfg.model
            else:
                folder = str(resolve_checkpoint(spec.checkpoint))
                self.folders[aid], self.configs[aid] = folder, read_adapter_config(folder)
                check_fit(self.configs[aid], cfg.model, f"adapter {aid!r} ({spec.checkpoint}) cannot run on this "
                          "server's model", "serve it with a model whose LLM and encoders match the adapter's "
                          "(its model_config.json), or serve another adapter")

    @property
    def catalog(self) -> dict[str, tuple[str, ...]]:
        """adapter id -> the encoders it reads."""
        return {aid: tuple(c.encoders) for aid, c in self.configs.items()}

    def load(self, adapter_id: str) -> AudioAdapter:
        if adapter_id not in self.configs:
            raise InvalidInput(f"unknown adapter {adapter_id!r}; this server has {sorted(self.configs)}")
        folder = self.folders[adapter_id]
        if folder is None:
            with torch.random.fork_rng(devices=[]):  # the init seed must not reset the process's RNG
                torch.manual_seed(self.cfg.adapters[adapter_id].seed)
                adapter = build_audio_adapter(self.cfg.model)
        else:
            adapter, _ = load_adapter(folder)
        log.info("adapter %s loaded from %s", adapter_id, folder or f"seed {self.cfg.adapters[adapter_id].seed}")
        return adapter.to(self.device).eval()

    @torch.inference_mode()
    def fuse(self, adapter: AudioAdapter, states: dict[str, np.ndarray]) -> np.ndarray:
        """Per-encoder states `(L, T, D)` of one clip -> the audio block `(S_a, D_llm)` float32."""
        missing = set(adapter.encoders) - set(states)
        if missing:
            raise InvalidInput(f"fusion needs states of encoders {sorted(missing)}")
        x = {k: torch.from_numpy(states[k])[:, None].to(self.device) for k in adapter.encoders}  # (L, 1, T, D)
        lens = {k: torch.tensor([v.shape[2]], device=self.device) for k, v in x.items()}
        embeds, out_lens = adapter(x, lens)
        return adapter.split(embeds, out_lens)[0].float().cpu().numpy()


# -- stage 3: the LLM -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Final:
    """The end of one request at the LLM stage."""

    result: GenerationResult
    audio_tokens: int
    encode_ms: float
    fusion_ms: float  # adapter + fusion, plus prompt assembly in the LLM stage


class LLMCore:
    """The frozen LLM behind one generation backend, with prompt assembly and admission control.

    Build it with `await LLMCore.create(cfg)` on the event loop that will serve it (vLLM binds to that loop).
    """

    def __init__(self, cfg: ServeConfig, backend, builder: PromptBuilder):
        self.cfg, self.backend, self.builder = cfg, backend, builder
        self.max_model_len = cfg.llm.max_model_len

    @classmethod
    async def create(cls, cfg: ServeConfig, warm_up: bool = True, engine_stats: bool = False) -> LLMCore:
        """engine_stats: export vLLM's engine statistics as Ray metrics (services.engines.stats); in Ray only."""
        folder = resolve_llm(cfg.model.llm)
        tok = load_tokenizer(folder)
        e = cfg.llm
        if e.backend == "vllm":
            from services.engines.stats import ray_stat_loggers
            from services.engines.vllm_async import VLLMAsyncBackend

            backend = VLLMAsyncBackend(
                folder, max_model_len=e.max_model_len, dtype=cfg.model.llm.dtype, max_num_seqs=e.max_num_seqs,
                gpu_memory_utilization=e.gpu_memory_utilization, tensor_parallel_size=e.tensor_parallel_size,
                enable_prefix_caching=e.enable_prefix_caching, enforce_eager=e.enforce_eager,
                stat_loggers=ray_stat_loggers() if engine_stats else None,
            )
            embed = backend.embed_tokens
        else:
            from alarm.llm.backends import HFBackend

            device = "cuda" if torch.cuda.is_available() else "cpu"
            llm = load_llm(folder, cfg.model.llm, device=device)
            embed = llm.get_input_embeddings()
            backend = HFBackend(llm, tok, embed, max_model_len=e.max_model_len)
        core = cls(cfg, backend, PromptBuilder(tok, embed, max_length=e.max_model_len))
        if warm_up:  # the first request must not pay for lazy initialisation inside the engine
            try:
                await core.generate(LLMRequest("warm-up", "Hello", None, 1, -1, 0.0, 1.0, 0, None), [])
            except BaseException:
                await core.aclose()  # never leave an engine process behind a failed start
                raise
        return core

    def prepare(self, req: LLMRequest, blocks: Sequence[AudioBlock]) -> tuple[torch.Tensor, GenerationParams]:
        """Prompt embeddings `(S, D)` and the resolved parameters; ContextOverflow if they cannot fit."""
        audio = [torch.from_numpy(np.asarray(b.embeds)) for b in blocks]
        with torch.inference_mode():
            if len(audio) >= 2:
                prompt = self.builder.build_ensemble(req.prompt, audio, req.system)
            else:
                prompt = self.builder.build(req.prompt, audio[0] if audio else None, req.system)
        room = self.max_model_len - prompt.length
        if room <= 0:
            raise ContextOverflow(
                f"the prompt takes {prompt.length} positions (audio included), at or over this engine's context "
                f"of {self.max_model_len}; shorten the audio or the prompt"
            )
        if req.max_tokens is not None and req.max_tokens > room:
            raise ContextOverflow(
                f"prompt ({prompt.length} positions) + max_tokens ({req.max_tokens}) exceeds the engine's context "
                f"of {self.max_model_len}; ask for at most {room} new tokens, or leave max_tokens 0 for the default"
            )
        max_tokens = req.max_tokens or min(self.cfg.defaults.max_tokens, room)
        params = GenerationParams(
            max_tokens=max_tokens, max_thinking_tokens=req.max_thinking_tokens, temperature=req.temperature,
            top_p=req.top_p, top_k=req.top_k, seed=req.seed, stop=req.stop,
        )
        return prompt.embeds.detach(), params

    async def stream(self, req: LLMRequest, blocks: Sequence[AudioBlock]) -> AsyncIterator[StreamEvent | Final]:
        """Reasoning/answer StreamEvents, then one Final. Closing the iterator early aborts the engine request."""
        t0 = time.perf_counter()
        embeds, params = self.prepare(req, blocks)
        prepare_ms = (time.perf_counter() - t0) * 1e3
        # the engine's id is ours, unique per call: clients may reuse their request_id (it is theirs to choose)
        engine_id = f"{req.request_id}-{uuid.uuid4().hex[:8]}"
        # the time limit also ends requests whose caller is gone (an ingress replica that died): closing the stream
        # aborts the engine request. Checked per event: a request Serve routes here runs at once (no engine queue).
        deadline = None if req.timeout_s is None else time.monotonic() + req.timeout_s
        async with aclosing(self.backend.stream(embeds, params, request_id=engine_id)) as events:
            async for ev in events:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"request {req.request_id} passed the server's {req.timeout_s:g} s")
                if ev.kind == "final":
                    yield Final(ev.result, sum(int(np.asarray(b.embeds).shape[0]) for b in blocks),
                                max((b.encode_ms for b in blocks), default=0.0),
                                max((b.fusion_ms for b in blocks), default=0.0) + prepare_ms)
                else:
                    yield ev

    async def generate(self, req: LLMRequest, blocks: Sequence[AudioBlock]) -> Final:
        async with aclosing(self.stream(req, blocks)) as events:
            async for ev in events:
                if isinstance(ev, Final):
                    return ev
        raise RuntimeError("the backend stream ended without a final result")

    def num_unfinished(self) -> int:
        """Requests still held by the engine (running or waiting)."""
        if hasattr(self.backend, "num_unfinished"):
            return self.backend.num_unfinished()
        return len(getattr(self.backend, "_inflight", ()))

    def dead(self) -> bool:
        engine = getattr(self.backend, "engine", None)
        return bool(getattr(engine, "errored", False))

    async def aclose(self) -> None:
        if hasattr(self.backend, "aclose"):
            await self.backend.aclose()


# -- responses --------------------------------------------------------------------------------------------------


FINISH = {"stop": pb.STOP, "length": pb.LENGTH, "aborted": pb.ABORTED}


def response_pb(final: Final, request_id: str, return_reasoning: bool, arrival: float,
                decode_ms: float) -> pb.GenerateResponse:
    """The GenerateResponse for a finished request. arrival: time.time() when the request reached the server."""
    r = final.result
    total_ms = (time.time() - arrival) * 1e3
    # durations only (the stages may run on other nodes, with other clocks): the first token came
    # (decode_ms - first_token_ms) before the end of decoding, which is (about) the end of the request
    first = None if r.first_token_ms is None else max(0.0, total_ms - (r.decode_ms - r.first_token_ms))
    return pb.GenerateResponse(
        answer=r.answer,
        reasoning=r.reasoning if return_reasoning else "",
        reasoning_complete=r.reasoning_complete,
        finish_reason=FINISH.get(r.finish_reason, pb.FINISH_REASON_UNSPECIFIED),
        usage=pb.Usage(prompt_tokens=r.n_prompt, audio_tokens=final.audio_tokens,
                       reasoning_tokens=r.n_reasoning_tokens, answer_tokens=r.n_answer_tokens,
                       total_tokens=r.n_tokens),
        timings=pb.Timings(decode_ms=r.decode_ms, encode_ms=decode_ms + final.encode_ms, fusion_ms=final.fusion_ms,
                           first_token_ms=first or 0.0, total_ms=total_ms),
        request_id=request_id,
        thinking_truncated=r.thinking_truncated,
        stop_string=r.stop_string or "",
    )


def stream_pb(ev: StreamEvent, return_reasoning: bool) -> pb.GenerateStreamResponse | None:
    if ev.kind == "reasoning":
        return pb.GenerateStreamResponse(reasoning_delta=ev.text) if return_reasoning else None
    return pb.GenerateStreamResponse(answer_delta=ev.text)
