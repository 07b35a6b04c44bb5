"""The OpenAI-compatible chat API as data: the request body (`ChatRequest`), its translation to the protocol-neutral
`RequestSpec` (validate.py runs the same checks for both protocols), and the response, chunk, model-list and error
bodies, in the shapes the installed vLLM's OpenAI server uses (`reasoning` beside `content`, the
`thinking_token_budget` request field, `{"error": {...}}`).

    spec = to_spec(parse_body(raw_bytes), request_id)          # InvalidInput naming the field, or a RequestSpec
    completion_body(response_pb, model, created)              # the non-streaming answer
    chunk(rid, model, created, {"content": "..."})            # one server-sent event's data

Audio travels as a content part of the user message: `{"type": "input_audio", "input_audio": {"data": <base64>,
"format": "wav"}}`, or `{"type": "audio_url", "audio_url": {"url": "s3://..."}}` for a URI the server may read.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alarm.errors import InvalidInput
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.validate import RequestSpec

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
ENSEMBLE_SEP = "+"  # model "alarm-ca+alarm-p" = ALARM-E over those adapters
FINISH = {pb.STOP: "stop", pb.LENGTH: "length", pb.ABORTED: "abort"}
ERROR_TYPE = {  # OpenAI's error types by HTTP status
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
    413: "invalid_request_error", 429: "rate_limit_error", 499: "cancelled", 503: "service_unavailable",
    504: "timeout", 500: "internal_error",
}


class _Body(BaseModel):
    # fields OpenAI defines that this server does not act on (user, metadata, ...) are accepted and ignored, as
    # vLLM does; those that would change the answer are refused by `to_spec`
    model_config = ConfigDict(extra="ignore")


class InputAudio(_Body):
    data: str = Field(description="Base64 of the encoded file.")
    format: str = "wav"


class AudioURL(_Body):
    url: str


class Part(_Body):
    type: Literal["text", "input_audio", "audio_url"]
    text: str | None = None
    input_audio: InputAudio | None = None
    audio_url: AudioURL | None = None


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None


class ChatRequest(_Body):
    """POST /v1/chat/completions. `model`: an adapter id, several joined by "+" for ALARM-E, or "" (the default)."""

    model: str = ""
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    thinking_token_budget: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    include_reasoning: bool = True
    tools: list | None = None
    logprobs: bool | None = None


def parse_body(raw: bytes) -> ChatRequest:
    """The request body, or InvalidInput naming the first wrong field as the client typed it."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"the request body is not JSON ({e}); send a chat completion request") from None
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "body"
        raise InvalidInput(f"{where}: {err['msg']} (found {str(err.get('input'))[:80]!r})") from None


def to_spec(req: ChatRequest, request_id: str) -> RequestSpec:
    """The RequestSpec of a chat request: system/developer messages -> the system turn, the one user message -> the
    prompt (its text parts) and the audio (at most one audio part)."""
    _refuse_unsupported(req)
    system = [_text(m, i) for i, m in enumerate(req.messages) if m.role in ("system", "developer")]
    users = [(i, m) for i, m in enumerate(req.messages) if m.role == "user"]
    others = [m.role for m in req.messages if m.role in ("assistant", "tool")]
    if others or len(users) != 1:
        raise InvalidInput(f"messages must hold exactly one user message (and optional system messages); found "
                           f"{len(users)} user and {len(others)} assistant/tool messages: this server answers one "
                           "question about one clip, without chat history")
    i, user = users[0]
    audio_bytes, audio_uri = _audio(user, i)
    budget = req.thinking_token_budget
    if budget is not None and budget < -1:
        raise InvalidInput(f"thinking_token_budget must be >= 0 (0 = no thinking) or -1 (unlimited), found {budget}; "
                           "leave it unset for the server's default")
    adapters = tuple(a for a in req.model.split(ENSEMBLE_SEP)) if req.model else ()
    return RequestSpec(
        prompt=_text(user, i), system_prompt="\n\n".join(system) if system else None,
        max_tokens=_max_tokens(req), max_thinking_tokens=budget or 0,
        temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed,
        adapter_id=adapters[0] if len(adapters) == 1 else "",
        ensemble_adapter_ids=adapters if len(adapters) > 1 else (),
        audio_bytes=audio_bytes, audio_uri=audio_uri, return_reasoning=req.include_reasoning, request_id=request_id,
        no_thinking=budget == 0,  # 0 = answer without reasoning, as gRPC's no_thinking
        stop=(req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ()),
    )


