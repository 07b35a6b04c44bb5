"""Ray Data wrappers around the pure row functions of `alarm.corpus.rows` (each batch: Arrow in, Arrow out)."""

from __future__ import annotations

import logging
import os

import pyarrow as pa

from alarm.config import CorpusConfig
from alarm.corpus import rows as R
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


class CorpusLLMStage:
    """One vLLM engine per actor: R0 generation, self-rephrasing, leak checks, judge, then flags and split.

    A failed batch is flagged (generate_failed), never fatal. A dead engine (vLLM's EngineDeadError) cannot be
    restarted in its process: the batch that met it is flagged and returned, and the next call ends the process,
    so Ray Data restarts the actor with a fresh engine and runs that call's batch there. A batch that kills every
    engine is thus flagged once instead of being retried forever (Ray Data restarts actors and retries their
    tasks without limit).
    """

    def __init__(self, cfg_json: dict):
        from services.engines.llm import VLLMEngine

        self.cfg = CorpusConfig.model_validate(cfg_json)
        self.engine = VLLMEngine(self.cfg.engine)
        self.engine_dead = False

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.engine_dead:
            log.critical("this worker's vLLM engine died; restarting the worker")
            os._exit(1)
        rows = batch.to_pylist()
        try:
            rows = R.llm_stages(rows, self.engine, self.cfg)
        except Exception as e:
            self.engine_dead = type(e).__name__ == "EngineDeadError"
            log.exception("LLM stage failed on a batch of %d rows; flagging them", len(rows))
            rows = [R.failed_llm_row(r, f"{type(e).__name__}: {e}") for r in rows]
        f = self.cfg.filters
        s = self.cfg.split
        return to_table([R.finish_row(r, f, s.val_fraction, s.salt, self.engine.count_tokens) for r in rows])
