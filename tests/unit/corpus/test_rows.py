"""The LLM-stage orchestration over a scripted fake engine (no vLLM, no Ray)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from alarm.config import CorpusConfig, SamplingConfig, SyntheticSourceConfig, load_config
from alarm.corpus import rows as R
from alarm.corpus.synthetic import synthetic_row
from alarm.llm.thinking import FORCING_SUFFIX, Completion

R0 = ("Okay, the description says a dog barks and the metadata lists 5s. Let me answer.\n</think>\n\n"
      "The description mentions a dog barking.")
REPHRASED = ("Okay, I hear a dog bark and it lasts about 5s. Let me answer.\n</text_llm_reasoning>\n\n"
             "I hear a dog barking.")


class FakeEngine:
    """Answers generation prompts with R0 and rephrase prompts with a tagged answer; records calls."""

    def __init__(self, rephrase_text: str | None = None, think_forever: bool = False):
        self.calls: list[tuple[int, list[int]]] = []
        self.rephrase_text = rephrase_text or f"Rewrite it.\n</think>\n\n<answer>\n{REPHRASED}\n</answer>"
        self.think_forever = think_forever

    def render(self, messages):
        return "\n".join(f"<{m['role']}>{m['content']}" for m in messages) + "\n<assistant><think>\n"

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, prompts, max_tokens, sampling: SamplingConfig):
        self.calls.append((len(prompts), list(max_tokens)))
        out = []
        for p, mt in zip(prompts, max_tokens, strict=True):
            if "<NEW_TEXT_LLM_RESPONSE>" not in p:
                out.append(Completion(R0, 30, "stop"))
            elif self.think_forever and FORCING_SUFFIX not in p:
                out.append(Completion("hmm " * mt, mt, "length"))
            else:
                out.append(Completion(self.rephrase_text, 40, "stop"))
        return out


def cfg(*overrides) -> CorpusConfig:
    return load_config(CorpusConfig, "tiny", ["filters.min_target_tokens=3", *overrides], section="corpus")


def source_rows(n=4):
    return [R.prompt_row(R.describe_row(R.probe_row(synthetic_row(SyntheticSourceConfig(num_clips=n), i), 60)),
                         "template") for i in range(n)]


def test_stages_add_columns_and_keep_both_answers():
    engine = FakeEngine()
    rows = R.llm_stages(source_rows(), engine, cfg())
    done = [R.finish_row(r, cfg().filters, 0.1, "123", engine.count_tokens) for r in rows]
    for r in done:
        assert r["answer_generated"] == R0  # R0 kept
        assert r["answer_rephrased"].startswith("Okay, I hear a dog") and "</think>" in r["answer_rephrased"]
        assert r["target"] == r["answer_rephrased"] and r["keep"], r["flags"]
        assert json.loads(r["leak_generated"]) and json.loads(r["leak_rephrased"]) == []
    assert len(engine.calls) == 2  # one batched call per pass


def test_budget_forcing_appends_the_sentence_and_caps_the_total():
    engine = FakeEngine(think_forever=True)
    c = cfg("rephrase.thinking_budget=8", "rephrase.max_tokens=100", "rephrase.max_total_tokens=50")
    rows = R.llm_stages(source_rows(2), engine, c)
    assert all(r["forced_rephrase"] for r in rows)
    phase2 = engine.calls[-1]
    assert phase2[0] == 2 and all(mt == 50 - 8 for mt in phase2[1])  # phase 1 + phase 2 <= max_total_tokens


def test_missing_answer_tag_is_flagged_not_kept_as_target():
    engine = FakeEngine(rephrase_text="I will not use tags. The audio is a dog.")
    rows = [R.finish_row(r, cfg().filters, 0.1, "123", engine.count_tokens)
            for r in R.llm_stages(source_rows(2), engine, cfg())]
    for r in rows:
        assert not r["keep"] and "no_answer_tag" in json.loads(r["flags"]) and r["target"] in (None, "")
        assert r["rephrase_raw"].startswith("I will not use tags")  # kept for audit


def test_unusable_rows_skip_the_engine_and_are_flagged():
    bad = {**source_rows(1)[0], "audio_bytes": b"not audio", "key": "synthetic/bad"}
    bad = R.prompt_row(R.describe_row(R.probe_row(bad, 60)), "template")
    engine = FakeEngine()
    (row,) = R.llm_stages([bad], engine, cfg())
    row = R.finish_row(row, cfg().filters, 0.1, "123", engine.count_tokens)
    assert engine.calls == [] and row["finish_reason_generate"] == "skipped"
    assert not row["keep"] and "undecodable" in json.loads(row["flags"])


def test_failed_batch_rows_are_flagged_generate_failed():
    row = R.failed_llm_row(source_rows(1)[0], "RuntimeError: engine hiccup")
    row = R.finish_row(row, cfg().filters, 0.1, "123", len)
    assert not row["keep"] and "generate_failed" in json.loads(row["flags"])
    assert row["llm_error"] == "RuntimeError: engine hiccup"


def test_instruction_rows_are_not_rephrased():
    rows = source_rows(1)
    rows[0] = {**rows[0], "instruction": True, "prompt_given": "What is the answer?", "prompt": "What is it?"}
    engine = FakeEngine()
    (row,) = R.llm_stages(rows, engine, cfg())
    assert row["answer_rephrased"] is None and len(engine.calls) == 1
    gen_prompt = R.generation_messages(row, "SYSTEM")
    assert gen_prompt[0]["role"] == "user"  # no system turn for instruction data
    assert R.finish_row(row, cfg().filters, 0.1, "123", len)["target"] == R0


def test_too_long_audio_is_flagged_with_its_duration():
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000 * 3, dtype=np.float32), 16000, format="FLAC")
    row = {**source_rows(1)[0], "audio_bytes": buf.getvalue()}
    probed = R.probe_row(row, max_duration_s=2.0)
    assert probed["audio_ok"] and probed["duration_s"] == 3.0 and probed["audio_error"].startswith("too_long")
    flagged = R.finish_row({**R.failed_llm_row(probed, "x"), "audio_description": ""},
                           cfg("filters.max_duration_s=2.0").filters, 0.1, "123", len)
    assert "too_long" in json.loads(flagged["flags"])


class PromptWritingEngine(FakeEngine):
    """Also plays the LLM prompt writer, the checker and the leak judge."""

    def __init__(self, valid: str = "2"):
        super().__init__()
        self.valid = valid

    def generate(self, prompts, max_tokens, sampling):
        if all("You write user requests" in p for p in prompts):
            return [Completion("<answer>\nWhat makes this sound?\nIs the sound loud?\n</answer>", 12, "stop")] * len(prompts)
        if all("You review user requests" in p for p in prompts):
            return [Completion(f"<answer>\n{self.valid}\n</answer>", 3, "stop")] * len(prompts)
        if all("You check responses" in p for p in prompts):
            return [Completion("It reads as heard.\nANSWER: NO", 6, "stop")] * len(prompts)
        return super().generate(prompts, max_tokens, sampling)


def test_llm_prompt_writer_checker_and_judge():
    c = cfg("prompts.mode=llm", "leak.judge=true")
    rows = [R.prompt_row(R.describe_row(R.probe_row(synthetic_row(SyntheticSourceConfig(num_clips=2), i), 60)),
                         "llm") for i in range(2)]
    assert all(r["prompt"] is None for r in rows)  # left for the LLM stage
    out = R.llm_stages(rows, PromptWritingEngine(), c)
    for r in out:
        assert r["prompt"] == "Is the sound loud?" and r["prompt_origin"].startswith("llm")
        assert r["judge_label"] == "no" and r["judge_text"].endswith("ANSWER: NO")
    # the checker rejects every candidate: a template is used, and the origin says so
    out = R.llm_stages(rows, PromptWritingEngine(valid="none"), c)
    assert all(r["prompt_origin"].startswith("template-fallback:") for r in out)


# ---------------------------------------------------------------------------------------------------------------
# the same passes, one row at a time over an asynchronous engine


class EchoEngine(FakeEngine):
    """Answers every pass with text derived from the prompt (so rows differ and a mix-up shows), forces the budget
    on every third rephrase, plays the writer, checker and judge; `complete` is the same engine, asynchronous,
    finishing its calls in a scrambled order."""

    def answer(self, p: str, mt: int) -> Completion:
        h = int(hashlib.sha256(p.encode()).hexdigest(), 16)
        tag = f"{h % 10**6:06d}"
        if "You write user requests" in p:
            return Completion(f"<answer>\nWhat is {tag}?\nIs {tag} loud?\n</answer>", 12, "stop")
        if "You review user requests" in p:
            return Completion(f"<answer>\n{['1', '2', 'none'][h % 3]}\n</answer>", 3, "stop")
        if "You check responses" in p:
            return Completion(f"Read {tag}.\nANSWER: {['YES', 'NO'][h % 2]}", 6, "stop")
        if "<NEW_TEXT_LLM_RESPONSE>" not in p:
            return Completion(R0.replace("5s", f"{tag}s"), 30, "stop")
        if FORCING_SUFFIX not in p and h % 3 == 0:
            return Completion("hmm " * mt, mt, "length")
        return Completion(f"Rewrite {tag}.\n</think>\n\n<answer>\n{REPHRASED.replace('5s', tag + 's')}\n</answer>",
                          40, "stop")

    def generate(self, prompts, max_tokens, sampling):
        self.calls.append((len(prompts), list(max_tokens)))
        return [self.answer(p, mt) for p, mt in zip(prompts, max_tokens, strict=True)]

    async def complete(self, prompt, max_tokens, sampling):
        await asyncio.sleep(int(hashlib.sha256(prompt.encode()).hexdigest()[:2], 16) / 25600)  # 0-10 ms
        return self.answer(prompt, max_tokens)

    async def aclose(self):
        pass


def run_async(rows, engine, c):
    async def run():
        return await asyncio.gather(*(R.llm_row(r, engine, c) for r in rows))

    return asyncio.run(run())


@pytest.mark.parametrize("overrides", [
    ("rephrase.thinking_budget=8", "rephrase.max_total_tokens=60"),
    ("prompts.mode=llm", "leak.judge=true", "rephrase.thinking_budget=8"),
])
def test_one_row_at_a_time_gives_every_column_the_batched_passes_give(overrides):
    c = cfg(*overrides)
    rows = [R.describe_row(R.probe_row(synthetic_row(SyntheticSourceConfig(num_clips=12), i), 60)) for i in range(12)]
    rows[3] = {**rows[3], "instruction": True, "prompt_given": "What is it?"}  # given prompt, not rephrased
    rows = [R.prompt_row(r, c.prompts.mode) for r in rows]
    batched, one_by_one = R.llm_stages(rows, EchoEngine(), c), run_async(rows, EchoEngine(), c)
    assert one_by_one == batched
    assert len({r["answer_rephrased"] for r in batched}) > 5  # the rows really differ
    assert any(r["forced_rephrase"] for r in batched) and not all(r["forced_rephrase"] for r in batched)
    if c.leak.judge:
        assert {r["judge_label"] for r in batched} >= {"yes", "no"}
        assert {r["prompt_origin"].split(":")[0] for r in batched} >= {"llm", "template-fallback"}


# ---------------------------------------------------------------------------------------------------------------
# rephrase retries: a rephrase that names another option than R0 is tried again, sampled with a seed per row and try

MCQ = "Is the sound quiet or loud?\n\nOptions:\n- quiet\n- loud"


class MisreadingEngine(EchoEngine):
    """R0 answers "loud"; a rephrase turns it into "quiet" unless its sampling seed is in `keeps` (a seeded try
    that copies right). Records every rephrase call's sampling."""

    def __init__(self, keeps=lambda seed: False):
        super().__init__()
        self.keeps, self.rephrase_sampling = keeps, []

    def answer(self, p, mt, sampling=None):
        if "<NEW_TEXT_LLM_RESPONSE>" not in p:
            return Completion("It reads strong.\n</think>\n\nloud", 8, "stop")
        self.rephrase_sampling.append(sampling)
        said = "loud" if sampling is not None and sampling.seed is not None and self.keeps(sampling.seed) else "quiet"
        return Completion(f"Reword.\n</think>\n\n<answer>\nI hear it {said}.\n</think>\n\n{said}\n</answer>", 12,
                          "stop")

    def generate(self, prompts, max_tokens, sampling):
        samplings = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        return [self.answer(p, mt, s) for p, mt, s in zip(prompts, max_tokens, samplings, strict=True)]

    async def complete(self, prompt, max_tokens, sampling):
        await asyncio.sleep(int(hashlib.sha256(prompt.encode()).hexdigest()[:2], 16) / 25600)
        return self.answer(prompt, max_tokens, sampling)


