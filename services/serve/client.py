"""The gRPC client of an ALARM server (`python -m alarm.client` is its command; programs import it from
`alarm.client`).

    with AlarmClient("127.0.0.1:9000") as client:
        reply = client.generate("clip.wav", "What is happening?", max_thinking_tokens=512)
        for msg in client.stream("clip.wav", "Describe it.", return_reasoning=True): ...
    AlarmClient("alarm.example.com:443", tls=True, ca="ca.pem", token=os.environ["ALARM_TOKEN"])  # behind a TLS front
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc

from alarm.config import GRPC_SERVICE
from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve._proto.alarm.v1 import alarm_pb2_grpc as pb_grpc
from services.serve.retry import Backoff, RetryingStream, call_with_retries

DEFAULT_TARGET = "127.0.0.1:9000"


def make_request(
    audio: bytes | str | Path | None, prompt: str, *, system_prompt: str | None = None, max_thinking_tokens: int = 0,
    max_tokens: int = 0, temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
    seed: int | None = None, adapter_id: str = "", ensemble: list[str] | tuple[str, ...] = (),
    return_reasoning: bool = False, request_id: str = "", no_thinking: bool = False,
    stop: str | list[str] | tuple[str, ...] = (),
) -> pb.GenerateRequest:
    """A GenerateRequest. audio: file bytes, a local path (read here), a URI the server reads, or None (text
    only). no_thinking answers without reasoning (budget 0). stop: one stop string or several (they end the answer,
    not the reasoning). Zero / None values mean the server's defaults."""
    sampling = pb.SamplingParams(**{k: v for k, v in dict(temperature=temperature, top_p=top_p, top_k=top_k,
                                                           seed=seed).items() if v is not None})
    req = pb.GenerateRequest(
        prompt=prompt, max_thinking_tokens=max_thinking_tokens, max_tokens=max_tokens, sampling=sampling,
        adapter_id=adapter_id, ensemble_adapter_ids=list(ensemble), return_reasoning=return_reasoning,
        request_id=request_id, no_thinking=no_thinking, stop=[stop] if isinstance(stop, str) else list(stop),
    )
    if system_prompt is not None:
        req.system_prompt = system_prompt
    if isinstance(audio, bytes | bytearray):
        req.audio_bytes = bytes(audio)
    elif isinstance(audio, str) and "://" in audio:
        req.audio_uri = audio
    elif audio is not None:
        req.audio_bytes = Path(audio).read_bytes()
    return req


class AlarmClient:
    """A gRPC channel to an ALARM server.

    Args:
        target: host:port of the Serve gRPC proxy.
        timeout_s: Default deadline per call (long reasoning takes tens of seconds on a GPU).
        application: Serve application name, needed only when the cluster runs several applications.
        max_receive_bytes: Largest response accepted (grpcio's default is 4 MiB).
        tls: Connect over TLS (to the TLS-terminating front of a cluster; Serve's own proxy speaks plaintext).
        ca: PEM file of the CA to trust (e.g. a self-signed one); None = the system's roots. Implies tls.
        token: Bearer token the server requires (`serve.auth`), sent as `authorization` metadata on every call.
        retries: How many more times a call that ends with UNAVAILABLE (a replica or its node lost, the server
            not ready) is tried, after a pause with exponential backoff and jitter from `backoff_s`, within the
            call's deadline; a stream only while it has yielded nothing (services.serve.retry). 0: never.
        backoff_s: The first retry's largest pause (doubled each time, capped at 5 s).
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout_s: float = 120.0, application: str | None = None,
                 max_receive_bytes: int = 64 * 2**20, tls: bool = False, ca: str | Path | None = None,
                 token: str | None = None, retries: int = 0, backoff_s: float = 0.2):
        if retries < 0 or backoff_s < 0:
            raise ValueError(f"retries={retries}, backoff_s={backoff_s}: expected numbers >= 0")
        self.timeout_s = timeout_s
        self.backoff = Backoff(retries=retries, base_s=backoff_s, max_s=max(5.0, backoff_s))
        self.metadata = [("application", application)] if application else []
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))
        options = [("grpc.max_receive_message_length", max_receive_bytes)]
        if tls or ca is not None:
            roots = Path(ca).read_bytes() if ca is not None else None
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.AlarmServiceStub(self.channel)

    def generate(self, audio, prompt: str, *, timeout_s: float | None = None, **kwargs) -> pb.GenerateResponse:
        """One complete response; raises grpc.RpcError with the server's status code and message."""
        req, md = make_request(audio, prompt, **kwargs), self._metadata(kwargs)
        return call_with_retries(lambda left: self.stub.Generate(req, timeout=left, metadata=md),
                                 timeout_s or self.timeout_s, self.backoff)

    def generate_with_call(self, audio, prompt: str, *, timeout_s: float | None = None, **kwargs):
        """(response, call): the call gives trailing_metadata() (with `request_id`) and code()."""
        req, md = make_request(audio, prompt, **kwargs), self._metadata(kwargs)
        return call_with_retries(lambda left: self.stub.Generate.with_call(req, timeout=left, metadata=md),
                                 timeout_s or self.timeout_s, self.backoff)

    def stream(self, audio, prompt: str, *, timeout_s: float | None = None, **kwargs) -> Iterator[pb.GenerateStreamResponse]:
        """Reasoning/answer deltas, then one `final` message. The returned iterator is also the call: `.cancel()`
        stops generation on the server. With `retries`, a stream that fails before its first message starts again."""
        req, md = make_request(audio, prompt, **kwargs), self._metadata(kwargs)
        if not self.backoff.retries:
            return self.stub.GenerateStream(req, timeout=timeout_s or self.timeout_s, metadata=md)
        return RetryingStream(lambda left: self.stub.GenerateStream(req, timeout=left, metadata=md),
                              timeout_s or self.timeout_s, self.backoff)

    def list_models(self, timeout_s: float = 10.0) -> list[pb.Model]:
        """The adapters the server offers (id, encoders, base LLM, whether it is the default)."""
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout_s, metadata=self.metadata or None).models)

    def health(self, service: str = GRPC_SERVICE, timeout_s: float = 5.0) -> str:
        """SERVING | NOT_SERVING | UNKNOWN | SERVICE_UNKNOWN (readiness for the service name, liveness for "")."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        reply = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s, metadata=self.metadata or None)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def _metadata(self, kwargs: dict) -> list[tuple[str, str]] | None:
        md = list(self.metadata)
        if kwargs.get("request_id"):
            md.append(("request_id", kwargs["request_id"]))
        return md or None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AlarmClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
