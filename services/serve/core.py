"""The serving pipeline without Ray: request validation, the three stages, responses and the status-code table.

    parsed = parse_request(pb_request, cfg, request_id)           # validates, decodes audio (InvalidInput)
    feats = extract_features("whisper", parsed.audio, feature_dim=encoder.feature_dim)  # checkpoint's width
    states = encode_clips(encoder, "whisper", [feats])             # per encoder
    block = fusion.fuse(adapter, {"whisper": states, ...})         # (S_a, D_llm)
    async for ev in llm.stream(parsed.llm, [block]): ...           # reasoning/answer deltas, then Final

The Serve deployments in `deployments.py` are thin wrappers over these classes, and `LocalPipeline` chains them
in one process (the in-process baseline of bench/serve.py and the reference in tests), so both paths run the same
code. Every error a client can cause is one of `alarm.errors`; `grpc_status` maps them to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import grpc
import numpy as np
import torch

from alarm import env
from alarm.audio.decode import load_audio
from alarm.checkpoints import resolve_checkpoint
from alarm.config import ModelConfig, ServeConfig
from alarm.errors import (
    AlarmError,
    CheckpointError,
    ContextOverflow,
    EngineDead,
    InvalidInput,
    Overloaded,
    RequestTooLarge,
)
from alarm.llm.backends import GenerationParams, GenerationResult, StreamEvent
from alarm.model.audio_adapter import AudioAdapter, build_audio_adapter
from alarm.model.checkpoint import check_fit, load_adapter, read_adapter_config
from alarm.model.llm import load_llm, load_tokenizer, resolve_llm
from alarm.model.prompt import PromptBuilder
from alarm.types import Waveform
from services.errors import error_chain
from services.serve._proto.alarm.v1 import alarm_pb2 as pb

log = logging.getLogger(__name__)

MAX_REQUEST_ID = 128


# -- requests ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LLMRequest:
    """What the LLM stage needs: text, budget and sampling (max_tokens None = the default, fitted to context)."""

    request_id: str
    prompt: str
    system: str | None
    max_tokens: int | None
    max_thinking_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None


@dataclass(frozen=True)
class Parsed:
    """A validated request. audio None = text only; adapters: () text only, 1 adapter, or >= 2 (ALARM-E)."""

    llm: LLMRequest
    audio: Waveform | None
    adapters: tuple[str, ...]
    return_reasoning: bool
    decode_ms: float


def parse_request(req: pb.GenerateRequest, cfg: ServeConfig, request_id: str) -> Parsed:
    """Validate every field (InvalidInput naming the field and the fix) and decode the audio.

    Unknown adapter ids are checked by the caller against the adapters actually loaded (`FusionCore.catalog`).
    """
    lim, d = cfg.limits, cfg.defaults
    prompt = req.prompt
    if not prompt.strip():
        raise InvalidInput("prompt is empty; send the question or instruction about the audio in `prompt`")
    if len(prompt) > lim.max_prompt_chars:
        raise InvalidInput(f"prompt has {len(prompt)} characters, over this server's limit of {lim.max_prompt_chars}")
    system = (req.system_prompt or None) if req.HasField("system_prompt") else cfg.model.system_prompt
    if system is not None and len(system) > lim.max_prompt_chars:
        raise InvalidInput(f"system_prompt has {len(system)} characters, over the limit of {lim.max_prompt_chars}")
    if req.max_thinking_tokens < -1:
        raise InvalidInput(
            f"max_thinking_tokens must be > 0, 0 (server default {d.max_thinking_tokens}) or -1 (unlimited), "
            f"found {req.max_thinking_tokens}"
        )
    if req.no_thinking and req.max_thinking_tokens:
        raise InvalidInput(f"no_thinking answers without reasoning; leave max_thinking_tokens 0, found "
                           f"{req.max_thinking_tokens}")
    if req.max_tokens < 0:
        raise InvalidInput(f"max_tokens must be > 0 or 0 (server default), found {req.max_tokens}")
    s = req.sampling
    temperature = s.temperature if s.HasField("temperature") else d.temperature
    top_p = s.top_p if s.HasField("top_p") else d.top_p
    top_k = s.top_k if s.HasField("top_k") else d.top_k
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InvalidInput(f"sampling.temperature must be a finite number >= 0 (0 = greedy), found {temperature}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise InvalidInput(f"sampling.top_p must be in (0, 1] (1 = disabled), found {top_p}")
    if top_k < 0:
        raise InvalidInput(f"sampling.top_k must be >= 0 (0 = disabled), found {top_k}")

    ensemble = tuple(req.ensemble_adapter_ids)
    if ensemble and req.adapter_id:
        raise InvalidInput("set either adapter_id or ensemble_adapter_ids, not both")
    if ensemble:
        if len(ensemble) < 2 or len(set(ensemble)) != len(ensemble):
            raise InvalidInput(
                f"ensemble_adapter_ids must name at least 2 distinct adapters, found {list(ensemble)}"
            )
        if len(ensemble) > lim.max_ensemble:
            raise InvalidInput(f"ensemble_adapter_ids names {len(ensemble)} adapters, over the limit of {lim.max_ensemble}")
    adapters = ensemble or (req.adapter_id or cfg.default_adapter,)

    which = req.WhichOneof("audio")
    t0 = time.perf_counter()
    audio = None
    if which == "audio_bytes":
        if not req.audio_bytes:
            raise InvalidInput("audio_bytes is empty; send an encoded audio file (wav, flac, ogg, mp3)")
        if len(req.audio_bytes) > lim.max_message_bytes:  # also when the proxy's own limit was left at 2 GiB
            raise RequestTooLarge(
                f"audio_bytes holds {len(req.audio_bytes)} bytes, over this server's limit of "
                f"{lim.max_message_bytes}; compress the audio (flac, opus) or send an audio_uri"
            )
        audio = load_audio(req.audio_bytes, max_duration_s=cfg.model.audio.max_duration_s)
    elif which == "audio_uri":
        uri = req.audio_uri
        if not any(uri.startswith(p) for p in lim.audio_uri_prefixes) or "/../" in uri:
            allowed = lim.audio_uri_prefixes or "none: audio_uri is off on this server"
            raise InvalidInput(f"audio_uri {uri!r} is not readable by this server (allowed prefixes: {allowed}); "
                               "send audio_bytes instead")
        audio = load_audio(uri, max_duration_s=cfg.model.audio.max_duration_s,
                           storage_options=env.s3_storage_options())
    elif ensemble:
        raise InvalidInput("ensemble_adapter_ids needs audio: send audio_bytes or audio_uri")
    llm = LLMRequest(
        request_id=request_id, prompt=prompt, system=system, max_tokens=req.max_tokens or None,
        max_thinking_tokens=0 if req.no_thinking else req.max_thinking_tokens or d.max_thinking_tokens,
        temperature=temperature,
        top_p=top_p, top_k=top_k, seed=s.seed if s.HasField("seed") else None,
    )
    return Parsed(llm, audio, adapters if audio is not None else (), req.return_reasoning,
                  (time.perf_counter() - t0) * 1e3)


def request_id_of(req: pb.GenerateRequest, fallback: str | None) -> str:
    """The body's request_id if set (validated), else the metadata one, else a new one."""
    rid = req.request_id
    if rid:
        if len(rid) > MAX_REQUEST_ID or not rid.isascii() or not rid.isprintable():
            raise InvalidInput(f"request_id must be at most {MAX_REQUEST_ID} printable ASCII characters")
        return rid
    return fallback or uuid.uuid4().hex