def mcq_rows(n=6):
    return [{**r, "prompt": MCQ, "prompt_origin": "given"} for r in source_rows(n)]


def finished(rows, c):
    return [R.finish_row(r, c.filters, 0.1, "123", lambda t: len(t.split())) for r in rows]


def test_a_rephrase_that_changes_the_answer_is_tried_again_with_a_seed_per_row_and_try():
    c = cfg("filters.min_target_tokens=0", "rephrase.retries=3", "rephrase.retry_sampling.temperature=0.7")
    rows = mcq_rows()
    keep_third = {R.retry_seed(r["key"], 3) for r in rows[:3]}  # rows 0-2: the third retry copies right
    engine = MisreadingEngine(lambda seed: seed in keep_third)
    done = finished(R.llm_stages(rows, engine, c), c)
    assert [r["rephrase_tries"] for r in done] == [4, 4, 4, 4, 4, 4]
    assert [r["keep"] for r in done] == [True] * 3 + [False] * 3
    assert all(r["target"].endswith("loud") for r in done[:3])
    assert all(json.loads(r["flags"]) == ["answer_changed"] for r in done[3:])  # the last try, flagged
    first, retries = engine.rephrase_sampling[:6], engine.rephrase_sampling[6:]
    assert all(s.temperature == c.rephrase.sampling.temperature and s.seed is None for s in first)
    assert all(s.temperature == 0.7 for s in retries)
    seeds = [s.seed for s in retries]
    assert len(set(seeds)) == len(seeds) == 18  # every row and try its own seed
    assert R.retry_seed("k", 1) == R.retry_seed("k", 1) != R.retry_seed("k", 2)
    # the asynchronous path writes the same rows
    assert run_async(rows, MisreadingEngine(lambda seed: seed in keep_third), c) == R.llm_stages(
        rows, MisreadingEngine(lambda seed: seed in keep_third), c)


