"""`python -m alarm.client AUDIO --prompt "..."`: ask a running ALARM server about a clip; the answer streams to
the terminal. `AlarmClient` (services/serve/client.py, re-exported here) is the same thing for programs.

    python -m alarm.client clip.wav --prompt "What is happening?"            # 127.0.0.1:9000
    python -m alarm.client s3://bucket/clip.flac --prompt "..." --reasoning  # the server reads the URI
    python -m alarm.client --health                                          # exit 0 iff SERVING
    python -m alarm.client --models                                          # the adapters it offers
    python -m alarm.client clip.wav --prompt "..." --target alarm.example.com:443 --tls --ca ca.pem --token-file t
    python -m alarm.client clip.wav --prompt "What is happening?" --stop $'\\n'     # the answer's first line only

    from alarm.client import AlarmClient
    with AlarmClient("127.0.0.1:9000") as client:
        reply = client.generate("clip.wav", "What is happening?", max_thinking_tokens=512)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import grpc

from services.serve._proto.alarm.v1 import alarm_pb2 as pb
from services.serve.client import DEFAULT_TARGET, AlarmClient, make_request

__all__ = ["AlarmClient", "make_request", "main"]
TOKEN_ENV = "ALARM_TOKEN"


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
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the answer where TEXT first appears (repeatable, up to 4; the reasoning is not cut)")
    p.add_argument("--adapter", default="", help="adapter id (default: the server's)")
    p.add_argument("--ensemble", default="", help="comma-separated adapter ids for ALARM-E")
    p.add_argument("--application", default=None, help="Serve application (only with several on one cluster)")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    p.add_argument("--retries", type=int, default=0, help="retry UNAVAILABLE (a replica or node lost) up to N "
                   "times, with backoff, within --timeout, while no output has arrived (default 0)")
    p.add_argument("--health", action="store_true", help="check readiness and exit 0 iff SERVING")
    p.add_argument("--models", action="store_true", help="list the adapters the server offers and exit")
    p.add_argument("--tls", action="store_true", help="connect over TLS (a TLS-terminating front)")
    p.add_argument("--ca", default=None, help="PEM file of the CA to trust (implies --tls)")
    p.add_argument("--token", default=None, help=f"bearer token (default: ${TOKEN_ENV}; prefer --token-file)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token")
    args = p.parse_args(argv)
    if args.retries < 0:
        p.error(f"--retries {args.retries}: expected 0 or more")

    token = read_token(args.token, args.token_file)
    client = AlarmClient(args.target, timeout_s=args.timeout, application=args.application, tls=args.tls,
                         ca=args.ca, token=token, retries=args.retries)
    try:
        if args.models:
            for m in client.list_models():
                print("\t".join([m.id, ",".join(m.encoders), m.base_model, "default" if m.is_default else ""]))
            return 0
        if args.health:
            status = client.health()
            print(status)
            return 0 if status == "SERVING" else 1
        if args.prompt is None:
            p.error("--prompt is required (or use --health)")
        if args.audio is not None and "://" not in args.audio and not Path(args.audio).is_file():
            p.error(f"audio file not found: {args.audio}")
        ensemble = [a for a in args.ensemble.split(",") if a]
        final = show(client.stream(
            args.audio, args.prompt, system_prompt=args.system_prompt, max_thinking_tokens=args.max_thinking_tokens,
            max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            seed=args.seed, adapter_id=args.adapter, ensemble=ensemble, return_reasoning=args.reasoning,
            no_thinking=args.no_thinking,
            stop=args.stop,
        ))
        if final is not None:
            u, t = final.usage, final.timings
            why = pb.FinishReason.Name(final.finish_reason) + (f" at {final.stop_string!r}" if final.stop_string else "")
            print(f"[{why}; {u.prompt_tokens} prompt ({u.audio_tokens} audio) + "
                  f"{u.total_tokens} new tokens ({u.reasoning_tokens} reasoning); {t.total_ms:.0f} ms; "
                  f"request {final.request_id}]", file=sys.stderr)
        return 0
    except grpc.RpcError as e:
        print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()


def read_token(token: str | None, token_file: str | None) -> str | None:
    """--token, else the first line of --token-file, else $ALARM_TOKEN, else None."""
    if token:
        return token
    if token_file:
        return Path(token_file).read_text().strip() or None
    return os.environ.get(TOKEN_ENV) or None


def show(messages: Iterable[pb.GenerateStreamResponse]) -> pb.GenerateResponse | None:
    """Streams reasoning deltas to stderr and answer deltas to stdout as they come; the reasoning ends with a line
    break before the answer starts (both streams are usually one terminal). Returns the final response."""
    final, open_line = None, ""  # open_line: the stream whose last line has no line break yet
    for msg in messages:
        kind = msg.WhichOneof("event")
        if kind == "final":
            final = msg.final
            continue
        text, stream, name = ((msg.reasoning_delta, sys.stderr, "err") if kind == "reasoning_delta"
                              else (msg.answer_delta, sys.stdout, "out"))
        if not text:
            continue
        if open_line and open_line != name:
            (sys.stderr if open_line == "err" else sys.stdout).write("\n")
        stream.write(text)
        stream.flush()
        open_line = "" if text.endswith("\n") else name
    if open_line == "err":  # reasoning only (no answer: out of tokens)
        sys.stderr.write("\n")
    sys.stdout.write("\n")
    sys.stdout.flush()
    return final


if __name__ == "__main__":
    sys.exit(main())
