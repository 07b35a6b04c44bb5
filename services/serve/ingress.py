"""The ingress deployment: `alarm.v1.AlarmService` (Generate, GenerateStream, ListModels) and `grpc.health.v1.Health`
(Check, Watch, List) behind Ray Serve's gRPC proxy, and the OpenAI-compatible HTTP API (routes.py) behind its HTTP
proxy: one pipeline, one token check (auth.py), one status table for both protocols.

    request -> token (auth.py) -> validate (validate.py) -> readiness guard (readiness.py) -> encoders -> fusion
            -> llm -> response
    failure -> status table (status.py): one code, a plain message, one log line (a traceback only for INTERNAL)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import replace

from ray import serve

from alarm.config import GRPC_SERVICE, ServeConfig
from alarm.errors import Overloaded
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.auth import Tokens, grpc_authorization
from services.serve.core import Final, response_pb, stream_pb
from services.serve.heap import free_memory
from services.serve.inproc import InProcess, in_process
from services.serve.metrics import ServeMetrics
from services.serve.proxy import quiet_client_errors
from services.serve.readiness import Readiness, serve_running_replicas
from services.serve.status import log_failure, status_of
from services.serve.validate import (
    Parsed,
    RequestSpec,
    check_adapters,
    from_pb,
    request_id_of,
    validate_request,
)

log = logging.getLogger("ray.serve")
WATCH_S = 300.0  # longest health Watch stream
WATCH_POLL_S = 0.5


@serve.deployment
class AlarmIngress:
    """Every failure becomes one status code from `status.status_of` with a message for the client; the stack trace
    of an INTERNAL one stays in the replica's log. The request id goes back in the response and in the trailing
    metadata (at the end of the details of a failed stream)."""

    async def __init__(self, cfg: dict, encoders: dict, fusion, llm, required: list[str]):
        """fusion: the fusion deployment's handle, or with deployments.colocate the audio deployment's (then
        `encoders` is empty); with `colocate: all` fusion and llm are None and this replica builds both stages
        (inproc.py), warming the engine up before Serve routes here."""
        self.cfg = ServeConfig.model_validate(cfg)
        free_memory(self.cfg.deployments.free_memory)  # decoded audio of a burst does not stay resident (heap.py)
        self.layout, self.engine = self.cfg.deployments.layout, None
        if self.layout == "one":
            audio, self.engine = await _local_stages(cfg)
            fusion, llm = InProcess(audio), InProcess(self.engine)
        self.encoders, self.fusion, self.llm = encoders, fusion, llm
        self.tokens = Tokens(self.cfg.auth)
        self._catalog: dict[str, tuple[str, ...]] | None = None
        self._inflight = 0
        app = serve.get_replica_context().app_name
        self.readiness = Readiness(required, lambda: serve_running_replicas(app))
        quiet_client_errors()
        # our own request metrics: Serve's count a failed unary call as OK (the status travels in the context)
        self.metrics = ServeMetrics.create(
            "alarm_requests", "alarm_request_latency_ms", "alarm_requests_in_flight", "alarm_audio_seconds")
        self.metrics["alarm_requests_in_flight"].set(0)

    # -- alarm.v1.AlarmService ----------------------------------------------------------------------------------

    async def Generate(self, request: pb.GenerateRequest, grpc_context) -> pb.GenerateResponse:  # noqa: N802
        arrival, rid, code = time.time(), _proxy_request_id(grpc_context), "OK"
        try:
            rid = request_id_of(request, rid)
            self.tokens.check(grpc_authorization(grpc_context))
            parsed, final = await self.final(from_pb(request), rid)
            return response_pb(final, rid, parsed.return_reasoning, arrival, parsed.decode_ms)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as e:
            code = self._fail(grpc_context, e, rid)
            return pb.GenerateResponse(request_id=rid)
        finally:
            _set_request_id(grpc_context, rid)
            self._record("Generate", code, arrival)

    async def GenerateStream(self, request: pb.GenerateRequest, grpc_context) -> AsyncIterator:  # noqa: N802
        arrival, rid, code = time.time(), _proxy_request_id(grpc_context), "OK"
        _set_request_id(grpc_context, rid)
        try:
            rid = request_id_of(request, rid)
            _set_request_id(grpc_context, rid)
            self.tokens.check(grpc_authorization(grpc_context))
            async with aclosing(self.events(from_pb(request), rid)) as events:
                parsed = await anext(events)
                async for ev in events:
                    if isinstance(ev, Final):
                        yield pb.GenerateStreamResponse(
                            final=response_pb(ev, rid, parsed.return_reasoning, arrival, parsed.decode_ms))
                    elif (msg := stream_pb(ev, parsed.return_reasoning)) is not None:
                        yield msg
        except (asyncio.CancelledError, GeneratorExit):  # the client left mid-stream
            code = "CANCELLED"
            raise
        except Exception as e:
            code = self._fail(grpc_context, e, rid, in_stream=True)
            # raising (not returning) carries the code: Serve only sends a stream's context with a message
            raise _StreamFailed(rid) from e
        finally:
            self._record("GenerateStream", code, arrival)

    async def ListModels(self, request, grpc_context) -> pb.ListModelsResponse:  # noqa: N802
        arrival, rid, code = time.time(), _proxy_request_id(grpc_context) or "", "OK"
        try:
            self.tokens.check(grpc_authorization(grpc_context))
            return pb.ListModelsResponse(models=await self.models())
        except Exception as e:
            code = self._fail(grpc_context, e, rid)
            return pb.ListModelsResponse()
        finally:
            self._record("ListModels", code, arrival)

    # -- the OpenAI-compatible HTTP API (routes.py) --------------------------------------------------------------

    async def __call__(self, request):
        from services.serve.routes import handle

        return await handle(self, request)

    # -- the pipeline, for both protocols ------------------------------------------------------------------------

    async def models(self) -> list[pb.Model]:
        """The adapters this server offers, sorted by id."""
        catalog = await self._adapters()
        return [pb.Model(id=a, encoders=list(catalog[a]), base_model=self.cfg.model.llm.checkpoint,
                         is_default=a == self.cfg.default_adapter) for a in sorted(catalog)]

    async def final(self, spec: RequestSpec, rid: str) -> tuple[Parsed, Final]:
        """One request to its end: (the validated request, the LLM stage's Final)."""
        async with self._admitted():
            parsed, blocks, needed = await self._prepare(spec, rid)
            response = None
            try:
                async with self._guard(needed):
                    audio = await _resolved(blocks)
                    response = self.llm.generate.remote(parsed.llm, *audio)
                    return parsed, await response
            except BaseException:  # client deadline or cancel, a lost replica: Serve does not cancel children
                _cancel(response, *blocks)
                raise

    async def events(self, spec: RequestSpec, rid: str) -> AsyncIterator:
        """The validated request (Parsed) first, then the LLM stage's StreamEvents, then its Final. Close it
        (`aclosing`) when done: closing before the Final, the client gone, aborts the engine request."""
        async with self._admitted():
            parsed, blocks, needed = await self._prepare(spec, rid)
            yield parsed
            events, done = None, False
            try:
                # placed once the first event comes: a replica lost after that fails the call by itself
                async with self._guard(needed):
                    audio = await _resolved(blocks)
                    events = self.llm.options(stream=True).stream.remote(parsed.llm, *audio)
                    ev = await anext(events, None)
                while ev is not None:
                    done = isinstance(ev, Final)
                    yield ev
                    ev = await anext(events, None)
            finally:
                if not done:  # client gone (cancel, deadline) or a failure: the LLM replica aborts its request
                    _cancel(events, *blocks)

    @asynccontextmanager
    async def _admitted(self):
        """Admission before any work: Overloaded (RESOURCE_EXHAUSTED) when this replica already holds as many
        requests as the LLM deployment takes from one caller, its running replicas' `max_ongoing_requests` plus its
        `max_queued_requests` (Serve's queue limit is per caller, and this replica is one). Past that Serve would
        refuse the request only after the audio was decoded and encoded; with `max_queued_requests: -1` only the
        ingress's own limits apply."""
        spec = self.cfg.deployments.llm
        if spec.max_queued_requests >= 0:
            replicas = 1 if self.engine is not None else (await self.readiness.table() or {}).get("llm", 0)
            capacity = spec.max_ongoing_requests * max(1, replicas) + spec.max_queued_requests
            if self._inflight >= capacity:
                raise Overloaded(f"the server's queues are full ({self._inflight} requests waiting for {capacity} "
                                 "places at the LLM); retry with backoff")
        self._inflight += 1
        self.metrics["alarm_requests_in_flight"].set(self._inflight)
        try:
            yield
        finally:
            self._inflight -= 1
            self.metrics["alarm_requests_in_flight"].set(self._inflight)

    async def _prepare(self, spec: RequestSpec, rid: str):
        """(parsed request, fusion responses (one per adapter), the deployments the request needs)."""
        parsed = await asyncio.to_thread(validate_request, spec, self.cfg, rid)  # decodes audio off the loop
        if self.cfg.request_timeout_s:  # the LLM stage ends its request by itself when the call's time is up
            parsed = replace(parsed, llm=replace(parsed.llm, timeout_s=self.cfg.request_timeout_s))
        if parsed.audio is None:
            return parsed, [], ["llm"]
        self.metrics["alarm_audio_seconds"].inc(parsed.audio.duration_s)
        catalog = await self._adapters()
        check_adapters(parsed.adapters, catalog)
        if self.layout != "stages":  # one call: the audio stage runs the encoders and the fusion
            needed = ["audio", "llm"] if self.layout == "audio" else []
            return parsed, [self.fusion.blocks.remote(parsed.audio, list(parsed.adapters))], needed
        needed = sorted({e for a in parsed.adapters for e in catalog[a]})
        states = {e: self.encoders[e].encode.remote(parsed.audio) for e in needed}
        blocks = [
            self.fusion.options(multiplexed_model_id=a).fuse.remote(**{e: states[e] for e in catalog[a]})
            for a in parsed.adapters
        ]
        return parsed, blocks, [*(f"encoder-{e}" for e in needed), "fusion", "llm"]

    async def _adapters(self) -> dict[str, tuple[str, ...]]:
        if self._catalog is None:
            async with self._guard({"stages": ["fusion"], "audio": ["audio"], "one": []}[self.layout]):
                self._catalog = await self.fusion.catalog.remote()
        return self._catalog

    def _guard(self, deployments: list[str]):
        """readiness.guard over the deployments a call needs; nothing to watch when every stage is in this replica."""
        if not deployments:
            return nullcontext()
        return self.readiness.guard(deployments, self.cfg.limits.replica_wait_s)

    def check_health(self) -> None:
        """With `colocate: all` this replica runs the engine: Serve restarts it when the engine died."""
        if self.engine is not None:
            self.engine.check_health()

    def __del__(self):
        """Serve awaits what this returns when the replica shuts down: with `colocate: all`, closing the engine."""
        engine, self.engine = getattr(self, "engine", None), None
        return engine.core.aclose() if engine is not None else None

    def _fail(self, grpc_context, e: Exception, rid: str, in_stream: bool = False) -> str:
        status = status_of(e, rid)
        log_failure(log, status, rid, e)
        message = status.message
        if in_stream:  # a failed stream carries no trailing metadata through Serve: name the request here
            message = f"{message} [request_id={rid}]"
        grpc_context.set_code(status.grpc_code)
        grpc_context.set_details(message)
        return status.code

    def _record(self, method: str, code: str, arrival: float) -> None:
        self.metrics["alarm_requests"].inc(tags={"method": method, "code": code})
        self.metrics["alarm_request_latency_ms"].observe((time.time() - arrival) * 1e3, tags={"method": method})

    # -- grpc.health.v1.Health ----------------------------------------------------------------------------------

    async def Check(self, request, grpc_context):  # noqa: N802
        from grpc_health.v1 import health_pb2

        if request.service not in ("", GRPC_SERVICE):
            import grpc

            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(f"unknown service {request.service!r}; ask for '' or {GRPC_SERVICE!r}")
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=await self._status(request.service))

    async def Watch(self, request, grpc_context) -> AsyncIterator:  # noqa: N802
        """Streams the status now and whenever it changes (looked at every WATCH_POLL_S) for at most WATCH_S
        seconds, so watchers cannot hold the ingress's request slots forever; clients re-watch when it ends."""
        from grpc_health.v1 import health_pb2

        last, t0 = None, time.monotonic()
        while time.monotonic() - t0 < WATCH_S:
            status = (await self._status(request.service) if request.service in ("", GRPC_SERVICE)
                      else health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(WATCH_POLL_S)

    async def List(self, request, grpc_context):  # noqa: N802
        from grpc_health.v1 import health_pb2

        return health_pb2.HealthListResponse(statuses={
            s: health_pb2.HealthCheckResponse(status=await self._status(s)) for s in ("", GRPC_SERVICE)
        })

    async def _status(self, service: str) -> int:
        """"" = liveness (this replica answers). The service name = readiness (`Readiness.ready`): every deployment
        that must keep a replica has a running one, so every model is loaded and the LLM has warmed up (each
        replica's constructor does that before Serve marks it running). It turns NOT_SERVING once Serve's controller
        sees a deployment without one (`deployments.*.health_check_period_s` after a replica dies) and asks the
        controller, never the model replicas, so it stays fast and truthful when their queues are full."""
        from grpc_health.v1 import health_pb2

        if service == "" or await self.readiness.ready():
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING


async def _local_stages(cfg: dict):
    """`colocate: all`: the audio stage (every encoder and the fusion) and the LLM stage, built in this replica."""
    from services.serve.deployments import AudioServer, LLMServer

    return await in_process(AudioServer, cfg, True), await in_process(LLMServer, cfg)


class _StreamFailed(Exception):
    """Ends a failed stream; the status code and message are already on the gRPC context."""


def _cancel(*responses) -> None:
    for r in responses:
        try:
            if r is not None:
                r.cancel()
        except Exception:  # already finished or failed: nothing to cancel
            pass


async def _resolved(blocks: list) -> list:
    """The audio stages' results, awaited here rather than passed on to the LLM call as responses. A chained
    response whose replica's node is lost can fail as ActorUnavailableError, which Serve 2.60's router blames on
    the LLM replica it was sent to and retries until the client's deadline (the node-loss drill saw two requests
    hang 53 s, 2,657 retries); awaited here, the loss fails this request at once, as UNAVAILABLE. The price is
    one copy of each block through this replica (60 s of ALARM-CA audio is 1,502 x 2,560 bf16 values, 7.7 MB)."""
    return list(await asyncio.gather(*blocks))


def _proxy_request_id(grpc_context) -> str | None:
    """The id Serve's proxy put in the trailing metadata (the client's `request_id` metadata, or a new one)."""
    return dict(grpc_context.trailing_metadata()).get("request_id") or grpc_context.request_id()


def _set_request_id(grpc_context, rid: str | None) -> None:
    """Trailing metadata `request_id` = the id of the response (the body's id wins over the proxy's)."""
    if rid is None:
        return
    rest = [(k, v) for k, v in grpc_context.trailing_metadata() if k != "request_id"]
    # RayServegRPCContext.set_trailing_metadata keeps the proxy's request_id first; replace it instead
    grpc_context._trailing_metadata = [*rest, ("request_id", rid)]