class LeakingEngine(MisreadingEngine):
    """As MisreadingEngine, but a rephrase keeps the answer and cites the description unless its seed is kept."""

    def answer(self, p, mt, sampling=None):
        if "<NEW_TEXT_LLM_RESPONSE>" not in p:
            return super().answer(p, mt, sampling)
        self.rephrase_sampling.append(sampling)
        heard = sampling is not None and sampling.seed is not None and self.keeps(sampling.seed)
        said = "I hear it loud." if heard else "The description says it is loud."
        return Completion(f"Reword.\n</think>\n\n<answer>\n{said}\n</think>\n\nloud\n</answer>", 12, "stop")


def test_a_rephrase_that_still_cites_the_text_is_tried_again():
    c = cfg("filters.min_target_tokens=0", "filters.drop_leaks=true", "rephrase.retries=2",
            "rephrase.retry_sampling.temperature=0.7")
    rows = mcq_rows(4)
    keep_first = {R.retry_seed(r["key"], 1) for r in rows[:2]}  # rows 0-1: the first retry is heard
    done = finished(R.llm_stages(rows, LeakingEngine(lambda seed: seed in keep_first), c), c)
    assert [r["rephrase_tries"] for r in done] == [2, 2, 3, 3]
    assert [r["keep"] for r in done] == [True, True, False, False]
    assert all(r["target"].startswith("I hear it loud.") for r in done[:2])
    assert all(json.loads(r["flags"]) == ["leak"] for r in done[2:])  # the last try, flagged
    assert run_async(rows, LeakingEngine(lambda seed: seed in keep_first), c) == R.llm_stages(
        rows, LeakingEngine(lambda seed: seed in keep_first), c)
    # where leaks are kept (filters.drop_leaks=false, the default), a leaking rephrase that keeps the answer is the
    # row's: a retry could only lose it
    kept = cfg("filters.min_target_tokens=0", "rephrase.retries=2", "rephrase.retry_sampling.temperature=0.7")
    done = finished(R.llm_stages(rows, LeakingEngine(lambda seed: False), kept), kept)
    assert [r["rephrase_tries"] for r in done] == [1, 1, 1, 1] and all(r["keep"] for r in done)


