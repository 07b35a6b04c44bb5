"""Row functions of the corpus pipeline, in stage order; pure, so Ray Data, tests and benchmarks share them.

    probe_row -> describe_row -> prompt_row -> llm_steps (generate R0 -> self-rephrase -> leak check -> judge)
    -> finish_row (filters, target, split)

Every stage adds columns and never overwrites one; a row that fails a stage is flagged and carried to the end,
never dropped. A row's LLM passes are written once, as steps (`llm_steps`), and run batched over an `Engine`
(`llm_stages`: `vllm.LLM` in `services/engines/llm.py`) or one row at a time over an `AsyncEngine` (`llm_row`:
vLLM's AsyncLLM in `services/engines/vllm_async.py`, many rows in flight); tests use scripted fakes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from alarm.config import CorpusConfig, FilterConfig, SamplingConfig
from alarm.corpus.describe import describe
from alarm.corpus.filters import flag_row, rephrase_flags
from alarm.corpus.leak import find_leaks, judge_messages, parse_judge
from alarm.corpus.prompts import (
    checker_messages,
    choose_prompt,
    parse_candidates,
    parse_checker,
    select_prompt,
    writer_messages,
)
from alarm.corpus.rephrase import parse_rephrase, rephrase_messages
from alarm.corpus.schema import split_of
from alarm.errors import AlarmError, AudioError
from alarm.llm.steps import Steps, drive, lockstep, relay
from alarm.llm.thinking import Completion, budget_steps

Row = dict[str, Any]


class Engine(Protocol):
    """What the batched LLM stages need from an engine: chat rendering, batched generation, token counting."""

    def render(self, messages: list[dict]) -> str: ...

    def generate(self, prompts: list[str], max_tokens: list[int],
                 sampling: SamplingConfig | list[SamplingConfig]) -> list[Completion]:
        """One batched call; `sampling` for every prompt, or one per prompt."""
        ...

    def count_tokens(self, text: str) -> int: ...


class AsyncEngine(Protocol):
    """The same engine, asynchronous: one prompt per call, many calls in flight at once."""

    def render(self, messages: list[dict]) -> str: ...

    async def complete(self, prompt: str, max_tokens: int, sampling: SamplingConfig) -> Completion:
        """One prompt to its end. Raises `alarm.errors.EngineDead` when the engine died (it must be rebuilt)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------------------------
# CPU stages


def probe_row(row: Row, max_duration_s: float, storage_options: dict | None = None) -> Row:
    """Decode the audio once to check it: + duration_s, sample_rate, audio_ok, audio_error."""
    from alarm.audio.decode import load_audio  # numpy/soundfile only

    out = {**row, "duration_s": None, "sample_rate": None, "audio_ok": False, "audio_error": row.get("row_error")}
    if out["audio_error"]:
        return out
    src = row.get("audio_bytes") if row.get("audio_bytes") is not None else row.get("audio_uri")
    if src is None:
        return {**out, "audio_error": "no audio: the row has neither audio_bytes nor audio_uri"}
    try:
        wave = load_audio(src, max_duration_s=max_duration_s, storage_options=storage_options)
    except AudioError as e:
        # Too long is decodable: keep it flagged as too_long (duration from the header) rather than undecodable.
        return {**out, "audio_ok": e.reason == "too_long", "duration_s": getattr(e, "duration_s", None),
                "audio_error": f"{e.reason}: {e}"}
    except (OSError, AlarmError) as e:
        return {**out, "audio_error": f"undecodable: {type(e).__name__}: {e}"}
    return {**out, "duration_s": wave.duration_s, "sample_rate": wave.sample_rate, "audio_ok": True}


def usable(row: Row) -> bool:
    return bool(row.get("audio_ok")) and not row.get("audio_error")


def describe_row(row: Row) -> Row:
    """+ audio_description (D). A malformed metadata field becomes a row error, not a crash."""
    if not usable(row):
        return {**row, "audio_description": ""}
    try:
        text = describe(json.loads(row["metadata"] or "{}"), row["duration_s"], row["family"], source=row["source"])
    except (AlarmError, ValueError, TypeError) as e:
        return {**row, "audio_description": "", "audio_error": f"bad_metadata: {e}"}
    return {**row, "audio_description": text}


