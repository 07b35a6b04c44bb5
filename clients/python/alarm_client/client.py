"""`AlarmClient`: a gRPC channel to an ALARM server (plaintext, or TLS to a TLS-terminating front), with an optional
bearer token. The audio goes as the file's bytes, undecoded: the server decodes wav, flac, ogg/opus and mp3.

    with AlarmClient("127.0.0.1:9000") as client:
        reply = client.generate("clip.wav", "What is happening?", max_thinking_tokens=512)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc

from alarm_client._proto.alarm.v1 import alarm_pb2 as pb
from alarm_client._proto.alarm.v1 import alarm_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:9000"
SERVICE = "alarm.v1.AlarmService"


def make_request(audio: bytes | str | Path | None, prompt: str, *, system_prompt: str | None = None,
                 max_thinking_tokens: int = 0, max_tokens: int = 0, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, seed: int | None = None, adapter_id: str = "",
                 ensemble: list[str] | tuple[str, ...] = (), return_reasoning: bool = False,
                 request_id: str = "", no_thinking: bool = False,
                 stop: str | list[str] | tuple[str, ...] = ()) -> pb.GenerateRequest:
    """A GenerateRequest. audio: file bytes, a local path (read here), a URI the server reads, or None (text
    only). no_thinking answers without reasoning (budget 0). stop: one stop string or several (they end the
    answer, not the reasoning). Zero / None values mean the server's defaults."""
    sampling = pb.SamplingParams(**{k: v for k, v in dict(temperature=temperature, top_p=top_p, top_k=top_k,
                                                           seed=seed).items() if v is not None})
    req = pb.GenerateRequest(prompt=prompt, max_thinking_tokens=max_thinking_tokens, max_tokens=max_tokens,
                             sampling=sampling, adapter_id=adapter_id, ensemble_adapter_ids=list(ensemble),
                             return_reasoning=return_reasoning, request_id=request_id, no_thinking=no_thinking,
                             stop=[stop] if isinstance(stop, str) else list(stop))
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
        target: host:port of the Serve gRPC proxy, or of a TLS front.
        timeout_s: Default deadline per call (long reasoning takes tens of seconds).
        tls: Connect over TLS; ca: PEM file of the CA to trust (implies tls; None = the system's roots).
        token: Bearer token the server requires, sent as `authorization` metadata.
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout_s: float = 120.0, tls: bool = False,
                 ca: str | Path | None = None, token: str | None = None, max_receive_bytes: int = 64 * 2**20):
        self.timeout_s = timeout_s
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        options = [("grpc.max_receive_message_length", max_receive_bytes)]
        if tls or ca is not None:
            roots = Path(ca).read_bytes() if ca is not None else None
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.AlarmServiceStub(self.channel)

    def generate(self, audio, prompt: str, *, timeout_s: float | None = None, **kwargs) -> pb.GenerateResponse:
        """One complete response; raises grpc.RpcError with the server's status code and message."""
        return self.stub.Generate(make_request(audio, prompt, **kwargs), timeout=timeout_s or self.timeout_s,
                                  metadata=self.metadata or None)

    def stream(self, audio, prompt: str, *, timeout_s: float | None = None,
               **kwargs) -> Iterator[pb.GenerateStreamResponse]:
        """Reasoning/answer deltas, then one `final` message; `.cancel()` on the iterator stops the server."""
        return self.stub.GenerateStream(make_request(audio, prompt, **kwargs), timeout=timeout_s or self.timeout_s,
                                        metadata=self.metadata or None)

    def list_models(self, timeout_s: float = 10.0) -> list[pb.Model]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout_s,
                                         metadata=self.metadata or None).models)

    def health(self, service: str = SERVICE, timeout_s: float = 5.0) -> str:
        """SERVING | NOT_SERVING | UNKNOWN | SERVICE_UNKNOWN (readiness for the service name, liveness for "")."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                timeout=timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AlarmClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
