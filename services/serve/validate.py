"""Request validation at the edge, for every protocol: a request as the client sent it (`RequestSpec`) becomes a
`Parsed` request with every field checked and the audio decoded, or InvalidInput / RequestTooLarge naming the field,
its allowed range and the fix, before any model runs.

    spec = from_pb(grpc_request)                        # gRPC; another protocol builds a RequestSpec itself
    parsed = validate_request(spec, cfg, request_id)    # the same checks, the same messages

The sampling and token limits are the engines' own (`alarm.llm.limits`), so nothing an engine would refuse gets past
this point.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from alarm import env
from alarm.audio.decode import load_audio
from alarm.config import ServeConfig
from alarm.errors import InvalidInput, RequestTooLarge
from alarm.llm.limits import check_sampling, stop_problem
from alarm.types import Waveform
from services.serve._proto.alarm.v1 import alarm_pb2 as pb

MAX_REQUEST_ID = 128


@dataclass(frozen=True)
class Undecodable:
    """What the gRPC proxy hands on in place of a request whose bytes do not parse (`services.serve.proxy`), so
    the ingress answers INVALID_ARGUMENT with the request id instead of grpcio's UNKNOWN."""

    message: str


@dataclass(frozen=True)
class RequestSpec:
    """A request as the client sent it, whatever the protocol. None / 0 / "" = not set: the server's default.

    system_prompt: None = the server's default system turn, "" = none. audio: at most one of audio_bytes and
    audio_uri; neither = a text-only request. no_thinking: answer without reasoning (a thinking budget of 0; then
    max_thinking_tokens must be left 0).
    """

    prompt: str
    system_prompt: str | None = None
    max_tokens: int = 0
    max_thinking_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    adapter_id: str = ""
    ensemble_adapter_ids: tuple[str, ...] = ()
    audio_bytes: bytes | None = None
    audio_uri: str | None = None
    return_reasoning: bool = False
    request_id: str = ""
    no_thinking: bool = False
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class LLMRequest:
    """What the LLM stage needs: text, budget, sampling and stop strings (max_tokens None = the default, fitted to
    context), and how long it may take (timeout_s, from the server's request timeout; None = no limit of its own)."""

    request_id: str
    prompt: str
    system: str | None
    max_tokens: int | None
    max_thinking_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: tuple[str, ...] = ()
    timeout_s: float | None = None


@dataclass(frozen=True)
class Parsed:
    """A validated request. audio None = text only; adapters: () text only, 1 adapter, or >= 2 (ALARM-E)."""

    llm: LLMRequest
    audio: Waveform | None
    adapters: tuple[str, ...]
    return_reasoning: bool
    decode_ms: float


def from_pb(req: pb.GenerateRequest | Undecodable) -> RequestSpec:
    """The RequestSpec of a gRPC GenerateRequest (InvalidInput for bytes that did not parse)."""
    if isinstance(req, Undecodable):
        raise InvalidInput(req.message)
    s = req.sampling
    which = req.WhichOneof("audio")
    return RequestSpec(
        prompt=req.prompt, system_prompt=req.system_prompt if req.HasField("system_prompt") else None,
        max_tokens=req.max_tokens, max_thinking_tokens=req.max_thinking_tokens,
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None, top_k=s.top_k if s.HasField("top_k") else None,
        seed=s.seed if s.HasField("seed") else None, adapter_id=req.adapter_id,
        ensemble_adapter_ids=tuple(req.ensemble_adapter_ids),
        audio_bytes=req.audio_bytes if which == "audio_bytes" else None,
        audio_uri=req.audio_uri if which == "audio_uri" else None,
        return_reasoning=req.return_reasoning, request_id=req.request_id, no_thinking=req.no_thinking,
        stop=tuple(req.stop),
    )


def parse_request(req: pb.GenerateRequest | Undecodable, cfg: ServeConfig, request_id: str) -> Parsed:
    """`validate_request(from_pb(req), ...)`: the gRPC request validated, its audio decoded."""
    return validate_request(from_pb(req), cfg, request_id)