def test_without_retries_a_changed_answer_is_flagged_after_one_rephrase():
    c = cfg("filters.min_target_tokens=0")
    engine = MisreadingEngine(lambda seed: True)
    done = finished(R.llm_stages(mcq_rows(2), engine, c), c)
    assert [r["rephrase_tries"] for r in done] == [1, 1] and len(engine.rephrase_sampling) == 2
    assert all(json.loads(r["flags"]) == ["answer_changed"] for r in done)


def test_a_changed_answer_the_filters_keep_is_not_retried():
    c = cfg("filters.min_target_tokens=0", "filters.drop_changed_answers=false", "rephrase.retries=2",
            "rephrase.retry_sampling.temperature=0.7")
    engine = MisreadingEngine(lambda seed: True)
    done = finished(R.llm_stages(mcq_rows(2), engine, c), c)
    assert [r["rephrase_tries"] for r in done] == [1, 1] and len(engine.rephrase_sampling) == 2
    assert all(r["keep"] for r in done)


def test_a_kept_answer_is_not_retried():
    c = cfg("filters.min_target_tokens=0", "rephrase.retries=2")
    engine = FakeEngine()  # free-text prompts: no options, nothing to change
    rows = R.llm_stages(source_rows(3), engine, c)
    assert [r["rephrase_tries"] for r in rows] == [1, 1, 1] and len(engine.calls) == 2


def test_greedy_retries_are_refused():
    from alarm.errors import ConfigError

    with pytest.raises(ConfigError, match="retry_sampling.temperature"):
        cfg("rephrase.retries=2", "rephrase.retry_sampling.temperature=0")
