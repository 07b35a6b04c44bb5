"""Row functions of the corpus pipeline, in stage order; pure, so Ray Data, tests and benchmarks share them.

    probe_row -> describe_row -> prompt_row -> llm_stages (generate R0 -> self-rephrase -> leak check -> judge)
    -> finish_row (filters, target, split)

Every stage adds columns and never overwrites one; a row that fails a stage is flagged and carried to the end,
never dropped. The LLM stages run over an `Engine` (vLLM in `services/engines/llm.py`; a scripted fake in tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from alarm.config import CorpusConfig, FilterConfig, SamplingConfig
from alarm.corpus.describe import describe
from alarm.corpus.filters import flag_row
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
from alarm.llm.thinking import Completion, generate_with_budget

Row = dict[str, Any]


class Engine(Protocol):
    """What the LLM stages need from an engine: chat rendering, batched generation, token counting."""

    def render(self, messages: list[dict]) -> str: ...

    def generate(self, prompts: list[str], max_tokens: list[int], sampling: SamplingConfig) -> list[Completion]: ...

    def count_tokens(self, text: str) -> int: ...


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
# LLM stages (one engine, batched per stage)


def llm_stages(rows: list[Row], engine: Engine, cfg: CorpusConfig) -> list[Row]:
    """Prompt writing (llm mode), self-generation R0, self-rephrasing R, leak checks and the optional judge."""
    rows = [dict(r) for r in rows]
    if cfg.prompts.mode == "llm":
        write_prompts(rows, engine, cfg)
    generate_r0(rows, engine, cfg)
    rephrase(rows, engine, cfg)
    for r in rows:
        r["leak_generated"] = json.dumps(find_leaks(r["answer_generated"] or ""))
        r["leak_rephrased"] = json.dumps(find_leaks(r["answer_rephrased"])) if r["answer_rephrased"] else None
    if cfg.leak.judge:
        judge(rows, engine, cfg)
    else:
        for r in rows:
            r["judge_label"], r["judge_text"] = None, None
    return rows


def write_prompts(rows: list[Row], engine: Engine, cfg: CorpusConfig) -> None:
    todo = [r for r in rows if r.get("prompt") is None and usable(r)]
    if not todo:
        return
    n = cfg.prompts.candidates
    written = _complete(engine, [writer_messages(r["audio_description"], r["family"], n) for r in todo],
                        cfg.prompts.max_tokens, SamplingConfig())
    cands = [parse_candidates(c.text) for c in written]
    checked = _complete(engine, [checker_messages(r["audio_description"], c) for r, c in zip(todo, cands, strict=True)],
                        cfg.prompts.max_tokens, SamplingConfig(temperature=0.0))
    for r, c, chk in zip(todo, cands, checked, strict=True):
        picked = select_prompt(r["key"], c, parse_checker(chk.text, len(c))) if c else None
        if picked is None:
            prompt, origin = choose_prompt(r["key"], r["family"], json.loads(r["metadata"] or "{}"))
            picked = (prompt, f"template-fallback:{origin.removeprefix('template:')}")
        r["prompt"], r["prompt_origin"] = picked


def generate_r0(rows: list[Row], engine: Engine, cfg: CorpusConfig) -> None:
    """R0 = M(<start_audio>D<end_audio>, P): the frozen reasoning LLM answers from the text surrogate."""
    todo = [r for r in rows if usable(r)]
    for r in rows:
        r.update(answer_generated=None, finish_reason_generate="skipped", n_tokens_generate=0)
    if not todo:
        return
    msgs = [generation_messages(r, cfg.generate.system_prompt) for r in todo]
    outs = _complete(engine, msgs, cfg.generate.max_tokens, cfg.generate.sampling)
    for r, c in zip(todo, outs, strict=True):
        r.update(answer_generated=c.text, finish_reason_generate=c.finish_reason, n_tokens_generate=c.n_tokens)


def generation_messages(row: Row, system_prompt: str | None) -> list[dict]:
    if row["instruction"]:  # instruction data: no system turn, the spoken question stands for itself
        user = f"<start_audio>{row['audio_description']}<end_audio>\n\n{row['prompt'] or ''}".rstrip()
        return [{"role": "user", "content": user}]
    user = f"<start_audio>{row['audio_description']}<end_audio>\n\n{row['prompt']}"
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}
    ]


def rephrase(rows: list[Row], engine: Engine, cfg: CorpusConfig) -> None:
    """R = Rephrase_M(R0) with the thinking budget; only R0 is shown. Instruction rows are not rephrased."""
    for r in rows:
        r.update(rephrase_input=None, answer_rephrased=None, rephrase_raw=None, finish_reason_rephrase=None,
                 n_tokens_rephrase=None, forced_rephrase=False, has_answer_tag=None, complete_reasoning=False)
        if r["answer_generated"] is not None:
            r["complete_reasoning"] = "</think>" in r["answer_generated"]
    todo = [r for r in rows if r["answer_generated"] and r["finish_reason_generate"] != "error"
            and not r["instruction"] and cfg.rephrase.enabled]
    if not todo:
        return
    prepared = [rephrase_messages(r["answer_generated"]) for r in todo]
    prompts = [engine.render(m) for m, _ in prepared]
    rc = cfg.rephrase
    outs = generate_with_budget(
        lambda ps, mts: engine.generate(ps, mts, rc.sampling), prompts,
        budget=rc.thinking_budget, max_tokens=rc.max_tokens, max_total=rc.max_total_tokens,
        extend=lambda p, s: p + s,
    )
    for r, (msgs, complete), o in zip(todo, prepared, outs, strict=True):
        parsed = parse_rephrase(o.text, complete) if o.finish_reason != "error" else None
        r.update(rephrase_input=msgs[-1]["content"], rephrase_raw=o.text, finish_reason_rephrase=o.finish_reason,
                 n_tokens_rephrase=o.n_tokens, forced_rephrase=o.forced,
                 answer_rephrased=parsed.answer if parsed else None,
                 has_answer_tag=parsed.has_answer_tag if parsed else False)


def judge(rows: list[Row], engine: Engine, cfg: CorpusConfig) -> None:
    for r in rows:
        r["judge_label"], r["judge_text"] = None, None
    todo = [r for r in rows if r.get("answer_rephrased")]
    if not todo:
        return
    outs = _complete(engine, [judge_messages(r["answer_rephrased"]) for r in todo], cfg.leak.max_tokens,
                     SamplingConfig(temperature=0.0))
    for r, c in zip(todo, outs, strict=True):
        label, _ok = parse_judge(c.text)
        r["judge_label"], r["judge_text"] = label, c.text


def _complete(engine: Engine, messages: list[list[dict]], max_tokens: int, sampling: SamplingConfig):
    return engine.generate([engine.render(m) for m in messages], [max_tokens] * len(messages), sampling)


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
        "leak_generated": "[]", "leak_rephrased": None, "judge_label": None, "judge_text": None,
        "audio_error": row.get("audio_error") or None, "llm_error": error,
    }