def prompt_row(row: Row, mode: str) -> Row:
    """+ prompt, prompt_origin: the given prompt, a template pick, or (llm mode) left for the LLM stage."""
    if row.get("prompt_given"):
        return {**row, "prompt": row["prompt_given"], "prompt_origin": "given"}
    if mode == "llm" and usable(row):
        return {**row, "prompt": None, "prompt_origin": None}
    prompt, origin = choose_prompt(row["key"], row["family"], json.loads(row["metadata"] or "{}"))
    return {**row, "prompt": prompt, "prompt_origin": origin}


# ---------------------------------------------------------------------------------------------------------------
# LLM stages: one row's passes as steps (`alarm.llm.steps`), run batched or asynchronously


@dataclass(frozen=True)
class Call:
    """One engine call a row needs: its stage, the rendered prompt, the new-token cap and the sampling."""

    stage: str  # "writer" | "checker" | "generate" | "rephrase" | "judge"
    prompt: str
    max_tokens: int
    sampling: SamplingConfig


def llm_stages(rows: list[Row], engine: Engine, cfg: CorpusConfig) -> list[Row]:
    """Every row's LLM passes, batched: each round, one engine call per stage for the rows that need it."""
    return lockstep([llm_steps(r, engine.render, cfg) for r in rows], lambda calls: _by_stage(engine, calls))


async def llm_row(row: Row, engine: AsyncEngine, cfg: CorpusConfig) -> Row:
    """One row's LLM passes, each sent as soon as the previous one ends (many rows share the engine at once)."""
    return await drive(llm_steps(row, engine.render, cfg), lambda c: engine.complete(c.prompt, c.max_tokens,
                                                                                      c.sampling))


def llm_steps(row: Row, render: Callable[[list[dict]], str], cfg: CorpusConfig) -> Steps[Call, Completion, Row]:
    """Prompt writing (llm mode), self-generation R0, self-rephrasing R, leak checks and the optional judge, for
    one row: yields each `Call`, receives its Completion, returns the row with the LLM-stage columns added."""
    row = dict(row)
    if cfg.prompts.mode == "llm" and row.get("prompt") is None and usable(row):
        yield from write_prompt(row, render, cfg)
    yield from generate_r0(row, render, cfg)
    yield from rephrase(row, render, cfg)
    row["leak_generated"] = json.dumps(find_leaks(row["answer_generated"] or ""))
    row["leak_rephrased"] = json.dumps(find_leaks(row["answer_rephrased"])) if row["answer_rephrased"] else None
    row["judge_label"], row["judge_text"] = None, None
    if cfg.leak.judge and row.get("answer_rephrased"):
        c = yield Call("judge", render(judge_messages(row["answer_rephrased"])), cfg.leak.max_tokens,
                       SamplingConfig(temperature=0.0))
        row["judge_label"], row["judge_text"] = parse_judge(c.text)[0], c.text
    return row


def write_prompt(row: Row, render, cfg: CorpusConfig):
    """+ prompt, prompt_origin from the LLM writer's candidates and the checker's verdict (a template if none)."""
    n = cfg.prompts.candidates
    written = yield Call("writer", render(writer_messages(row["audio_description"], row["family"], n)),
                         cfg.prompts.max_tokens, SamplingConfig())
    cands, picked = parse_candidates(written.text), None
    if cands:
        checked = yield Call("checker", render(checker_messages(row["audio_description"], cands)),
                             cfg.prompts.max_tokens, SamplingConfig(temperature=0.0))
        picked = select_prompt(row["key"], cands, parse_checker(checked.text, len(cands)))
    if picked is None:
        prompt, origin = choose_prompt(row["key"], row["family"], json.loads(row["metadata"] or "{}"))
        picked = (prompt, f"template-fallback:{origin.removeprefix('template:')}")
    row["prompt"], row["prompt_origin"] = picked


def generate_r0(row: Row, render, cfg: CorpusConfig):
    """R0 = M(<start_audio>D<end_audio>, P): the frozen reasoning LLM answers from the text surrogate."""
    row.update(answer_generated=None, finish_reason_generate="skipped", n_tokens_generate=0)
    if not usable(row):
        return
    c = yield Call("generate", render(generation_messages(row, cfg.generate.system_prompt)), cfg.generate.max_tokens,
                   cfg.generate.sampling)
    row.update(answer_generated=c.text, finish_reason_generate=c.finish_reason, n_tokens_generate=c.n_tokens)


def generation_messages(row: Row, system_prompt: str | None) -> list[dict]:
    if row["instruction"]:  # instruction data: no system turn, the spoken question stands for itself
        user = f"<start_audio>{row['audio_description']}<end_audio>\n\n{row['prompt'] or ''}".rstrip()
        return [{"role": "user", "content": user}]
    user = f"<start_audio>{row['audio_description']}<end_audio>\n\n{row['prompt']}"
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}
    ]


