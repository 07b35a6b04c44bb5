"""`python -m alarm.client AUDIO --prompt "..."`: ask a running ALARM server about a clip; the answer streams to
the terminal. `AlarmClient` is the same thing for programs.

    python -m alarm.client clip.wav --prompt "What is happening?"            # 127.0.0.1:9000
    python -m alarm.client s3://bucket/clip.flac --prompt "..." --reasoning  # the server reads the URI
    python -m alarm.client --health                                          # exit 0 iff SERVING

    with AlarmClient("127.0.0.1:9000") as client:
        reply = client.generate("clip.wav", "What is happening?", max_thinking_tokens=512)
        for msg in client.stream("clip.wav", "Describe it.", return_reasoning=True): ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc

from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve._proto.alarm.v1 import alarm_pb2_grpc as pb_grpc

SERVICE = "alarm.v1.AlarmService"
DEFAULT_TARGET = "127.0.0.1:9000"


def make_request(
    audio: bytes | str | Path | None, prompt: str, *, system_prompt: str | None = None, max_thinking_tokens: int = 0,
    max_tokens: int = 0, temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
    seed: int | None = None, adapter_id: str = "", ensemble: list[str] | tuple[str, ...] = (),
    return_reasoning: bool = False, request_id: str = "", no_thinking: bool = False,
) -> pb.GenerateRequest:
    """A GenerateRequest. audio: file bytes, a local path (read here), a URI the server reads, or None (text
    only). Zero / None values mean the server's defaults; no_thinking answers without reasoning (budget 0)."""
    sampling = pb.SamplingParams(**{k: v for k, v in dict(temperature=temperature, top_p=top_p, top_k=top_k,
                                                           seed=seed).items() if v is not None})
    req = pb.GenerateRequest(
        prompt=prompt, max_thinking_tokens=max_thinking_tokens, max_tokens=max_tokens, sampling=sampling,
        adapter_id=adapter_id, ensemble_adapter_ids=list(ensemble), return_reasoning=return_reasoning,
        request_id=request_id, no_thinking=no_thinking,
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
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout_s: float = 120.0, application: str | None = None,
                 max_receive_bytes: int = 64 * 2**20):
        self.timeout_s = timeout_s
        self.metadata = [("application", application)] if application else []
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", max_receive_bytes)])
        self.stub = pb_grpc.AlarmServiceStub(self.channel)

    def generate(self, audio, prompt: str, *, timeout_s: float | None = None, **kwargs) -> pb.GenerateResponse:
        """One complete response; raises grpc.RpcError with the server's status code and message."""
        return self.stub.Generate(make_request(audio, prompt, **kwargs), timeout=timeout_s or self.timeout_s,
                                  metadata=self._metadata(kwargs))

    def generate_with_call(self, audio, prompt: str, *, timeout_s: float | None = None, **kwargs):
        """(response, call): the call gives trailing_metadata() (with `request_id`) and code()."""
        return self.stub.Generate.with_call(make_request(audio, prompt, **kwargs), timeout=timeout_s or self.timeout_s,
                                            metadata=self._metadata(kwargs))

    def stream(self, audio, prompt: str, *, timeout_s: float | None = None, **kwargs) -> Iterator[pb.GenerateStreamResponse]:
        """Reasoning/answer deltas, then one `final` message. The returned iterator is also the call: `.cancel()`
        stops generation on the server."""
        return self.stub.GenerateStream(make_request(audio, prompt, **kwargs), timeout=timeout_s or self.timeout_s,
                                        metadata=self._metadata(kwargs))

    def health(self, service: str = SERVICE, timeout_s: float = 5.0) -> str:
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alarm.client", description=__doc__.split("\n")[0])
    p.add_argument("audio", nargs="?", help="audio file, or a URI the server reads (s3://...)")
    p.add_argument("--prompt", help="the question or instruction about the audio")
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"server host:port (default {DEFAULT_TARGET})")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--reasoning", action="store_true", help="also stream the reasoning (to stderr)")
    p.add_argument("--max-thinking-tokens", type=int, default=0, help="0 = server default, -1 = unlimited")
    p.add_argument("--no-thinking", action="store_true", help="answer without reasoning (a thinking budget of 0)")
    p.add_argument("--max-tokens", type=int, default=0, help="0 = server default")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--adapter", default="", help="adapter id (default: the server's)")
    p.add_argument("--ensemble", default="", help="comma-separated adapter ids for ALARM-E")
    p.add_argument("--application", default=None, help="Serve application (only with several on one cluster)")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    p.add_argument("--health", action="store_true", help="check readiness and exit 0 iff SERVING")
    args = p.parse_args(argv)

    client = AlarmClient(args.target, timeout_s=args.timeout, application=args.application)
    try:
        if args.health:
            status = client.health()
            print(status)
            return 0 if status == "SERVING" else 1
        if args.prompt is None:
            p.error("--prompt is required (or use --health)")
        if args.audio is not None and "://" not in args.audio and not Path(args.audio).is_file():
            p.error(f"audio file not found: {args.audio}")
        ensemble = [a for a in args.ensemble.split(",") if a]
        final = None
        for msg in client.stream(
            args.audio, args.prompt, system_prompt=args.system_prompt, max_thinking_tokens=args.max_thinking_tokens,
            max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            seed=args.seed, adapter_id=args.adapter, ensemble=ensemble, return_reasoning=args.reasoning,
            no_thinking=args.no_thinking,
        ):
            kind = msg.WhichOneof("event")
            if kind == "reasoning_delta":
                sys.stderr.write(msg.reasoning_delta)
                sys.stderr.flush()
            elif kind == "answer_delta":
                sys.stdout.write(msg.answer_delta)
                sys.stdout.flush()
            elif kind == "final":
                final = msg.final
        sys.stdout.write("\n")
        if final is not None:
            u, t = final.usage, final.timings
            print(f"[{pb.FinishReason.Name(final.finish_reason)}; {u.prompt_tokens} prompt ({u.audio_tokens} audio) + "
                  f"{u.total_tokens} new tokens ({u.reasoning_tokens} reasoning); {t.total_ms:.0f} ms; "
                  f"request {final.request_id}]", file=sys.stderr)
        return 0
    except grpc.RpcError as e:
        print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
