"""The corpus row contract: stable keys, the hash split, every column in stage order, and the closed set of flags.

    key = make_key("esc50", "1-100038-A-14")      # "esc50/1-100038-A-14"
    split_of(key, 0.1, "123")                      # "train" | "validation", the same on every machine

Rows are keyed, never positional (fixes D17); columns are added by each stage and never overwritten (fixes D18);
rejected rows carry reason tags from `REJECT_REASONS` and are kept until the write.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from alarm.errors import InvalidInput

Split = Literal["train", "validation"]

# Type tags used in COLUMNS. JSON columns hold a JSON-encoded string (metadata, leak lists).
TYPE_TAGS = frozenset({
    "str", "str|None", "binary|None", "json", "json|None", "bool", "bool|None", "int", "int|None", "float|None",
})

# name -> "<type tag>: <meaning>", in stage order. `column_type` / `column_meaning` split the two parts.
# The pipeline's store appends two error-text columns of its own: row_error (source read) and llm_error (engine).
COLUMNS: dict[str, str] = {
    # source readers
    "key": "str: stable row id '<source>/<item_id>' (make_key); joins, resume and the split use it",
    "source": "str: source name from the corpus config (no '/')",
    "item_id": "str: unique id of the item within its source",
    "audio_uri": "str|None: local path or URI of the audio (s3://, file://), when not inlined",
    "audio_bytes": "binary|None: encoded audio file contents, when inlined (synthetic, hf_dataset)",
    "metadata": "json: the source's metadata fields for this item as a JSON object (input of describe)",
    "family": "str: describer / prompt family (config.Family literal)",
    "instruction": "bool: instruction data: prompt given, R0 is the target, no rephrasing",
    "prompt_given": "str|None: prompt shipped with the source (instruction data), else None",
    # audio probe
    "duration_s": "float|None: clip duration in seconds (from the header or the decode)",
    "sample_rate": "int|None: native sample rate of the file in Hz",
    "audio_ok": "bool: the audio decoded (or is only too long, with a known duration)",
    "audio_error": "str|None: '<tag>: <message>'; tag = AudioError.reason (undecodable, empty, too_long, ...) "
                   "or bad_metadata when describe rejected the metadata",
    # describe + prompt
    "audio_description": "str: D, the text surrogate of the audio built from metadata (describe.py); '' if none",
    "prompt": "str: P, the user prompt (given, template, or LLM-written)",
    "prompt_origin": "str: where P came from: 'given', 'template:<family>:<i>', 'llm:<i>', "
                     "'template-fallback:<family>:<i>'",
    # self-generation
    "answer_generated": "str|None: R0 = M(D, P) without the leading '<think>\\n' (it is in the chat template)",
    "finish_reason_generate": "str: engine finish reason of R0: stop | length | error | skipped",
    "n_tokens_generate": "int: new tokens in R0 (0 when not generated)",
    # self-rephrasing
    "rephrase_input": "str|None: the user turn shown to the rephraser (R0 with renamed tags), None if not rephrased",
    "answer_rephrased": "str|None: R, the rephrased response (parse_rephrase); None if missing or malformed",
    "rephrase_raw": "str|None: the rephraser's full output incl. its own reasoning, kept for audit only",
    "finish_reason_rephrase": "str|None: finish reason of the rephraser's final phase: stop | length | error",
    "n_tokens_rephrase": "int|None: new tokens the rephraser produced (both budget phases)",
    "forced_rephrase": "bool: the thinking budget ran out and the forcing sentence was appended",
    "rephrase_tries": "int: rephrases the row took (0: not rephrased; above 1: `rephrase.retries` ran, as the "
                      "first could not be parsed or earned a dropped flag: answer_changed, leak; the last try is the "
                      "row's)",
    "has_answer_tag": "bool|None: the rephraser's output held a closed <answer>...</answer> block",
    "complete_reasoning": "bool: R0 closed its reasoning with </think> (False = truncated inside the reasoning)",
    # leak checks
    "leak_generated": "json: JSON list of leak phrases found in R0 (leak.find_leaks)",
    "leak_rephrased": "json|None: JSON list of leak phrases found in R; None if not rephrased",
    "judge_label": "str|None: LLM leak judge verdict: yes (leak) | no | unparsed; None if the judge did not run",
    "judge_text": "str|None: the judge's full output",
    # filters + split
    "target": "str|None: the training target: R (or R0 for instruction rows / rephrasing disabled)",
    "n_tokens_target": "int|None: target length in RLM tokens",
    "flags": "json: JSON list of reject reason tags (REJECT_REASONS); [] when kept",
    "keep": "bool: no flags: the row is a training/validation example",
    "split": "str: train | validation, a pure function of (salt, key) (split_of)",
}

REJECT_REASONS: dict[str, str] = {
    "undecodable": "the audio could not be read or decoded (or the source row itself failed)",
    "too_long": "the clip is at least filters.max_duration_s seconds long",
    "empty_audio": "the audio decoded to zero samples",
    "bad_metadata": "describe rejected the metadata (e.g. turns without start/end); no description D",
    "no_answer_tag": "the rephraser's output had no closed <answer>...</answer> block (D19: never used as target)",
    "too_few_tokens": "target shorter than filters.min_target_tokens (over-shortened rephrasing)",
    "too_many_tokens": "target longer than filters.max_target_tokens (e.g. the rephraser's own reasoning)",
    "leak": "the target still trips the lexical leak detector (only when filters.drop_leaks)",
    "judge_leak": "the LLM leak judge answered YES",
    "answer_changed": "the prompt is a multiple-choice question and the rephrased final answer names another option "
                      "than R0's, or none (only when filters.drop_changed_answers)",
    "generate_failed": "self-generation failed or produced no R0 (finish_reason_generate == 'error')",
    "rephrase_failed": "rephrasing failed (finish_reason_rephrase == 'error') or returned a malformed answer",
}


def column_type(name: str) -> str:
    """The type tag of a column, e.g. 'str|None'."""
    return _column(name).split(": ", 1)[0]


def column_meaning(name: str) -> str:
    """The one-line meaning of a column."""
    return _column(name).split(": ", 1)[1]


def _column(name: str) -> str:
    if name not in COLUMNS:
        raise KeyError(f"unknown corpus column {name!r}; valid columns: {', '.join(COLUMNS)}")
    return COLUMNS[name]


def make_key(source: str, item_id: str) -> str:
    """The stable row key `<source>/<item_id>`.

    Args:
        source: Source name; non-empty, without '/'.
        item_id: Item id within the source; non-empty (may contain '/').

    Raises:
        InvalidInput: an empty part, a non-string part, or a '/' in `source`.
    """
    if not isinstance(source, str) or not source or "/" in source:
        raise InvalidInput(
            f"source name must be a non-empty string without '/', found {source!r}; rename the source in the "
            "corpus config (sources.N.name)"
        )
    if not isinstance(item_id, str) or not item_id:
        raise InvalidInput(
            f"item id of source {source!r} must be a non-empty string, found {item_id!r}; check the source's "
            "id column (sources.N.id_column)"
        )
    return f"{source}/{item_id}"


def parse_key(key: str) -> tuple[str, str]:
    """Invert `make_key`: `(source, item_id)`.

    Raises:
        InvalidInput: `key` is not of the form '<source>/<item_id>'.
    """
    source, sep, item_id = key.partition("/") if isinstance(key, str) else ("", "", "")
    if not (sep and source and item_id):
        raise InvalidInput(f"row key must look like '<source>/<item_id>', found {key!r}")
    return source, item_id


def split_of(key: str, val_fraction: float, salt: str) -> Split:
    """Assign a row to train or validation from sha256(salt + '\\0' + key) alone.

    Stable across processes, machines and Python versions (no `hash()`), independent of row order, and
    validation holds about `val_fraction` of each source (fixes the positional .npy splits of D17).

    Args:
        key: Row key from `make_key`.
        val_fraction: Fraction in [0, 1) sent to validation (`split.val_fraction`).
        salt: Hash salt (`split.salt`); a new salt gives an independent split.

    Raises:
        ValueError: `val_fraction` outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), found {val_fraction!r} (split.val_fraction)")
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    return "validation" if u < val_fraction else "train"
