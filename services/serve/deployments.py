"""The Serve deployments: gRPC ingress, one deployment per frozen encoder, the fusion-compressor, the LLM.

    client --gRPC--> AlarmIngress --+--> encoder-whisper --+
                      (validate,     +--> encoder-w2vbert --+--> fusion (adapter per id) --> llm (vLLM) --> deltas
                       decode audio) +--> ...             --+        @serve.multiplexed          prompt_embeds

Encoder states and audio blocks travel as DeploymentResponses from stage to stage (Serve resolves them in the
downstream replica), so they never pass through the ingress. Each deployment is a thin wrapper over
`services/serve/core.py`; its resources and autoscaling come from the `deployments` section of the serve preset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing

import numpy as np
import torch
from ray import serve
from ray.serve import metrics

from alarm.audio.features import extract_features
from alarm.config import GRPC_SERVICE, EncoderConfig, ServeConfig
from alarm.types import Waveform
from services.engines.encoders import encode_clips, load_frozen_encoder
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.core import (
    AudioBlock,
    Final,
    FusionCore,
    LLMCore,
    LLMRequest,
    check_adapters,
    grpc_status,
    parse_request,
    request_id_of,
    response_pb,
    stream_pb,
)

log = logging.getLogger("ray.serve")
WATCH_S = 300.0  # longest health Watch stream


def _use_assigned_cpus() -> None:
    """torch threads = the replica's logical CPUs (>= 1), not every core of the node."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:
        cpus = 1
    torch.set_num_threads(max(1, round(cpus)))


@serve.deployment
class EncoderServer:
    """One frozen encoder. `encode(wave)` runs the front-end for its clip, then waits for a batch: concurrent
    requests share one padded forward (@serve.batch)."""

    def __init__(self, name: str, encoder: dict, resample_quality: str, max_batch_size: int,
                 batch_wait_timeout_s: float):
        _use_assigned_cpus()
        self.name, self.quality = name, resample_quality
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = load_frozen_encoder(name, EncoderConfig.model_validate(encoder), self.device)
        self._forward.set_max_batch_size(max_batch_size)
        self._forward.set_batch_wait_timeout_s(batch_wait_timeout_s)
        # one forward on silence before Serve routes here: lazy kernels and allocations are not a client's cost
        silence = Waveform(np.zeros(16000, dtype=np.float32), 16000)
        encode_clips(self.encoder, name, [self._features(silence)], self.device)
        self.batch_sizes: Counter[int] = Counter()

    async def encode(self, wave: Waveform) -> tuple[np.ndarray, float]:
        """-> tapped states `(L, T, D)` float32 and the milliseconds spent (front-end + forward)."""
        t0 = time.perf_counter()
        feats = await asyncio.to_thread(self._features, wave)
        states = await self._forward(feats)
        return states, (time.perf_counter() - t0) * 1e3

    def _features(self, wave: Waveform) -> tuple[torch.Tensor, int]:
        """The front-end, as wide as the loaded checkpoint takes (e.g. 80 mel bins for Whisper tiny.en)."""
        return extract_features(self.name, wave, self.quality, self.encoder.feature_dim)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _forward(self, feats: list[tuple[torch.Tensor, int]]) -> list[np.ndarray]:
        self.batch_sizes[len(feats)] += 1
        return await asyncio.to_thread(encode_clips, self.encoder, self.name, feats, self.device)

    def stats(self) -> dict:
        """Batches run so far, by size (bench/serve.py reports the distribution under load)."""
        return {"batch_sizes": dict(self.batch_sizes)}