def rephrase(row: Row, render, cfg: CorpusConfig):
    """R = Rephrase_M(R0) with the thinking budget; only R0 is shown. Instruction rows are not rephrased."""
    row.update(rephrase_input=None, answer_rephrased=None, rephrase_raw=None, finish_reason_rephrase=None,
               n_tokens_rephrase=None, forced_rephrase=False, has_answer_tag=None, complete_reasoning=False,
               rephrase_tries=0)
    if row["answer_generated"] is not None:
        row["complete_reasoning"] = "</think>" in row["answer_generated"]
    rc = cfg.rephrase
    if not (row["answer_generated"] and row["finish_reason_generate"] != "error" and not row["instruction"]
            and rc.enabled):
        return
    msgs, complete = rephrase_messages(row["answer_generated"])
    prompt = render(msgs)
    for attempt in range(rc.retries + 1):
        sampling = rc.sampling if attempt == 0 else rc.retry_sampling.model_copy(
            update={"seed": retry_seed(row["key"], attempt)})
        steps = budget_steps(prompt, budget=rc.thinking_budget, max_tokens=rc.max_tokens,
                             max_total=rc.max_total_tokens, extend=lambda p, s: p + s)
        o = yield from relay(steps, lambda q, sampling=sampling: Call("rephrase", q[0], q[1], sampling))
        parsed = parse_rephrase(o.text, complete) if o.finish_reason != "error" else None
        row.update(rephrase_input=msgs[-1]["content"], rephrase_raw=o.text, finish_reason_rephrase=o.finish_reason,
                   n_tokens_rephrase=o.n_tokens, forced_rephrase=o.forced,
                   answer_rephrased=parsed.answer if parsed else None,
                   has_answer_tag=parsed.has_answer_tag if parsed else False, rephrase_tries=attempt + 1)
        if o.finish_reason == "error" or (row["answer_rephrased"] is not None and not rephrase_flags(row, cfg.filters)):
            return  # an engine error is not the rephrase's doing: a retry would meet it again


def retry_seed(key: str, attempt: int) -> int:
    """The sampling seed of a row's `attempt`-th rephrase retry: a function of the row key, so a rerun or another
    worker layout writes the same retries."""
    return int.from_bytes(hashlib.sha256(f"rephrase-retry:{attempt}:{key}".encode()).digest()[:4], "big")


def _by_stage(engine: Engine, calls: list[Call]) -> list[Completion]:
    """One batched engine call per stage (a stage's calls share their sampling), results in the calls' order."""
    out: list[Completion | None] = [None] * len(calls)
    for stage in dict.fromkeys(c.stage for c in calls):
        idx = [i for i, c in enumerate(calls) if c.stage == stage]
        samplings = [calls[i].sampling for i in idx]
        same = all(s == samplings[0] for s in samplings)  # retries: a seed per row
        done = engine.generate([calls[i].prompt for i in idx], [calls[i].max_tokens for i in idx],
                               samplings[0] if same else samplings)
        for i, c in zip(idx, done, strict=True):
            out[i] = c
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# final


def finish_row(row: Row, filters: FilterConfig, val_fraction: float, salt: str,
               count_tokens: Callable[[str], int] | None = None) -> Row:
    """+ target, n_tokens_target, flags, keep, split."""
    out = {"row_error": None, "llm_error": None, **row, **flag_row(row, filters, count_tokens)}
    out["flags"] = json.dumps(out["flags"]) if not isinstance(out["flags"], str) else out["flags"]
    out["split"] = split_of(row["key"], val_fraction, salt)
    return out


def failed_llm_row(row: Row, error: str) -> Row:
    """The LLM-stage columns for a row whose batch failed in the engine (flagged generate_failed, kept)."""
    return {
        **row, "answer_generated": None, "finish_reason_generate": "error", "n_tokens_generate": 0,
        "rephrase_input": None, "answer_rephrased": None, "rephrase_raw": None, "finish_reason_rephrase": None,
        "n_tokens_rephrase": None, "forced_rephrase": False, "has_answer_tag": None, "complete_reasoning": False,
        "rephrase_tries": 0,
        "leak_generated": "[]", "leak_rephrased": None, "judge_label": None, "judge_text": None,
        "audio_error": row.get("audio_error") or None, "llm_error": error,
    }
