"""The ingress's HTTP side, on Serve's HTTP port: the OpenAI-compatible `POST /v1/chat/completions` (plain or
server-sent events) and `GET /v1/models`, through the same token check, validation, pipeline and status table as
gRPC (`AlarmIngress.__call__` hands every HTTP request here).

    failure -> status.status_of -> HTTP code (status.HTTP_CODE) + OpenAI's error body (chat.error_body)

The request id is Serve's `x-request-id` (the client's header, or one the proxy made and sends back). A client that
drops the connection mid-stream cancels the replica's task; the pipeline then aborts the engine request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from alarm.errors import InvalidInput, RequestTooLarge
from services.serve.chat import (
    chunk,
    completion_body,
    error_body,
    final_chunk,
    models_body,
    parse_body,
    sse,
    to_spec,
)
from services.serve.core import Final, response_pb
from services.serve.status import log_failure, status_of
from services.serve.validate import Parsed, request_id_of

log = logging.getLogger("ray.serve")
CHAT, MODELS = "/v1/chat/completions", "/v1/models"
BASE64_SLACK = 64 * 2**10  # the JSON around the audio


async def handle(ingress, request: Request) -> Response:
    """Route one HTTP request; every failure is an OpenAI error body with the status table's HTTP code."""
    path, method = request.url.path.rstrip("/"), request.method
    routes = {CHAT: "POST", MODELS: "GET"}
    if path not in routes:
        return _error(f"no route {path}; this server answers POST {CHAT} and GET {MODELS}", 404, "NOT_FOUND")
    if method != routes[path]:
        return _error(f"{path} takes {routes[path]}, not {method}", 405, "METHOD_NOT_ALLOWED")
    arrival, rid, code = time.time(), request.headers.get("x-request-id") or uuid.uuid4().hex, "OK"
    name, streaming = ("ChatCompletions" if path == CHAT else "Models"), False
    try:
        ingress.tokens.check(request.headers.get("authorization"))
        if path == MODELS:
            return JSONResponse(models_body(await ingress.models(), int(arrival)))
        req = parse_body(await _body(request, ingress.cfg.limits.max_message_bytes))
        spec = to_spec(req, rid)
        rid = request_id_of(spec, rid)
        model = req.model or ingress.cfg.default_adapter
        if req.stream:
            response = await _stream(ingress, spec, rid, model, arrival)
            streaming = True  # the stream records its own outcome
            return response
        parsed, final = await ingress.final(spec, rid)
        reply = response_pb(final, rid, parsed.return_reasoning, arrival, parsed.decode_ms)
        return JSONResponse(completion_body(reply, model, int(arrival)))
    except asyncio.CancelledError:  # the client left before the answer
        code = "CANCELLED"
        raise
    except Exception as e:
        status = status_of(e, rid)
        log_failure(log, status, rid, e)
        code = status.code
        return _error(status.message, status.http, status.code)
    finally:
        if not streaming:
            ingress._record(name, code, arrival)


async def _body(request: Request, max_message_bytes: int) -> bytes:
    """The body, refused (413) past the audio limit in base64 plus the JSON around it, before it is all read."""
    limit = max_message_bytes * 4 // 3 + BASE64_SLACK
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the request body has {declared} bytes, over this server's limit of {limit}; "
                              "compress the audio (flac, opus) or send an audio_url")
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise RequestTooLarge(f"the request body is over this server's limit of {limit} bytes; compress the "
                                  "audio (flac, opus) or send an audio_url")
        chunks.append(part)
    if not chunks:
        raise InvalidInput("the request body is empty; send a chat completion request as JSON")
    return b"".join(chunks)


async def _stream(ingress, spec, rid: str, model: str, arrival: float) -> Response:
    """Validation, audio decoding and encoding run before the 200 (their failures are plain HTTP errors); what fails
    later ends the stream with an error event."""
    events = ingress.events(spec, rid)
    parsed: Parsed = await anext(events)
    created = int(arrival)

    async def body():
        code = "OK"
        try:
            async with aclosing(events):
                yield sse(chunk(rid, model, created, {"role": "assistant", "content": ""}))
                async for ev in events:
                    if isinstance(ev, Final):
                        reply = response_pb(ev, rid, parsed.return_reasoning, arrival, parsed.decode_ms)
                        yield sse(final_chunk(reply, model, created))
                    elif ev.kind == "reasoning":
                        if parsed.return_reasoning:
                            yield sse(chunk(rid, model, created, {"reasoning": ev.text}))
                    else:
                        yield sse(chunk(rid, model, created, {"content": ev.text}))
                yield sse("[DONE]")
        except BaseException as e:  # the client left (cancelled) or the pipeline failed after the 200
            status = status_of(e, rid)
            code = status.code
            if isinstance(e, Exception):
                log_failure(log, status, rid, e)
                yield sse(error_body(status.message, status.http, status.code))
            else:
                raise
        finally:
            ingress._record("ChatCompletions", code, arrival)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _error(message: str, http: int, code: str) -> JSONResponse:
    return JSONResponse(error_body(message, http, code), status_code=http)
