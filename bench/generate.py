"""Corpus rows/s: the Ray Data pipeline vs direct vLLM loops over the same rows, one synchronous, one asynchronous.

    python bench/generate.py [--preset tiny] [key=value ...]

Direct synchronous loop (the baseline): the same row functions and every LLM pass called on one in-process
`vllm.LLM` over batches of `workers.batch_size` rows, each pass one `LLM.generate` that waits for its slowest row.
Direct asynchronous loop (the upper bound): the same rows through the workers' asynchronous engine in this process
(services.engines.stepped: vLLM's in-process core stepped by a thread on CPU, AsyncLLM elsewhere), up to
`engine.max_num_seqs` rows in flight, each row's next pass sent as soon as its last one ends. Both are timed after
their engine is built and warmed up, from the source clips (synthesised and probed, as the pipeline's read does) to
finished rows. Where vLLM's core runs in this process, each loop also prints its engine steps, the rows per step
and the cost of a row-step: the asynchronous engine gains only where a step of more rows costs less per row (a GPU;
on a CPU the 151,936-token logits make a step's cost grow with its rows). Pipeline: `build(cfg)` with
`workers.num_workers` actors, once per `workers.engine` (batch, async), each run at N and 2N rows; its rate is the
marginal one, N / (T(2N) - T(N)), which cancels the fixed costs (actor and engine start-up) that a real corpus
amortises. Targets at one worker: the
async pipeline >= 1.3x the synchronous loop and >= 0.9x the asynchronous one; the batch pipeline's ratio to the
synchronous loop is printed beside them (it is the default while async does not lead).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


class Steps:
    """Counts the steps of vLLM's in-process engine core (`LLMEngine.step`) and the rows each one ran, while on."""

    def __init__(self):
        self.on, self.n, self.rows, self.seconds = False, 0, 0, 0.0
        try:
            from vllm.v1.engine.llm_engine import LLMEngine
        except ImportError:
            return
        step = LLMEngine.step

        def counted(engine):
            if not self.on:
                return step(engine)
            rows, t0 = engine.get_num_unfinished_requests(), time.perf_counter()
            out = step(engine)
            self.n, self.rows, self.seconds = self.n + 1, self.rows + rows, self.seconds + time.perf_counter() - t0
            return out

        LLMEngine.step = counted

    def take(self) -> str:
        """What was counted, as a line; then the counts start again."""
        line = "engine steps not counted (the engine core runs in another process)"
        if self.n:
            line = (f"{self.n} engine steps, {self.rows / self.n:.1f} rows per step, "
                    f"{1e3 * self.seconds / self.rows:.2f} ms per row-step")
        self.n, self.rows, self.seconds = 0, 0, 0.0
        return line


STEPS = Steps()


def direct_sync(cfg: CorpusConfig) -> tuple[float, int]:
    from alarm.corpus import rows as R
    from services.engines.llm import VLLMEngine

    engine = VLLMEngine(cfg.engine)
    R.llm_stages(source_rows(cfg)[:2], engine, cfg)  # warm-up
    t0, STEPS.on = time.perf_counter(), True
    rows = source_rows(cfg)
    out, bs = [], cfg.workers.batch_size
    for i in range(0, len(rows), bs):  # the same batches the pipeline's worker gets
        out += [R.finish_row(r, cfg.filters, cfg.split.val_fraction, cfg.split.salt, engine.count_tokens)
                for r in R.llm_stages(rows[i : i + bs], engine, cfg)]
    elapsed, STEPS.on = time.perf_counter() - t0, False
    del engine
    gc.collect()
    return elapsed, len(out)


def direct_async(cfg: CorpusConfig) -> tuple[float, int]:
    from alarm.corpus import rows as R
    from services.engines.stepped import async_corpus_engine

    async def run() -> tuple[float, int]:
        engine = async_corpus_engine(cfg.engine)  # built on this loop (AsyncLLM's output task lives on it)
        slots = asyncio.Semaphore(cfg.engine.max_num_seqs)

        async def row(r: dict) -> dict:
            async with slots:
                r = await R.llm_row(r, engine, cfg)
            return R.finish_row(r, cfg.filters, cfg.split.val_fraction, cfg.split.salt, engine.count_tokens)

        try:
            await asyncio.gather(*(row(r) for r in source_rows(cfg)[:2]))  # warm-up
            t0, STEPS.on = time.perf_counter(), True
            out = await asyncio.gather(*(row(r) for r in source_rows(cfg)))
            return time.perf_counter() - t0, len(out)
        finally:
            STEPS.on = False
            await engine.aclose()

    return asyncio.run(run())


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
    args.overrides = ["sources.0.num_clips=256", "workers.batch_size=16", *args.overrides]
    cfg = config_from_args(args, CorpusConfig, "corpus")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    load = os.getloadavg()
    t_sync, n = direct_sync(cfg)
    steps_sync = STEPS.take()
    t_async, n_async = direct_async(cfg)
    steps_async = STEPS.take()
    assert n_async == n, (n_async, n)
    rates = {}
    for engine in ("batch", "async"):
        one = cfg.model_copy(update={"workers": cfg.workers.model_copy(update={"engine": engine})})
        double = one.model_copy(update={"sources": [s.model_copy(update={"num_clips": 2 * s.num_clips})
                                                    for s in one.sources]})
        t_n, t_2n = pipeline(one), pipeline(double)
        if t_2n <= t_n:  # start-up varied by more than the extra rows took: the marginal rate means nothing
            raise SystemExit(f"pipeline, {engine}: {2 * n} rows took {t_2n:.1f} s, {n} rows {t_n:.1f} s; rerun with "
                             "more rows (sources.0.num_clips=N)")
        rates[engine] = (n / (t_2n - t_n), t_n, t_2n)
    sync, asyn = n / t_sync, n / t_async
    from services.engines.stepped import in_process_core

    kind = "vLLM's core stepped in-process" if in_process_core() else "AsyncLLM"
    w, e = cfg.workers, cfg.engine
    print(f"rows={n} batch={w.batch_size} workers={w.num_workers} max_num_seqs={e.max_num_seqs} engine={e.checkpoint}")
    print(f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    print(f"direct sync loop : {sync:7.2f} rows/s ({n} rows in {t_sync:.1f} s, LLM.generate per pass and batch)")
    print(f"                   {steps_sync}")
    print(f"direct async loop: {asyn:7.2f} rows/s ({n} rows in {t_async:.1f} s, {kind}, rows in flight)")
    print(f"                   {steps_async}")
    for engine, (pipe, t_n, t_2n) in rates.items():
        print(f"pipeline, {engine:5}: {pipe:7.2f} rows/s marginal ({n} rows: {t_n:.1f} s, {2 * n} rows: {t_2n:.1f} s, "
              "start-up included in both)")
    b, a = rates["batch"][0], rates["async"][0]
    print(f"batch pipeline / sync : {b / sync:.2f}")
    print(f"async pipeline / sync : {a / sync:.2f} (target >= 1.3)")
    print(f"async pipeline / async: {a / asyn:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
