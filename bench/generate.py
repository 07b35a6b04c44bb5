"""Corpus rows/s: the Ray Data pipeline vs a direct vLLM offline loop over the same rows, in one process.

    python bench/generate.py [--preset tiny] [key=value ...]

Baseline: the same row functions and both LLM passes (R0 + self-rephrase) called directly on one in-process
vLLM engine over the same batches of `workers.batch_size` rows, timed after the engine is built. Pipeline: `build(cfg)` with `workers.num_workers` actors, run at N and 2N rows; its rate is the marginal
one, N / (T(2N) - T(N)), which cancels the fixed costs (actor and engine start-up) that a real corpus amortises.
Target: ratio >= 0.9 at one worker.
"""

from __future__ import annotations

import argparse
import os
import time

from alarm.cli import add_config_args, config_from_args
from alarm.config import CorpusConfig


def source_rows(cfg: CorpusConfig) -> list[dict]:
    from alarm.corpus import rows as R
    from alarm.corpus.synthetic import synthetic_row

    out = []
    for s in cfg.sources:
        for i in range(s.num_clips):
            r = R.probe_row(synthetic_row(s, i), cfg.filters.max_duration_s)
            out.append(R.prompt_row(R.describe_row(r), cfg.prompts.mode))
    return out


def baseline(cfg: CorpusConfig) -> tuple[float, int]:
    from alarm.corpus import rows as R
    from services.engines.llm import VLLMEngine

    engine = VLLMEngine(cfg.engine)
    rows = source_rows(cfg)
    R.llm_stages(rows[:2], engine, cfg)  # warm-up
    t0 = time.perf_counter()
    rows, out, bs = source_rows(cfg), [], cfg.workers.batch_size
    for i in range(0, len(rows), bs):  # the same batches the pipeline's worker gets
        out += [R.finish_row(r, cfg.filters, cfg.split.val_fraction, cfg.split.salt, engine.count_tokens)
                for r in R.llm_stages(rows[i : i + bs], engine, cfg)]
    return time.perf_counter() - t0, len(out)


def pipeline(cfg: CorpusConfig) -> float:
    """Wall seconds for the whole pipeline (actor and engine start-up included) over cfg's rows."""
    from services.connect import init_ray
    from services.corpus.pipeline import build

    init_ray(cfg.ray)
    t0 = time.perf_counter()
    n = sum(b.num_rows for b in build(cfg).iter_batches(batch_size=cfg.workers.batch_size, batch_format="pyarrow"))
    assert n == sum(s.num_clips for s in cfg.sources), n
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser, "corpus", "tiny", CorpusConfig)
    args = parser.parse_args()
    args.overrides = ["sources.0.num_clips=64", "workers.batch_size=16", *args.overrides]
    cfg = config_from_args(args, CorpusConfig, "corpus")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    t_base, n_base = baseline(cfg)
    double = cfg.model_copy(update={"sources": [s.model_copy(update={"num_clips": 2 * s.num_clips})
                                                for s in cfg.sources]})
    t_n, t_2n = pipeline(cfg), pipeline(double)
    base, pipe = n_base / t_base, n_base / (t_2n - t_n)
    print(f"rows={n_base} batch={cfg.workers.batch_size} workers={cfg.workers.num_workers} engine={cfg.engine.checkpoint}")
    print(f"direct vLLM loop : {base:7.2f} rows/s ({n_base} rows in {t_base:.1f} s, engine already built)")
    print(f"Ray Data pipeline: {pipe:7.2f} rows/s marginal ({n_base} rows: {t_n:.1f} s, {2 * n_base} rows: "
          f"{t_2n:.1f} s, start-up included in both)")
    print(f"ratio pipeline/direct: {pipe / base:.2f} (target >= 0.9)")

if __name__ == "__main__":
    main()