def validate_request(spec: RequestSpec, cfg: ServeConfig, request_id: str, *,
                     sampling_prefix: str = "sampling.") -> Parsed:
    """Validate every field (InvalidInput naming the field, its range and the fix) and decode the audio.

    Args:
        sampling_prefix: How the client names the sampling fields' parent ("sampling." in the gRPC API).

    Unknown adapter ids are checked by the caller against the adapters actually loaded (`check_adapters`).
    """
    d = cfg.defaults
    _check_text(spec, cfg)
    if spec.max_tokens < 0:
        raise InvalidInput(f"max_tokens must be >= 1, or 0 for the server default, found {spec.max_tokens}")
    if spec.max_thinking_tokens < -1:
        raise InvalidInput(f"max_thinking_tokens must be >= 1, 0 (server default {d.max_thinking_tokens}) or -1 "
                           f"(unlimited), found {spec.max_thinking_tokens}")
    if spec.no_thinking and spec.max_thinking_tokens:
        raise InvalidInput(f"no_thinking answers without reasoning; leave max_thinking_tokens 0, found "
                           f"{spec.max_thinking_tokens}")
    thinking = 0 if spec.no_thinking else spec.max_thinking_tokens or d.max_thinking_tokens
    temperature = d.temperature if spec.temperature is None else spec.temperature
    top_p = d.top_p if spec.top_p is None else spec.top_p
    top_k = d.top_k if spec.top_k is None else spec.top_k
    check_sampling(temperature, top_p, top_k, spec.seed, prefix=sampling_prefix)
    if (problem := stop_problem(spec.stop)) is not None:
        raise InvalidInput(f"{problem}; stop strings end the answer (not the reasoning) where they first appear")
    adapters, ensemble = _adapters(spec, cfg)
    t0 = time.perf_counter()
    audio = _audio(spec, cfg)
    if audio is None and ensemble:
        raise InvalidInput("ensemble_adapter_ids needs audio: send audio_bytes or audio_uri")
    system = cfg.model.system_prompt if spec.system_prompt is None else (spec.system_prompt or None)
    llm = LLMRequest(
        request_id=request_id, prompt=spec.prompt, system=system, max_tokens=spec.max_tokens or None,
        max_thinking_tokens=thinking, temperature=temperature, top_p=top_p, top_k=top_k, seed=spec.seed,
        stop=tuple(spec.stop),
    )
    return Parsed(llm, audio, adapters if audio is not None else (), spec.return_reasoning,
                  (time.perf_counter() - t0) * 1e3)


def _check_text(spec: RequestSpec, cfg: ServeConfig) -> None:
    limit = cfg.limits.max_prompt_chars
    if not spec.prompt.strip():
        raise InvalidInput("prompt is empty; send the question or instruction about the audio in `prompt`")
    if len(spec.prompt) > limit:
        raise InvalidInput(f"prompt has {len(spec.prompt)} characters, over this server's limit of {limit}")
    if spec.system_prompt is not None and len(spec.system_prompt) > limit:
        raise InvalidInput(f"system_prompt has {len(spec.system_prompt)} characters, over the limit of {limit}")


def _adapters(spec: RequestSpec, cfg: ServeConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the adapters to run, the ensemble asked for)."""
    ensemble = tuple(spec.ensemble_adapter_ids)
    if ensemble and spec.adapter_id:
        raise InvalidInput("set either adapter_id or ensemble_adapter_ids, not both")
    if ensemble:
        if len(ensemble) < 2 or len(set(ensemble)) != len(ensemble):
            raise InvalidInput(f"ensemble_adapter_ids must name at least 2 distinct adapters, found {list(ensemble)}")
        if len(ensemble) > cfg.limits.max_ensemble:
            raise InvalidInput(
                f"ensemble_adapter_ids names {len(ensemble)} adapters, over the limit of {cfg.limits.max_ensemble}")
    return ensemble or (spec.adapter_id or cfg.default_adapter,), ensemble


def _audio(spec: RequestSpec, cfg: ServeConfig) -> Waveform | None:
    lim, max_s = cfg.limits, cfg.model.audio.max_duration_s
    if spec.audio_bytes is not None and spec.audio_uri is not None:
        raise InvalidInput("send either audio_bytes or audio_uri, not both")
    if spec.audio_bytes is not None:
        if not spec.audio_bytes:
            raise InvalidInput("audio_bytes is empty; send an encoded audio file (wav, flac, ogg, mp3)")
        if len(spec.audio_bytes) > lim.max_message_bytes:  # also when the proxy's own limit was left at 2 GiB
            raise RequestTooLarge(
                f"audio_bytes holds {len(spec.audio_bytes)} bytes, over this server's limit of "
                f"{lim.max_message_bytes}; compress the audio (flac, opus) or send an audio_uri"
            )
        return load_audio(spec.audio_bytes, max_duration_s=max_s)
    if spec.audio_uri is not None:
        uri = spec.audio_uri
        if not any(uri.startswith(p) for p in lim.audio_uri_prefixes) or "/../" in uri:
            allowed = lim.audio_uri_prefixes or "none: audio_uri is off on this server"
            raise InvalidInput(f"audio_uri {uri!r} is not readable by this server (allowed prefixes: {allowed}); "
                               "send audio_bytes instead")
        return load_audio(uri, max_duration_s=max_s, storage_options=env.s3_storage_options())
    return None


def request_id_of(req: pb.GenerateRequest | RequestSpec | Undecodable, fallback: str | None) -> str:
    """The body's request_id if set (validated), else the metadata one, else a new one."""
    rid = getattr(req, "request_id", "")
    if rid:
        if len(rid) > MAX_REQUEST_ID or not rid.isascii() or not rid.isprintable():
            raise InvalidInput(f"request_id must be at most {MAX_REQUEST_ID} printable ASCII characters")
        return rid
    return fallback or uuid.uuid4().hex


def check_adapters(adapters: Sequence[str], catalog: dict[str, tuple[str, ...]]) -> None:
    unknown = [a for a in adapters if a not in catalog]
    if unknown:
        raise InvalidInput(f"unknown adapter {unknown[0]!r}; this server has {sorted(catalog)}")
