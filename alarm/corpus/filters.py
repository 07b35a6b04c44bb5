"""Target formation and reject flags (the ALARM recipe's filters and targets; the statistics are in stats.py).

    row |= flag_row(row, cfg.filters, count_tokens=tokenizer_len)   # + target, n_tokens_target, flags, keep

Rows are flagged, never dropped; every reason comes from `schema.REJECT_REASONS`. The 100-612 token bounds are
applied here, to the rows the trainer reads (in the reference they never were: D3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alarm.corpus.leak import find_leaks
from alarm.corpus.schema import REJECT_REASONS
from alarm.llm.thinking import split_reasoning

if TYPE_CHECKING:
    from alarm.config import FilterConfig

# audio_error tag ('<tag>: <message>') -> reject reason; any other tag reads as undecodable
AUDIO_ERROR_REASONS = {"empty": "empty_audio", "too_long": "too_long", "bad_metadata": "bad_metadata"}


def json_list(value: Any) -> list:
    """A list column that may arrive as a JSON string (as stored) or as a list (in memory); None -> []."""
    if value is None:
        return []
    if isinstance(value, str):
        return json.loads(value) if value else []
    return list(value)


def target_of(row: dict) -> tuple[str | None, str]:
    """The training target and where it comes from: ('rephrased' | 'generated' | 'none').

    Instruction rows and rows that never entered the rephrase stage (rephrase.enabled=false, the no-rephrase
    ablation: `rephrase_input` and `finish_reason_rephrase` both None) train on R0; other rows on R.
    """
    if row.get("instruction") or (row.get("rephrase_input") is None and row.get("finish_reason_rephrase") is None):
        r0 = row.get("answer_generated")
        return (r0, "generated") if r0 is not None else (None, "none")
    r = row.get("answer_rephrased")
    return (r, "rephrased") if r is not None else (None, "none")


_OPTIONS = re.compile(r"\n\s*Options:\s*\n((?:[ \t]*- [^\n]+\n?)+)")


def options_of(prompt: str | None) -> tuple[str, ...]:
    """The options of a multiple-choice prompt in MMAU's native format ('Options:' then one '- text' line each);
    () for any other prompt."""
    m = _OPTIONS.search("\n" + (prompt or ""))
    if not m:
        return ()
    return tuple(line.strip()[2:].strip() for line in m.group(1).splitlines() if line.strip().startswith("- "))


def answer_changed(row: dict) -> bool:
    """True when the row's prompt offers options, R0's final answer names one of them, and R's final answer
    names another or none. Rows whose R0 names no option (free text, truncated reasoning) are never flagged."""
    # imported here: alarm.eval imports the config (pydantic), which this module must not at import time
    from alarm.eval.parsing import text_choice

    choices = options_of(row.get("prompt"))
    if len(choices) < 2 or row.get("answer_rephrased") is None:
        return False
    before, _ = text_choice(split_reasoning(row.get("answer_generated") or "")[1], choices)
    if before is None:
        return False
    after, _ = text_choice(split_reasoning(row["answer_rephrased"])[1], choices)
    return after != before


def _audio_reasons(row: dict, cfg: FilterConfig) -> list[str]:
    reasons = []
    err = row.get("audio_error") or row.get("row_error")
    if err or row.get("audio_ok") is False:
        tag = str(err or "undecodable").split(":", 1)[0].strip()
        reasons.append(AUDIO_ERROR_REASONS.get(tag, "undecodable"))
    duration = row.get("duration_s")
    if duration is not None and duration >= cfg.max_duration_s and "too_long" not in reasons:
        reasons.append("too_long")
    return reasons


def _llm_reasons(row: dict, source: str) -> list[str]:
    if row.get("finish_reason_generate") == "error" or (
        row.get("answer_generated") is None and row.get("finish_reason_generate") not in (None, "skipped")
    ):
        return ["generate_failed"]
    if row.get("answer_generated") is None:
        return []  # not generated because an earlier stage rejected the row; that reason is flagged already
    if source == "generated" or row.get("instruction"):
        return []
    if row.get("finish_reason_rephrase") == "error":
        return ["rephrase_failed"]
    if row.get("has_answer_tag") is False:
        return ["no_answer_tag"]
    if row.get("answer_rephrased") is None:
        return ["rephrase_failed"]  # tag present but malformed (parse_rephrase problem) or never rephrased
    return []


def rephrase_flags(row: dict, cfg: FilterConfig) -> list[str]:
    """The flags a row's rephrase earns by itself: `leak` (its text trips the lexical leak check, under
    `cfg.drop_leaks`) and `answer_changed` (under `cfg.drop_changed_answers`). `flag_row` gives them to rephrased
    targets; `rows.rephrase` retries while a try earns one."""
    r = row.get("answer_rephrased")
    if r is None:
        return []
    flags = []
    if cfg.drop_leaks and not row.get("instruction") and find_leaks(r):
        flags.append("leak")
    if cfg.drop_changed_answers and answer_changed(row):
        flags.append("answer_changed")
    return flags


def flag_row(row: dict, cfg: FilterConfig, count_tokens: Callable[[str], int] | None = None) -> dict:
    """Form the target and flag the row; returns only the added columns.

    Args:
        row: A row with the columns of `schema.COLUMNS` up to judge_text.
        cfg: `filters` section: token bounds, max duration, drop_leaks.
        count_tokens: Tokenizer length of a text (RLM tokenizer). If None, the row must carry n_tokens_target.

    Returns:
        `{target, n_tokens_target, flags: list of REJECT_REASONS tags, keep}`; keep = no flags.

    Raises:
        ValueError: a target exists but neither `count_tokens` nor the row's n_tokens_target gives its length.
    """
    target, source = target_of(row)
    flags = _audio_reasons(row, cfg) + _llm_reasons(row, source)
    n_tokens = None
    if target is not None:
        n_tokens = count_tokens(target) if count_tokens is not None else row.get("n_tokens_target")
        if n_tokens is None:
            raise ValueError(
                f"row {row.get('key')!r}: cannot apply filters.min/max_target_tokens without a token count; pass "
                "count_tokens (the RLM tokenizer's length) or precompute n_tokens_target"
            )
        if n_tokens < cfg.min_target_tokens:
            flags.append("too_few_tokens")
        if n_tokens > cfg.max_target_tokens:
            flags.append("too_many_tokens")
        if source == "rephrased":
            flags += rephrase_flags(row, cfg)  # the target is the rephrase
        elif cfg.drop_leaks and not row.get("instruction") and find_leaks(target):
            flags.append("leak")
    if row.get("judge_label") == "yes":
        flags.append("judge_leak")
    if not flags and not (target or "").strip():  # never keep a row without a target, whatever the stage left
        flags.append("generate_failed" if source != "rephrased" and not row.get("answer_generated") else
                     "rephrase_failed")
    flags = list(dict.fromkeys(flags))
    unknown = [f for f in flags if f not in REJECT_REASONS]
    assert not unknown, f"internal: reason tags {unknown} missing from schema.REJECT_REASONS"
    return {"target": target, "n_tokens_target": n_tokens, "flags": flags, "keep": not flags}