@serve.deployment
class FusionServer:
    """The fusion-compressor: encoder states -> one adapter's audio block. Adapter checkpoints are chosen per
    request by `multiplexed_model_id` and kept in an LRU of `max_adapters_per_replica`."""

    def __init__(self, cfg: dict):
        _use_assigned_cpus()
        self.core = FusionCore(ServeConfig.model_validate(cfg))
        async def load(adapter_id: str):  # a plain function: Serve keeps its LRU as an attribute of it
            return await asyncio.to_thread(self.core.load, adapter_id)

        self.get_adapter = serve.multiplexed(max_num_models_per_replica=self.core.cfg.max_adapters_per_replica)(load)
        self.default = self.core.load(self.core.cfg.default_adapter)  # ready = the default adapter is in memory

    def catalog(self) -> dict[str, tuple[str, ...]]:
        return self.core.catalog

    async def fuse(self, **encoded: tuple[np.ndarray, float]) -> AudioBlock:
        """encoder name -> (states, encode_ms) as returned by the encoder deployments."""
        aid = serve.get_multiplexed_model_id()
        adapter = self.default if aid in ("", self.core.cfg.default_adapter) else await self.get_adapter(aid)
        t0 = time.perf_counter()
        states = {k: v[0] for k, v in encoded.items()}
        block = await asyncio.to_thread(self.core.fuse, adapter, states)
        return AudioBlock(block, max(v[1] for v in encoded.values()), (time.perf_counter() - t0) * 1e3)


@serve.deployment
class LLMServer:
    """The frozen LLM: one engine per replica (vLLM AsyncLLM with prompt_embeds, or transformers), built and
    warmed up in the replica's event loop before Serve routes to it."""

    async def __init__(self, cfg: dict):
        _use_assigned_cpus()
        self.core = await LLMCore.create(ServeConfig.model_validate(cfg))

    async def generate(self, req: LLMRequest, *blocks: AudioBlock) -> Final:
        return await self.core.generate(req, blocks)

    async def stream(self, req: LLMRequest, *blocks: AudioBlock) -> AsyncIterator:
        async with aclosing(self.core.stream(req, blocks)) as events:  # cancelled here = engine request aborted
            async for ev in events:
                yield ev

    def num_unfinished(self) -> int:
        return self.core.num_unfinished()

    def check_health(self) -> None:
        """Serve restarts a replica whose engine died."""
        if self.core.dead():
            raise RuntimeError("the LLM engine died; this replica must restart")

    async def __del__(self):
        await self.core.aclose()


