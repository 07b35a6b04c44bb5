"""`alarm-client AUDIO --prompt "..."`: ask a running ALARM server about a clip; the reasoning streams to stderr
and the answer to stdout.

    alarm-client clip.wav --prompt "What is happening?" --reasoning          # 127.0.0.1:9000
    alarm-client --health                                                    # exit 0 iff SERVING
    alarm-client clip.wav --prompt "..." --target host:443 --tls --ca ca.pem --token-file token
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc

from alarm_client.client import DEFAULT_TARGET, AlarmClient

TOKEN_ENV = "ALARM_TOKEN"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="alarm-client", description=__doc__.split("\n")[0])
    p.add_argument("audio", nargs="?", help="audio file (sent as it is), or a URI the server reads (s3://...)")
    p.add_argument("--prompt", help="the question or instruction about the audio")
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"server host:port (default {DEFAULT_TARGET})")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--reasoning", action="store_true", help="also stream the reasoning (to stderr)")
    p.add_argument("--max-thinking-tokens", type=int, default=0, help="0 = server default, -1 = unlimited")
    p.add_argument("--no-thinking", action="store_true", help="answer without reasoning (a thinking budget of 0)")
    p.add_argument("--max-tokens", type=int, default=0, help="0 = server default")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the answer where TEXT first appears (repeatable, up to 4; the reasoning is not cut)")
    p.add_argument("--adapter", default="", help="adapter id (default: the server's)")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    p.add_argument("--health", action="store_true", help="check readiness and exit 0 iff SERVING")
    p.add_argument("--models", action="store_true", help="list the adapters the server offers and exit")
    p.add_argument("--tls", action="store_true", help="connect over TLS (a TLS-terminating front)")
    p.add_argument("--ca", default=None, help="PEM file of the CA to trust (implies --tls)")
    p.add_argument("--token-file", default=None, help=f"file holding the bearer token (else ${TOKEN_ENV})")
    args = p.parse_args(argv)
    token = Path(args.token_file).read_text().strip() if args.token_file else os.environ.get(TOKEN_ENV)
    client = AlarmClient(args.target, timeout_s=args.timeout, tls=args.tls, ca=args.ca, token=token or None)
    try:
        if args.health:
            status = client.health()
            print(status)
            return 0 if status == "SERVING" else 1
        if args.models:
            for m in client.list_models():
                print("\t".join([m.id, ",".join(m.encoders), m.base_model, "default" if m.is_default else ""]))
            return 0
        if args.prompt is None:
            p.error("--prompt is required (or use --health / --models)")
        if args.audio is not None and "://" not in args.audio and not Path(args.audio).is_file():
            p.error(f"audio file not found: {args.audio}")
        show(client.stream(args.audio, args.prompt, system_prompt=args.system_prompt,
                           max_thinking_tokens=args.max_thinking_tokens, max_tokens=args.max_tokens,
                           temperature=args.temperature, seed=args.seed, adapter_id=args.adapter,
                           return_reasoning=args.reasoning, no_thinking=args.no_thinking, stop=args.stop))
        return 0
    except grpc.RpcError as e:
        print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()


def show(messages) -> None:
    """Reasoning deltas to stderr, answer deltas to stdout; the reasoning's line ends before the answer starts."""
    in_reasoning = False
    for msg in messages:
        kind = msg.WhichOneof("event")
        if kind == "reasoning_delta":
            sys.stderr.write(msg.reasoning_delta)
            sys.stderr.flush()
            in_reasoning = True
        elif kind == "answer_delta":
            if in_reasoning:
                sys.stderr.write("\n")
                in_reasoning = False
            sys.stdout.write(msg.answer_delta)
            sys.stdout.flush()
        elif kind == "final":
            f = msg.final
            if in_reasoning:
                sys.stderr.write("\n")
            sys.stdout.write("\n")
            print(f"[{f.usage.total_tokens} new tokens ({f.usage.reasoning_tokens} reasoning); "
                  f"{f.timings.total_ms:.0f} ms; request {f.request_id}]", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
