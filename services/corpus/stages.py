"""Ray Data wrappers around the pure row functions of `alarm.corpus.rows` (each batch: Arrow in, Arrow out)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable

import pyarrow as pa

from alarm.config import CorpusConfig, EngineConfig
from alarm.corpus import rows as R
from alarm.errors import EngineDead
from services.storage import to_table

log = logging.getLogger(__name__)


def cpu_stages(batch: pa.Table, cfg_json: dict, storage_options: dict | None = None) -> pa.Table:
    """probe -> describe -> prompt, row by row (decode checks only; the audio is not kept decoded)."""
    cfg = CorpusConfig.model_validate(cfg_json)
    out = []
    for row in batch.to_pylist():
        row = R.probe_row(row, cfg.filters.max_duration_s, storage_options)
        row = R.describe_row(row)
        out.append(R.prompt_row(row, cfg.prompts.mode))
    return to_table(out)


def calls_in_flight(cfg: CorpusConfig) -> int:
    """Batches a worker takes at once: with the async engine, enough to keep `engine.max_num_seqs` rows in flight,
    plus one so the next batch is already there when one ends; the batch engine takes one at a time."""
    if cfg.workers.engine == "batch":
        return 1
    return math.ceil(cfg.engine.max_num_seqs / cfg.workers.batch_size) + 1


def stage_class(cfg: CorpusConfig) -> type:
    """The Ray Data actor class `workers.engine` selects."""
    return CorpusLLMStage if cfg.workers.engine == "async" else CorpusLLMBatchStage


class CorpusLLMBatchStage:
    """One vLLM `LLM` per actor (`workers.engine=batch`): each pass (R0, rephrase, judge) is one generate call over
    the batch.

    A failed batch is flagged (generate_failed), never fatal. A dead engine (vLLM's EngineDeadError) cannot be
    restarted in its process: the batch that met it is flagged and returned, and the next call ends the process,
    so Ray Data restarts the actor with a fresh engine and runs that call's batch there. A batch that kills every
    engine is thus flagged once instead of being retried forever (Ray Data restarts actors and retries their
    tasks without limit).
    """

    def __init__(self, cfg_json: dict, make_engine: Callable[[EngineConfig], R.Engine] | None = None):
        from services.engines.llm import VLLMEngine

        self.cfg = CorpusConfig.model_validate(cfg_json)
        self.engine = (make_engine or VLLMEngine)(self.cfg.engine)
        self.engine_dead = False

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.engine_dead:
            log.critical("this worker's vLLM engine died; restarting the worker")
            os._exit(1)
        rows = batch.to_pylist()
        try:
            rows = R.llm_stages(rows, self.engine, self.cfg)
        except Exception as e:
            self.engine_dead = isinstance(e, EngineDead) or type(e).__name__ == "EngineDeadError"
            log.exception("LLM stage failed on a batch of %d rows; flagging them", len(rows))
            rows = [R.failed_llm_row(r, f"{type(e).__name__}: {e}") for r in rows]
        f, s = self.cfg.filters, self.cfg.split
        return to_table([R.finish_row(r, f, s.val_fraction, s.salt, self.engine.count_tokens) for r in rows])


def vllm_engine(cfg: EngineConfig) -> R.AsyncEngine:
    """The corpus worker's asynchronous engine (services.engines.stepped.async_corpus_engine: in-process stepping or
    AsyncLLM), its statistics exported as Ray metrics (services.engines.stats)."""
    from services.engines.stats import ray_stat_loggers
    from services.engines.stepped import async_corpus_engine

    return async_corpus_engine(cfg, stat_loggers=ray_stat_loggers())


class CorpusLLMStage:
    """One asynchronous vLLM engine per actor, shared by every batch Ray Data has in flight on it: each row runs its
    passes (`alarm.corpus.rows.llm_row`) as soon as its previous one ends, up to `engine.max_num_seqs` rows at once
    across batches, so the engine never waits for the slowest row of a batch. Each batch comes back whole, its rows
    in order, flagged rather than dropped.

    A row that fails is flagged (generate_failed, `llm_error`), never fatal. A dead engine (EngineDead) is rebuilt
    in this process, once per death however many rows met it, and the rows that were in flight run again from
    their start, each at most `workers.engine_retries` times; then they are flagged and the job goes on.

    Args:
        cfg_json: The CorpusConfig, as JSON.
        make_engine: Builds an engine from `cfg.engine` (default: `vllm_engine`; tests pass a fake).
    """

    def __init__(self, cfg_json: dict, make_engine: Callable[[EngineConfig], R.AsyncEngine] = vllm_engine):
        self.cfg = CorpusConfig.model_validate(cfg_json)
        self.make_engine = make_engine
        self.engine: R.AsyncEngine | None = make_engine(self.cfg.engine)
        self.count_tokens = self.engine.count_tokens  # the checkpoint's tokenizer, whichever engine runs
        self.generation = 0  # bumped by every rebuild: rows that met a dead engine rebuild it once between them
        self.rebuilds = 0
        self.rebuild_error: str | None = None
        self.slots = asyncio.Semaphore(self.cfg.engine.max_num_seqs)
        self.rebuilding = asyncio.Lock()

    async def __call__(self, batch: pa.Table) -> pa.Table:
        self.loop = asyncio.get_running_loop()  # Ray Data runs every call on one loop, in its own thread
        rows = await asyncio.gather(*(self._row(r) for r in batch.to_pylist()))
        f, s = self.cfg.filters, self.cfg.split
        return to_table([R.finish_row(r, f, s.val_fraction, s.salt, self.count_tokens) for r in rows])

    async def _row(self, row: R.Row) -> R.Row:
        async with self.slots:
            for attempt in range(self.cfg.workers.engine_retries + 1):
                generation, engine = self.generation, self.engine
                if engine is None:  # the last rebuild failed: try again, at this row's expense
                    error = f"EngineDead: the engine could not be rebuilt: {self.rebuild_error}"
                else:
                    try:
                        return await R.llm_row(row, engine, self.cfg)
                    except EngineDead as e:
                        error = f"EngineDead: {e}"
                    except Exception as e:
                        log.exception("the LLM stage failed on row %s; flagging it", row.get("key"))
                        return R.failed_llm_row(row, f"{type(e).__name__}: {e}")
                if attempt < self.cfg.workers.engine_retries:
                    await self._rebuild(generation)
            log.error("row %s met a dead engine %d times; flagging it", row.get("key"), attempt + 1)
            return R.failed_llm_row(row, error)

    def __del__(self):
        """Stop the engine on the loop it runs on (Ray Data deletes the stage when the actor exits gracefully)."""
        engine, loop = getattr(self, "engine", None), getattr(self, "loop", None)
        if engine is None or loop is None or not loop.is_running() or loop is _running_loop():
            return
        try:
            asyncio.run_coroutine_threadsafe(engine.aclose(), loop).result(timeout=30)
        except Exception:
            log.exception("stopping the vLLM engine failed")

    async def _rebuild(self, dead: int) -> None:
        """Replace engine generation `dead` (the first row to ask does it; the others find it done)."""
        async with self.rebuilding:
            if self.generation != dead:
                return
            old, self.engine = self.engine, None
            self.generation += 1
            self.rebuilds += 1
            log.critical("the vLLM engine died; building a new one (rebuild %d)", self.rebuilds)
            if old is not None:
                try:
                    await old.aclose()
                except Exception:
                    log.exception("closing the dead engine failed")
            try:
                self.engine, self.rebuild_error = self.make_engine(self.cfg.engine), None
            except Exception as e:
                log.exception("building a new vLLM engine failed")
                self.rebuild_error = f"{type(e).__name__}: {e}"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