def _refuse_unsupported(req: ChatRequest) -> None:
    if req.n != 1:
        raise InvalidInput(f"n must be 1 (one choice per request), found {req.n}; send n requests with other seeds")
    if req.tools:
        raise InvalidInput("tools are not supported by this server; leave tools unset")
    if req.logprobs:
        raise InvalidInput("logprobs are not supported by this server; leave logprobs unset")


def _max_tokens(req: ChatRequest) -> int:
    """max_completion_tokens wins over the deprecated max_tokens (OpenAI's rule); None = the server's default."""
    value = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if value is None:
        return 0
    if value < 1:
        name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        raise InvalidInput(f"{name} must be >= 1, found {value}; leave it unset for the server's default")
    return value


def _text(m: Message, i: int) -> str:
    if isinstance(m.content, str) or m.content is None:
        return m.content or ""
    return "\n".join(p.text or "" for p in m.content if p.type == "text")


def _audio(m: Message, i: int) -> tuple[bytes | None, str | None]:
    parts = [(j, p) for j, p in enumerate(m.content) if p.type != "text"] if isinstance(m.content, list) else []
    if len(parts) > 1:
        raise InvalidInput(f"messages.{i}.content holds {len(parts)} audio parts; send at most one clip per request")
    if not parts:
        return None, None
    j, p = parts[0]
    where = f"messages.{i}.content.{j}"
    if p.type == "audio_url":
        if p.audio_url is None:
            raise InvalidInput(f"{where}.audio_url is missing: send {{\"url\": \"s3://...\"}}")
        url = p.audio_url.url
        if url.startswith("data:"):
            _, _, data = url.partition(",")
            return _b64(data, f"{where}.audio_url.url"), None
        return None, url
    if p.input_audio is None:
        raise InvalidInput(f"{where}.input_audio is missing: send {{\"data\": <base64>, \"format\": \"wav\"}}")
    if p.input_audio.format not in AUDIO_FORMATS:
        raise InvalidInput(f"{where}.input_audio.format must be one of {list(AUDIO_FORMATS)}, "
                           f"found {p.input_audio.format!r}")
    return _b64(p.input_audio.data, f"{where}.input_audio.data"), None


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where} is not valid base64; send the file's bytes base64-encoded") from None


# -- response bodies ---------------------------------------------------------------------------------------------


def usage(u: pb.Usage) -> dict:
    """OpenAI's usage: completion tokens = reasoning + answer; the audio positions are part of the prompt."""
    return {
        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.total_tokens,
        "total_tokens": u.prompt_tokens + u.total_tokens,
        "prompt_tokens_details": {"audio_tokens": u.audio_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def completion_body(r: pb.GenerateResponse, model: str, created: int) -> dict:
    message = {"role": "assistant", "content": r.answer}
    if r.reasoning:
        message["reasoning"] = r.reasoning
    return {
        "id": f"chatcmpl-{r.request_id}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": FINISH.get(r.finish_reason, "stop"),
                     "stop_reason": r.stop_string or None, "logprobs": None}],
        "usage": usage(r.usage),
    }


def chunk(rid: str, model: str, created: int, delta: dict, finish: str | None = None,
          u: pb.Usage | None = None) -> dict:
    body = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if u is not None:
        body["usage"] = usage(u)
    return body


def final_chunk(r: pb.GenerateResponse, model: str, created: int) -> dict:
    body = chunk(r.request_id, model, created, {}, FINISH.get(r.finish_reason, "stop"), r.usage)
    body["choices"][0]["stop_reason"] = r.stop_string or None
    return body


def models_body(models: list[pb.Model], created: int) -> dict:
    return {"object": "list", "data": [
        {"id": m.id, "object": "model", "created": created, "owned_by": "alarm", "root": m.base_model,
         "encoders": list(m.encoders), "default": m.is_default} for m in models]}


def error_body(message: str, http: int, code: str) -> dict:
    """OpenAI's error body; `code` is the status table's code (the gRPC name of the same failure)."""
    return {"error": {"message": message, "type": ERROR_TYPE.get(http, "internal_error"), "param": None,
                      "code": code}}


def sse(data: dict | str) -> bytes:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n".encode()
