"""The in-process stepped vLLM engine (services/engines/stepped.py) on the tiny models, without Ray: the same rows as
the batch engine under greedy decoding, requests in flight from many callers, cancellation, death and closing."""

from __future__ import annotations

import asyncio

import pytest

from alarm.config import CorpusConfig, load_config
from alarm.errors import EngineDead

GREEDY = ("generate.sampling.temperature=0", "rephrase.sampling.temperature=0")
TEACHER = ("engine.checkpoint=tiny://qwen3-teacher", "rephrase.thinking_budget=4", "rephrase.max_tokens=16",
           "rephrase.max_total_tokens=24")


def corpus_cfg(*overrides: str) -> CorpusConfig:
    return load_config(CorpusConfig, "tiny", ["sources.0.num_clips=12", "workers.batch_size=4", *GREEDY, *overrides],
                       section="corpus")


def source_rows(cfg: CorpusConfig) -> list[dict]:
    from alarm.corpus import rows as R
    from alarm.corpus.synthetic import synthetic_row

    s = cfg.sources[0]
    return [R.prompt_row(R.describe_row(R.probe_row(synthetic_row(s, i), cfg.filters.max_duration_s)),
                         cfg.prompts.mode) for i in range(s.num_clips)]


@pytest.mark.slow  # the default suite checks the same through Ray (test_generate.py, workers.engine=async)
def test_rows_in_flight_get_what_the_batch_engine_writes():
    """Greedy: every row's passes through the stepped engine, all rows at once, equal the batch engine's rows in
    batches (the teacher's rows differ from each other, so a row given another's output would show)."""
    from alarm.corpus import rows as R
    from services.engines.llm import VLLMEngine
    from services.engines.stepped import SteppedEngine

    cfg = corpus_cfg(*TEACHER)
    rows, bs = source_rows(cfg), cfg.workers.batch_size
    batch = VLLMEngine(cfg.engine)
    want = [r for i in range(0, len(rows), bs) for r in R.llm_stages(rows[i : i + bs], batch, cfg)]
    del batch

    async def run() -> list[dict]:
        engine = SteppedEngine(cfg.engine)
        try:
            return list(await asyncio.gather(*(R.llm_row(r, engine, cfg) for r in rows)))
        finally:
            await engine.aclose()

    got = asyncio.run(run())
    assert [r["key"] for r in got] == [r["key"] for r in want]
    assert got == want
    assert len({r["answer_generated"] for r in got}) > 4


@pytest.fixture(scope="module")
def engine_cfg():
    return corpus_cfg().engine


@pytest.fixture(scope="module")
def shared(engine_cfg):
    """One engine for the tests that leave it working: each test awaits it from its own event loop."""
    from services.engines.stepped import SteppedEngine

    engine = SteppedEngine(engine_cfg)
    yield engine
    asyncio.run(engine.aclose())


def test_a_cancelled_request_is_aborted_and_the_engine_serves_on(shared):
    from alarm.config import SamplingConfig

    async def run():
        engine = shared
        long = SamplingConfig(temperature=0.0)
        task = asyncio.create_task(engine.complete("tell me a long story", 400, long))
        for _ in range(1000):  # until the stepping thread has added it
            if engine.num_unfinished():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):  # the abort reaches the stepping thread within a step
            if engine.num_unfinished() == 0 and engine.engine.get_num_unfinished_requests() == 0:
                break
            await asyncio.sleep(0.01)
        left = engine.num_unfinished() + engine.engine.get_num_unfinished_requests()
        done = await engine.complete("hello", 4, long)
        return left, done

    left, done = asyncio.run(run())
    assert left == 0 and done.finish_reason in ("stop", "length") and done.n_tokens >= 1


def test_a_prompt_that_cannot_fit_is_an_error_row_not_a_failure(shared, engine_cfg):
    from alarm.config import SamplingConfig

    long = "word " * (engine_cfg.max_model_len + 10)
    assert asyncio.run(shared.complete(long, 8, SamplingConfig())).finish_reason == "error"


def test_asyncllm_completes_what_the_stepped_engine_does(shared, engine_cfg):
    """The async corpus engine where vLLM's core runs in another process (a GPU machine) is AsyncLLM; greedy, it
    writes the stepped engine's text, and refuses a prompt too long for the context the same way."""
    from alarm.config import SamplingConfig
    from services.engines.vllm_async import VLLMAsyncBackend

    prompts, greedy = ["say yes", "what do you hear?", "count to three"], SamplingConfig(temperature=0.0)

    async def asyncllm():
        engine = VLLMAsyncBackend.from_config(engine_cfg)  # built on this loop: its output task lives on it
        try:
            done = await asyncio.gather(*(engine.complete(p, 12, greedy) for p in prompts))
            return done, await engine.complete("word " * (engine_cfg.max_model_len + 10), 8, greedy)
        finally:
            await engine.aclose()

    async def stepped():
        return await asyncio.gather(*(shared.complete(p, 12, greedy) for p in prompts))

    (got, too_long), want = asyncio.run(asyncllm()), asyncio.run(stepped())
    assert got == want and all(c.n_tokens >= 1 for c in got)
    assert too_long.finish_reason == "error"


def test_callers_on_different_event_loops_share_the_engine(shared):
    """Ray Data may hand an actor's calls to another loop after a restart; each request answers on its own."""
    from alarm.config import SamplingConfig

    async def two():
        return await asyncio.gather(*(shared.complete(f"say {w}", 6, SamplingConfig(temperature=0.0))
                                      for w in ("yes", "no")))

    first, second = asyncio.run(two()), asyncio.run(two())
    assert [c.text for c in first] == [c.text for c in second] and all(c.n_tokens >= 1 for c in first)


def test_a_dead_engine_fails_what_is_in_flight_and_what_comes_after(engine_cfg):
    """The stepping thread's engine raises: the request in flight and every later one raise EngineDead (the corpus
    worker then builds a new engine), none waits forever."""
    from alarm.config import SamplingConfig
    from services.engines.stepped import SteppedEngine

    async def run():
        engine = SteppedEngine(engine_cfg)
        step = engine.engine.step

        def broken():
            step()
            raise RuntimeError("the core is gone")

        engine.engine.step = broken
        try:
            with pytest.raises(EngineDead, match="the core is gone"):
                await asyncio.wait_for(engine.complete("hello", 8, SamplingConfig()), 120)
            with pytest.raises(EngineDead, match="the core is gone"):
                await asyncio.wait_for(engine.complete("hello again", 8, SamplingConfig()), 120)
        finally:
            await engine.aclose()

    asyncio.run(run())


def test_closing_fails_requests_in_flight_and_refuses_new_ones(engine_cfg):
    from alarm.config import SamplingConfig
    from services.engines.stepped import SteppedEngine

    async def run():
        engine = SteppedEngine(engine_cfg)
        task = asyncio.create_task(engine.complete("tell me a long story", 400, SamplingConfig(temperature=0.0)))
        for _ in range(1000):
            if engine.num_unfinished():
                break
            await asyncio.sleep(0.01)
        await engine.aclose()
        with pytest.raises(EngineDead, match="closed"):
            await asyncio.wait_for(task, 60)
        with pytest.raises(EngineDead, match="closed"):
            await engine.complete("hello", 8, SamplingConfig())

    asyncio.run(run())
