"""`python -m alarm.eval`: multiple-choice evaluation on MMAU, MMAR, MMSU or AIR-Bench Foundation.

    python -m alarm.eval --benchmark mmau --meta mmau-test-mini.json --audio-root DIR --out runs/eval/mmau \
        --serve-preset alarm-ca --max-thinking-tokens 8192 --max-tokens 14000    # in-process serving pipeline
    python -m alarm.eval --benchmark mmsu ... --target 127.0.0.1:9000 --format native   # a running server
    python -m alarm.eval score --out runs/eval/mmau --parse reference                 # rescore, no inference

Writes run.json, predictions.jsonl (resumable), report.md, report.json, scored.jsonl and the benchmark's
submission file into --out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from alarm.errors import AlarmError
from alarm.eval.benchmarks import BENCHMARKS, load_items
from alarm.eval.harness import rescore, run_benchmark
from alarm.eval.parsing import FALLBACKS, PARSE_MODES
from alarm.eval.prompts import FORMATS
from alarm.eval.runner import Answerer, RunSettings


def _scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scorer", choices=("official", "strict", "both"), default="both")
    p.add_argument("--parse", choices=PARSE_MODES, default="standard",
                   help="standard (ours) or reference (ALARM's int() parse / the official letter rule)")
    p.add_argument("--fallback", choices=FALLBACKS, default="none",
                   help="unparsable answers: none = no option, scored wrong (default, with every --parse), "
                        "first = option 0 (what ALARM did), random = seeded by --seed")
    p.add_argument("--seed", type=int, default=None,
                   help="sampling seed of every request; also seeds the random fallback")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alarm.eval", description=__doc__.split("\n")[0],
                                epilog="`python -m alarm.eval score --help`: rescore an existing run.")
    p.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    p.add_argument("--meta", required=True, action="append",
                   help="metadata .json/.jsonl (repeat to merge by id)")
    p.add_argument("--audio-root", required=True,
                   help="folder or s3://bucket/prefix the metadata's audio paths are relative to")
    p.add_argument("--out", required=True, help="results folder (rerun with the same one to resume)")
    p.add_argument("--serve-preset", default="tiny",
                   help="in-process serving preset (tiny, alarm-ca, or a .yaml path)")
    p.add_argument("--serve-override", action="append", default=[], metavar="key.sub=value",
                   help="serve config override, e.g. adapters.tiny.checkpoint=runs/x/adapter (repeatable)")
    p.add_argument("--target", default=None, help="host:port of a running server (instead of in-process)")
    p.add_argument("--format", choices=FORMATS, default="alarm",
                   help="alarm (<answer> option ids) or native (the benchmark's own answer format)")
    p.add_argument("--max-thinking-tokens", type=int, default=8192,
                   help="thinking budget (paper: 8192; 0 = server default, -1 = unlimited)")
    p.add_argument("--max-tokens", type=int, default=0,
                   help="new tokens in all, thinking included (0 = server default, fitted to the context)")
    p.add_argument("--temperature", type=float, default=None, help="default: the server's")
    p.add_argument("--crop-audio-s", type=float, default=None,
                   help="send clips cut to their first N seconds (ALARM cropped AIR-Bench to 60 s; the "
                        "server rejects clips at or over its audio.max_duration_s, so use e.g. 59.9)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-errors", type=int, default=10, help="stop after this many failed requests")
    p.add_argument("--timeout", type=float, default=900.0, help="gRPC deadline per request, seconds")
    _scoring_args(p)
    return p


def score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alarm.eval score",
                                description="Rescore a run's predictions (no inference).")
    p.add_argument("--out", required=True, help="the run's results folder")
    p.add_argument("--predictions", default=None, help="default: OUT/predictions.jsonl")
    p.add_argument("--benchmark", choices=sorted(BENCHMARKS), default=None, help="default: from run.json")
    p.add_argument("--meta", action="append", default=[], help="default: the run's metadata files")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="the prompt format of the run (default: from run.json)")
    _scoring_args(p)
    return p


def main(argv: list[str] | None = None, answerer: Answerer | None = None) -> int:
    """answerer: used instead of building one (tests inject a fake)."""
    argv = sys.argv[1:] if argv is None else argv
    scoring = argv[:1] == ["score"]
    parser = score_parser() if scoring else run_parser()
    args = parser.parse_args(argv[1:] if scoring else argv)
    scorers = ("official", "strict") if args.scorer == "both" else (args.scorer,)
    if args.fallback == "random" and args.seed is None and not scoring:  # score: the run's seed will do
        parser.error("--fallback random needs --seed")
    try:
        if scoring:
            paths = rescore(args.out, benchmark=args.benchmark, meta=args.meta, fmt=args.format,
                            scorers=scorers, parse=args.parse, fallback=args.fallback, seed=args.seed,
                            predictions=args.predictions, limit=args.limit)
            failed = 0
        else:
            paths, failed = asyncio.run(_run(args, scorers, answerer))
    except AlarmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 1 if failed else 0


async def _run(args: argparse.Namespace, scorers: tuple[str, ...], answerer: Answerer | None):
    if 0 < args.max_tokens <= args.max_thinking_tokens:
        print(f"warning: --max-tokens {args.max_tokens} counts the thinking too; a full thinking budget of "
              f"{args.max_thinking_tokens} leaves no room for the answer", file=sys.stderr)
    items = load_items(args.benchmark, args.meta)[:args.limit]
    settings = RunSettings(args.benchmark, args.format, args.max_thinking_tokens, args.max_tokens,
                           args.temperature, args.seed, args.crop_audio_s)
    if answerer is not None:
        model = f"injected {type(answerer).__name__}"
    elif args.target:
        model = f"gRPC {args.target}"
    else:
        model = f"in-process serve preset {args.serve_preset}" + "".join(f" {o}" for o in args.serve_override)

    async def make() -> Answerer:
        if answerer is not None:
            return answerer
        from alarm.eval.answerers import build_answerer  # torch / vLLM / grpc: only when inference runs

        return await build_answerer(args.target, args.serve_preset, args.serve_override,
                                    concurrency=args.concurrency, temperature=args.temperature,
                                    timeout_s=args.timeout)

    return await run_benchmark(items, args.meta, args.audio_root, args.out, settings, make, model=model,
                               concurrency=args.concurrency, max_errors=args.max_errors, scorers=scorers,
                               parse=args.parse, fallback=args.fallback)


if __name__ == "__main__":
    sys.exit(main())