def check_adapters(adapters: Sequence[str], catalog: dict[str, tuple[str, ...]]) -> None:
    unknown = [a for a in adapters if a not in catalog]
    if unknown:
        raise InvalidInput(f"unknown adapter {unknown[0]!r}; this server has {sorted(catalog)}")


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
    async def create(cls, cfg: ServeConfig, warm_up: bool = True) -> LLMCore:
        folder = resolve_llm(cfg.model.llm)
        tok = load_tokenizer(folder)
        e = cfg.llm
        if e.backend == "vllm":
            from services.engines.vllm_async import VLLMAsyncBackend

            backend = VLLMAsyncBackend(
                folder, max_model_len=e.max_model_len, dtype=cfg.model.llm.dtype, max_num_seqs=e.max_num_seqs,
                gpu_memory_utilization=e.gpu_memory_utilization, tensor_parallel_size=e.tensor_parallel_size,
                enable_prefix_caching=e.enable_prefix_caching, enforce_eager=e.enforce_eager,
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
            top_p=req.top_p, top_k=req.top_k, seed=req.seed,
        )
        return prompt.embeds.detach(), params

    async def stream(self, req: LLMRequest, blocks: Sequence[AudioBlock]) -> AsyncIterator[StreamEvent | Final]:
        """Reasoning/answer StreamEvents, then one Final. Closing the iterator early aborts the engine request."""
        t0 = time.perf_counter()
        embeds, params = self.prepare(req, blocks)
        prepare_ms = (time.perf_counter() - t0) * 1e3
        # the engine's id is ours, unique per call: clients may reuse their request_id (it is theirs to choose)
        engine_id = f"{req.request_id}-{uuid.uuid4().hex[:8]}"
        async with aclosing(self.backend.stream(embeds, params, request_id=engine_id)) as events:
            async for ev in events:
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
    )


def stream_pb(ev: StreamEvent, return_reasoning: bool) -> pb.GenerateStreamResponse | None:
    if ev.kind == "reasoning":
        return pb.GenerateStreamResponse(reasoning_delta=ev.text) if return_reasoning else None
    return pb.GenerateStreamResponse(answer_delta=ev.text)


# -- the status-code table --------------------------------------------------------------------------------------


def grpc_status(exc: BaseException, request_id: str) -> tuple[grpc.StatusCode, str]:
    """One table from what went wrong to (status code, message for the client). Never a stack trace, never a
    server path: the details of server-side failures go to the log only."""
    chain = error_chain(exc)
    ours = next((e for e in chain if isinstance(e, AlarmError) and type(e).__module__.startswith("alarm")), None)
    if isinstance(ours, InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT, str(ours)
    if isinstance(ours, ContextOverflow | Overloaded | RequestTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(ours)
    if isinstance(ours, EngineDead):
        return grpc.StatusCode.UNAVAILABLE, f"{ours}; retry later or on another replica"
    if isinstance(ours, CheckpointError):
        return grpc.StatusCode.UNAVAILABLE, "a model checkpoint failed to load on this server; retry later"
    kinds = {type(e).__name__ for e in chain}
    if kinds & {"BackPressureError", "MaxQueuedTokensError"}:
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "the server's queues are full; retry with backoff"
    if kinds & {"DeploymentUnavailableError", "ActorDiedError", "ActorUnavailableError", "RayActorError"}:
        return grpc.StatusCode.UNAVAILABLE, "a model replica is unavailable (restarting); retry later"
    if any(isinstance(e, asyncio.CancelledError) for e in chain) or kinds & {
            "RequestCancelledError", "TaskCancelledError"}:
        return grpc.StatusCode.CANCELLED, "the request was cancelled; the engine request was aborted"
    return grpc.StatusCode.INTERNAL, f"internal error while serving request {request_id}; details are in the server logs"
