"""The corpus LLM stage (Ray Data wrapper of `alarm.corpus.rows`) over scripted asynchronous engines: rows in flight
across batches, failures flagged per row, a dead engine rebuilt and its rows run again, a bounded number of times."""

from __future__ import annotations

import asyncio
import json

import pyarrow as pa

from alarm.errors import EngineDead
from services.corpus import stages
from services.corpus.stages import CorpusLLMBatchStage, CorpusLLMStage, calls_in_flight, stage_class
from services.storage import to_table
from tests.unit.corpus.test_rows import EchoEngine, cfg, source_rows


def stage(make_engine, *overrides) -> CorpusLLMStage:
    return CorpusLLMStage(cfg("rephrase.thinking_budget=8", *overrides).model_dump(mode="json"), make_engine)


def batch(n: int = 4, start: int = 0) -> pa.Table:
    rows = source_rows(start + n)[start:]
    return to_table(rows)


def flags(table: pa.Table) -> list[list[str]]:
    return [json.loads(f) for f in table.column("flags").to_pylist()]


def run(s: CorpusLLMStage, *batches: pa.Table) -> list[pa.Table]:
    async def go():
        return await asyncio.gather(*(s(b) for b in batches))

    return asyncio.run(go())


def test_a_batch_comes_back_whole_in_order_with_the_batched_passes_columns():
    from alarm.corpus import rows as R

    s = stage(lambda c: EchoEngine())
    (out,) = run(s, batch(6))
    c = s.cfg
    want = [R.finish_row(r, c.filters, c.split.val_fraction, c.split.salt, EchoEngine().count_tokens)
            for r in R.llm_stages(source_rows(6), EchoEngine(), c)]
    assert out.to_pylist() == to_table(want).to_pylist()


class Tracking(EchoEngine):
    """Counts calls in flight; the R0 of the row described as `slow` waits until another row has started
    rephrasing."""

    def __init__(self, slow: str):
        super().__init__()
        self.slow, self.inflight, self.peak = slow, 0, 0
        self.rephrasing = asyncio.Event()

    async def complete(self, prompt, max_tokens, sampling):
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            if "<NEW_TEXT_LLM_RESPONSE>" in prompt:
                self.rephrasing.set()
            elif self.slow in prompt:  # the slowest row of its batch
                await asyncio.wait_for(self.rephrasing.wait(), timeout=10)
            return await super().complete(prompt, max_tokens, sampling)
        finally:
            self.inflight -= 1


def test_rows_run_their_next_pass_at_once_and_fill_the_engine_across_batches():
    engine = Tracking(slow=source_rows(1)[0]["audio_description"])
    s = stage(lambda c: engine, "engine.max_num_seqs=6")
    outs = run(s, batch(4), batch(4, start=4), batch(4, start=8))
    # the first row's R0 waited for a rephrase: a batch's other rows did not wait for their slowest one
    assert [t.num_rows for t in outs] == [4, 4, 4] and not any(f for t in outs for f in flags(t))
    assert engine.peak == 6  # max_num_seqs calls at once, from more than one batch (4 rows each)
    # Ray Data gives an async worker enough batches for max_num_seqs rows; a batch worker one at a time
    assert calls_in_flight(cfg("workers.engine=async")) == 32 // 16 + 1 and calls_in_flight(cfg()) == 1


def test_a_failing_row_is_flagged_alone():
    bad = source_rows(2)[1]["audio_description"]

    class OneBadRow(EchoEngine):
        async def complete(self, prompt, max_tokens, sampling):
            if bad in prompt:
                raise ValueError("bad prompt")
            return await super().complete(prompt, max_tokens, sampling)

    (out,) = run(stage(lambda c: OneBadRow()), batch(3))
    assert [("generate_failed" in f) for f in flags(out)] == [False, True, False]
    assert out.column("llm_error").to_pylist()[1] == "ValueError: bad prompt"