@serve.deployment
class AlarmIngress:
    """`alarm.v1.AlarmService` (Generate, GenerateStream) and `grpc.health.v1.Health` (Check, Watch, List).

    Every failure becomes one status code from `core.grpc_status` with a message for the client; the stack trace
    stays in the replica's log. The request id goes back in the response and in the trailing metadata.
    """

    def __init__(self, cfg: dict, encoders: dict, fusion, llm):
        self.cfg = ServeConfig.model_validate(cfg)
        self.encoders, self.fusion, self.llm = encoders, fusion, llm
        self._catalog: dict[str, tuple[str, ...]] | None = None
        self._ready_at = 0.0
        # our own request metrics: Serve's count a failed unary call as OK (the status travels in the context)
        self._requests = metrics.Counter(
            "alarm_requests", description="gRPC requests by method and status code", tag_keys=("method", "code"))
        self._latency = metrics.Histogram(
            "alarm_request_latency_ms", description="gRPC request latency (server side)", tag_keys=("method",),
            boundaries=[50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000])

    # -- alarm.v1.AlarmService ----------------------------------------------------------------------------------

    async def Generate(self, request: pb.GenerateRequest, grpc_context) -> pb.GenerateResponse:  # noqa: N802
        arrival, rid, code = time.time(), _proxy_request_id(grpc_context), "OK"
        try:
            rid = request_id_of(request, rid)
            parsed, blocks = await self._prepare(request, rid)
            response = self.llm.generate.remote(parsed.llm, *blocks)
            try:
                final = await response
            except asyncio.CancelledError:  # client deadline or cancel: Serve does not cancel running children
                _cancel(response, *blocks)
                raise
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
            parsed, blocks = await self._prepare(request, rid)
            events = self.llm.options(stream=True).stream.remote(parsed.llm, *blocks)
            done = False
            try:
                async for ev in events:
                    if isinstance(ev, Final):
                        done = True
                        yield pb.GenerateStreamResponse(
                            final=response_pb(ev, rid, parsed.return_reasoning, arrival, parsed.decode_ms))
                    elif (msg := stream_pb(ev, parsed.return_reasoning)) is not None:
                        yield msg
            finally:
                if not done:  # client gone (cancel, deadline) or a failure: the LLM replica aborts its request
                    _cancel(events, *blocks)
        except (asyncio.CancelledError, GeneratorExit):  # the client left mid-stream
            code = "CANCELLED"
            raise
        except Exception as e:
            code = self._fail(grpc_context, e, rid, in_stream=True)
            # raising (not returning) carries the code: Serve only sends a stream's context with a message
            raise _StreamFailed(rid) from e
        finally:
            self._record("GenerateStream", code, arrival)

    async def _prepare(self, request: pb.GenerateRequest, rid: str):
        parsed = await asyncio.to_thread(parse_request, request, self.cfg, rid)  # decodes audio off the loop
        if parsed.audio is None:
            return parsed, []
        catalog = await self._adapters()
        check_adapters(parsed.adapters, catalog)
        needed = sorted({e for a in parsed.adapters for e in catalog[a]})
        states = {e: self.encoders[e].encode.remote(parsed.audio) for e in needed}
        blocks = [
            self.fusion.options(multiplexed_model_id=a).fuse.remote(**{e: states[e] for e in catalog[a]})
            for a in parsed.adapters
        ]
        return parsed, blocks

    async def _adapters(self) -> dict[str, tuple[str, ...]]:
        if self._catalog is None:
            self._catalog = await self.fusion.catalog.remote()
        return self._catalog

    def _fail(self, grpc_context, e: Exception, rid: str, in_stream: bool = False) -> str:
        code, message = grpc_status(e, rid)
        if in_stream:  # a failed stream carries no trailing metadata through Serve: name the request here
            message = f"{message} [request_id={rid}]"
        if code.name == "INTERNAL":
            log.exception("request %s failed", rid)
        else:
            log.info("request %s: %s: %s", rid, code.name, message)
        grpc_context.set_code(code)
        grpc_context.set_details(message)
        return code.name

    def _record(self, method: str, code: str, arrival: float) -> None:
        self._requests.inc(tags={"method": method, "code": code})
        self._latency.observe((time.time() - arrival) * 1e3, tags={"method": method})

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
        """Streams the status now and whenever it changes (polled once a second) for at most WATCH_S seconds, so
        watchers cannot hold the ingress's request slots forever; clients re-watch when the stream ends."""
        from grpc_health.v1 import health_pb2

        last, t0 = None, time.monotonic()
        while time.monotonic() - t0 < WATCH_S:
            status = (await self._status(request.service) if request.service in ("", GRPC_SERVICE)
                      else health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(1.0)

    async def List(self, request, grpc_context):  # noqa: N802
        from grpc_health.v1 import health_pb2

        return health_pb2.HealthListResponse(statuses={
            s: health_pb2.HealthCheckResponse(status=await self._status(s)) for s in ("", GRPC_SERVICE)
        })

    async def _status(self, service: str) -> int:
        """"" = liveness (this replica answers). The service name = readiness: every deployment of the
        application has a running replica (so every model is loaded and the LLM has warmed up; each replica's
        constructor does that before Serve marks it running). Deploying, upgrading in place, autoscaling or one
        replica restarting keep it SERVING while replicas run; it asks Serve's controller, never the model
        replicas, so it stays fast and truthful when their queues are full."""
        from grpc_health.v1 import health_pb2

        if service == "":
            return health_pb2.HealthCheckResponse.SERVING
        if time.monotonic() - self._ready_at < 2.0:  # cache a positive answer for probes that poll fast
            return health_pb2.HealthCheckResponse.SERVING
        ready = await asyncio.to_thread(_every_deployment_running)
        if ready:
            self._ready_at = time.monotonic()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING


class _StreamFailed(Exception):
    """Ends a failed stream; the status code and message are already on the gRPC context."""


def _cancel(*responses) -> None:
    for r in responses:
        try:
            r.cancel()
        except Exception:  # already finished or failed: nothing to cancel
            pass


def _every_deployment_running() -> bool:
    try:
        app = serve.get_replica_context().app_name
        status = serve.status().applications.get(app)
    except Exception:
        log.warning("readiness: cannot reach the Serve controller", exc_info=True)
        return False
    if status is None or status.status in ("DELETING", "DEPLOY_FAILED") or not status.deployments:
        return False
    return all(d.replica_states.get("RUNNING", 0) > 0 for d in status.deployments.values())


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
