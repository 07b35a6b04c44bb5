"""`python -m alarm.eval [--preset NAME] key=value ...`: multiple-choice benchmarks through the serving path.

MMAU, MMAR, MMSU or AIR-Bench Foundation, in process or against a running server:

    python -m alarm.eval --preset paper benchmark=mmau meta=[mmau-test-mini.json] audio_root=DIR \
        out=runs/eval/mmau serve.overrides=[adapters.alarm-ca.checkpoint=runs/x/adapter]     # in-process pipeline
    python -m alarm.eval benchmark=mmsu ... target=127.0.0.1:9000 format=native              # a running server
    python -m alarm.eval benchmark=mmau ... target=openai://127.0.0.1:8000/v1 model=alarm-ca  # any OpenAI-compatible one
    python -m alarm.eval score out=runs/eval/mmau parse=reference                           # rescore, no inference

Writes run.json, predictions.jsonl (resumable), report.md, report.json, scored.jsonl and the benchmark's
submission file into `out`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from alarm.cli import add_config_args, config_from_args
from alarm.config import EvalConfig, ScoreConfig, ServeConfig, load_config
from alarm.errors import AlarmError
from alarm.eval.benchmarks import load_items
from alarm.eval.harness import rescore, run_benchmark
from alarm.eval.runner import Answerer, RunSettings


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alarm.eval", description=__doc__.split("\n")[0],
                                epilog="`python -m alarm.eval score --help`: rescore an existing run.")
    add_config_args(p, "eval", "tiny", EvalConfig)
    return p


def score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alarm.eval score",
                                description="Rescore a run's predictions (no inference).")
    add_config_args(p, "eval", None, ScoreConfig)
    return p


def main(argv: list[str] | None = None, answerer: Answerer | None = None) -> int:
    """answerer: used instead of building one (tests inject a fake)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["score"]:
        s = config_from_args(score_parser().parse_args(argv[1:]), ScoreConfig, "eval")
        try:
            paths = rescore(s.out, benchmark=s.benchmark, meta=s.meta, fmt=s.format, scorers=s.scorers,
                            parse=s.parse, fallback=s.fallback, seed=s.seed, predictions=s.predictions,
                            limit=s.limit)
        except AlarmError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        failed = 0
    else:
        cfg = config_from_args(run_parser().parse_args(argv), EvalConfig, "eval")
        try:
            paths, failed = asyncio.run(_run(cfg, answerer))
        except AlarmError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 1 if failed else 0


async def _run(cfg: EvalConfig, answerer: Answerer | None):
    if 0 < cfg.max_tokens <= cfg.max_thinking_tokens:
        print(f"warning: max_tokens={cfg.max_tokens} counts the thinking too; a full thinking budget of "
              f"{cfg.max_thinking_tokens} leaves no room for the answer", file=sys.stderr)
    serve = None
    if answerer is not None:
        model = f"injected {type(answerer).__name__}"
    elif cfg.target:
        kind = "OpenAI API" if cfg.target.startswith("openai://") else "gRPC"
        model = f"{kind} {cfg.target}" + (f" model {cfg.model}" if cfg.model else "")
    else:  # validated before anything is written, so a typo never leaves a run.json naming the wrong model
        serve = load_config(ServeConfig, cfg.serve.preset, cfg.serve.overrides, section="serve")
        model = f"in-process serve preset {cfg.serve.preset}" + "".join(f" {o}" for o in cfg.serve.overrides)
    items = load_items(cfg.benchmark, cfg.meta)[:cfg.limit]
    settings = RunSettings(cfg.benchmark, cfg.format, cfg.max_thinking_tokens, cfg.max_tokens, cfg.temperature,
                           cfg.seed, cfg.crop_audio_s)

    async def make() -> Answerer:
        if answerer is not None:
            return answerer
        from services.serve.answerers import build_answerer  # torch / vLLM / grpc: only when inference runs

        return await build_answerer(cfg.target, serve, concurrency=cfg.concurrency, temperature=cfg.temperature,
                                    timeout_s=cfg.timeout_s, model=cfg.model, tls=cfg.tls, ca=cfg.ca,
                                    token=_token(cfg.token_file))

    return await run_benchmark(items, cfg.meta, cfg.audio_root, cfg.out, settings, make, model=model,
                               concurrency=cfg.concurrency, max_errors=cfg.max_errors, scorers=cfg.scorers,
                               parse=cfg.parse, fallback=cfg.fallback)


def _token(token_file: str | None) -> str | None:
    """The bearer token: the first line of token_file, else $ALARM_TOKEN, else None (kept off the command line)."""
    if token_file:
        return Path(token_file).read_text().strip() or None
    return os.environ.get("ALARM_TOKEN") or None


if __name__ == "__main__":
    sys.exit(main())
