"""`python -m alarm.client AUDIO --prompt "..."`: ask a running ALARM server about a clip; the answer streams to
the terminal. `AlarmClient` (services/serve/client.py, re-exported here) is the same thing for programs.

    python -m alarm.client clip.wav --prompt "What is happening?"            # 127.0.0.1:9000
    python -m alarm.client s3://bucket/clip.flac --prompt "..." --reasoning  # the server reads the URI
    python -m alarm.client --health                                          # exit 0 iff SERVING

    from alarm.client import AlarmClient
    with AlarmClient("127.0.0.1:9000") as client:
        reply = client.generate("clip.wav", "What is happening?", max_thinking_tokens=512)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.client import DEFAULT_TARGET, AlarmClient, make_request

__all__ = ["AlarmClient", "make_request", "main"]


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