class Dying(EchoEngine):
    """Dies (EngineDead on every call) once `deaths_after` calls have been made, like a vLLM engine whose core
    process exited; `aclose` is recorded."""

    def __init__(self, log: list, deaths_after: int | None):
        super().__init__()
        self.log, self.deaths_after, self.n = log, deaths_after, 0

    async def complete(self, prompt, max_tokens, sampling):
        self.n += 1
        await asyncio.sleep(0.001)
        if self.deaths_after is not None and self.n > self.deaths_after:
            raise EngineDead("engine core died")
        return await super().complete(prompt, max_tokens, sampling)

    async def aclose(self):
        self.log.append("closed")


def test_an_engine_that_dies_once_is_rebuilt_and_every_row_recovered():
    built, log = [], []

    def make(c):
        built.append(c)
        return Dying(log, deaths_after=3 if len(built) == 1 else None)  # the first engine dies mid-batch

    s = stage(make)
    outs = run(s, batch(4), batch(4, start=4))
    assert not any(f for t in outs for f in flags(t))  # every row recovered, none flagged
    assert len(built) == 2 and s.rebuilds == 1 and log == ["closed"]  # one rebuild for all the rows that met it
    good = run(stage(lambda c: EchoEngine()), batch(4), batch(4, start=4))
    assert [t.to_pylist() for t in outs] == [t.to_pylist() for t in good]


def test_an_engine_that_always_dies_is_rebuilt_a_bounded_number_of_times_and_the_rows_are_flagged():
    built, log = [], []

    def make(c):
        built.append(c)
        return Dying(log, deaths_after=0)

    s = stage(make, "workers.engine_retries=2")
    outs = run(s, batch(4), batch(4, start=4))  # the job completes
    assert all("generate_failed" in f for t in outs for f in flags(t))
    assert {e for t in outs for e in t.column("llm_error").to_pylist()} == {"EngineDead: engine core died"}
    assert s.rebuilds == 2 and len(built) == 3  # each row ran on 1 + engine_retries engines, rebuilt once each


def test_an_engine_that_cannot_be_rebuilt_flags_the_rows_with_why():
    built = []

    def make(c):
        built.append(c)
        if len(built) > 1:
            raise RuntimeError("no GPU left")
        return Dying([], deaths_after=0)

    s = stage(make, "workers.engine_retries=1")
    (out,) = run(s, batch(3))
    assert all("generate_failed" in f for f in flags(out)) and len(built) == 2
    assert set(out.column("llm_error").to_pylist()) == {
        "EngineDead: the engine could not be rebuilt: RuntimeError: no GPU left"}


def test_deleting_the_stage_stops_its_engine_on_the_loop_it_runs_on():
    """Ray Data runs the calls on its own event-loop thread and drops the stage from another thread at exit."""
    import threading

    class Closing(EchoEngine):
        closed_on: list = []

        async def aclose(self):
            self.closed_on.append(threading.get_ident())

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        s = stage(lambda c: Closing())
        asyncio.run_coroutine_threadsafe(s(batch(2)), loop).result(timeout=30)
        del s
        assert Closing.closed_on == [thread.ident]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_the_batch_engine_writes_the_rows_the_async_one_writes():
    assert stage_class(cfg()) is CorpusLLMBatchStage and stage_class(cfg("workers.engine=async")) is CorpusLLMStage
    c = cfg("rephrase.thinking_budget=8").model_dump(mode="json")
    out = CorpusLLMBatchStage(c, lambda e: EchoEngine())(batch(6))
    (want,) = run(stage(lambda e: EchoEngine()), batch(6))
    assert out.to_pylist() == want.to_pylist()


def test_a_batch_that_kills_the_batch_engine_is_flagged_and_the_next_call_restarts_the_worker(monkeypatch):
    class Dead(EchoEngine):
        def generate(self, prompts, max_tokens, sampling):
            raise EngineDead("engine core died")

    def exit_(code):
        raise SystemExit(code)

    monkeypatch.setattr(stages.os, "_exit", exit_)
    s = CorpusLLMBatchStage(cfg().model_dump(mode="json"), lambda e: Dead())
    out = s(batch(3))
    assert all("generate_failed" in f for f in flags(out)) and s.engine_dead
    try:
        s(batch(3))
        raise AssertionError("the worker should have exited")
    except SystemExit as e:
        assert e.code == 1  # Ray Data restarts the actor with a fresh engine and reruns this batch
