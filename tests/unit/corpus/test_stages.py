"""The corpus LLM stage's failure handling (Ray Data wrapper of `alarm.corpus.rows`), over a scripted engine."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from services.corpus import stages
from services.corpus.stages import CorpusLLMStage
from services.storage import to_table
from tests.unit.corpus.test_rows import FakeEngine, cfg, source_rows


class EngineDeadError(RuntimeError):
    """Stands in for vLLM's exception of that name (matched by name: vLLM is not imported here)."""


class DyingEngine(FakeEngine):
    def __init__(self, error: type[Exception]):
        super().__init__()
        self.error = error

    def generate(self, prompts, max_tokens, sampling):
        raise self.error("engine core died")


def stage(engine) -> CorpusLLMStage:
    s = CorpusLLMStage.__new__(CorpusLLMStage)  # the engine is a test double, not a vLLM LLM
    s.cfg, s.engine, s.engine_dead = cfg(), engine, False
    return s


def batch(n: int = 2) -> pa.Table:
    return to_table(source_rows(n))


def flags(table: pa.Table) -> list[list[str]]:
    return [json.loads(f) for f in table.column("flags").to_pylist()]


def test_a_failed_batch_is_flagged_and_the_worker_goes_on():
    s = stage(DyingEngine(ValueError))
    out = s(batch())
    assert all("generate_failed" in f for f in flags(out))
    assert set(out.column("llm_error").to_pylist()) == {"ValueError: engine core died"}
    s.engine = FakeEngine()
    assert not any("generate_failed" in f for f in flags(s(batch())))  # the same engine serves the next batch


def test_a_dead_engine_flags_its_batch_once_then_restarts_the_worker(monkeypatch):
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(stages.os, "_exit", fake_exit)
    s = stage(DyingEngine(EngineDeadError))
    out = s(batch())  # the batch that met the dead engine is returned, flagged: Ray Data will not retry it
    assert out.num_rows == 2 and all("generate_failed" in f for f in flags(out)) and exits == []
    with pytest.raises(SystemExit):
        s(batch())  # the next batch ends the process: Ray restarts the actor and retries that batch there
    assert exits == [1]
