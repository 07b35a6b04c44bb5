"""Corpus statistics (stats.json), aggregated shard by shard: each committed shard gets a small count object,
and the run's statistics are those objects merged, so no step ever holds or re-reads the whole corpus.

    part = shard_counts(rows_of_one_shard)          # JSON-able; stored next to the shard
    stats = finish_stats(merge_counts(parts))       # == corpus_stats(all rows), byte for byte as JSON

Merging keeps first-seen order, so counts merged in shard order give exactly what one pass over the rows in that
order gives. Token percentiles come from exact histograms of the (integer) target lengths.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from alarm.corpus.filters import json_list, target_of
from alarm.corpus.schema import REJECT_REASONS

LEAK_KEYS = ("generated_rows", "generated_leaks", "rephrased_rows", "rephrased_leaks")


def shard_counts(rows: Iterable[dict]) -> dict:
    """The counts of some rows (a shard): every total stats.json needs, as plain JSON values."""
    c = {"rows": 0, "kept": 0, "per_source": {}, "per_split": {}, "flags": dict.fromkeys(REJECT_REASONS, 0),
         "target_origin": {}, "prompt_origin": {}, "judge": {}, "leak": dict.fromkeys(LEAK_KEYS, 0),
         "forced_rephrase": 0, "incomplete_reasoning": 0, "tokens_all": {}, "tokens_kept": {},
         "rephrase_retried": 0, "rephrase_retried_kept": 0}
    for row in rows:
        keep = bool(row.get("keep"))
        c["rows"] += 1
        c["kept"] += keep
        for table, name in ((c["per_source"], row.get("source")), (c["per_split"], row.get("split"))):
            entry = table.setdefault(str(name), {"rows": 0, "kept": 0})
            entry["rows"] += 1
            entry["kept"] += keep
        for tag in json_list(row.get("flags")):
            _add(c["flags"], tag)
        _add(c["prompt_origin"], str(row.get("prompt_origin") or "none").split(":", 1)[0])
        _add(c["target_origin"], target_of(row)[1])
        if row.get("judge_label") is not None:
            _add(c["judge"], row["judge_label"])
        if not row.get("instruction"):
            if row.get("answer_generated") is not None:
                c["leak"]["generated_rows"] += 1
                c["leak"]["generated_leaks"] += bool(json_list(row.get("leak_generated")))
            if row.get("leak_rephrased") is not None:
                c["leak"]["rephrased_rows"] += 1
                c["leak"]["rephrased_leaks"] += bool(json_list(row.get("leak_rephrased")))
        c["forced_rephrase"] += bool(row.get("forced_rephrase"))
        retried = (row.get("rephrase_tries") or 0) > 1
        c["rephrase_retried"] += retried
        c["rephrase_retried_kept"] += retried and keep
        c["incomplete_reasoning"] += row.get("answer_generated") is not None and not row.get("complete_reasoning")
        if row.get("n_tokens_target") is not None:
            _add(c["tokens_all"], str(row["n_tokens_target"]))
            if keep:
                _add(c["tokens_kept"], str(row["n_tokens_target"]))
    return c


def merge_counts(parts: Iterable[dict]) -> dict:
    """The counts of all `parts` (shard_counts objects), in their order."""
    total = shard_counts([])
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                _merge(total[key], value)
            else:
                total[key] += value
    return total


def finish_stats(c: dict) -> dict:
    """stats.json (less the pipeline's throughput) from merged counts.

    Returns:
        rows / kept counts; per source {rows, kept}; per flag counts (every REJECT_REASONS tag, 0 included);
        per split {rows, kept}; target origins; prompt origins by kind; judge labels; leak rates over
        non-instruction rows before (R0, leak_generated non-empty) and after rephrasing (R, leak_rephrased
        non-empty, over rephrased rows); forced and incomplete counts; rows rephrased again (`rephrase.retries`) and
        how many of them were kept; target token percentiles (p5, p50, p95,
        max) over all targets and over kept rows.
    """
    leak = c["leak"]
    return {
        "rows": c["rows"],
        "kept": c["kept"],
        "per_source": dict(sorted(c["per_source"].items())),
        "flags": c["flags"],
        "split": dict(sorted(c["per_split"].items())),
        "target_origin": c["target_origin"],
        "prompt_origin": c["prompt_origin"],
        "judge": c["judge"],
        "leak_rate": {
            "generated": _rate(leak["generated_leaks"], leak["generated_rows"]),
            "rephrased": _rate(leak["rephrased_leaks"], leak["rephrased_rows"]),
            "generated_rows": leak["generated_rows"],
            "rephrased_rows": leak["rephrased_rows"],
        },
        "forced_rephrase": c["forced_rephrase"],
        "rephrase_retried": {"rows": c["rephrase_retried"], "kept": c["rephrase_retried_kept"]},
        "incomplete_reasoning": c["incomplete_reasoning"],
        "target_tokens": {"all": histogram_percentiles(c["tokens_all"]),
                          "kept": histogram_percentiles(c["tokens_kept"])},
    }


def corpus_stats(rows: Iterable[dict]) -> dict:
    """Summary of a finished corpus for stats.json, in one pass over `rows` (the pipeline adds throughput)."""
    return finish_stats(shard_counts(rows))


def percentiles(values: list[float], qs: Iterable[float] = (5, 50, 95)) -> dict[str, float | None]:
    """Linear-interpolation percentiles (numpy's default method) plus the max; None for an empty list."""
    return histogram_percentiles(Counter(values), qs)


def histogram_percentiles(hist: dict, qs: Iterable[float] = (5, 50, 95)) -> dict[str, float | None]:
    """`percentiles` of the values a {value: count} histogram holds (keys may be numeric strings, as in JSON)."""
    points = sorted((_number(k), n) for k, n in hist.items() if n)
    total = sum(n for _, n in points)

    def nth(i: int):  # the i-th smallest value
        for value, n in points:
            if i < n:
                return value
            i -= n
        raise IndexError(i)

    out: dict[str, float | None] = {}
    for q in qs:
        if not total:
            out[f"p{q:g}"] = None
            continue
        pos = (total - 1) * q / 100
        lo, hi = nth(math.floor(pos)), nth(math.ceil(pos))
        out[f"p{q:g}"] = lo + (hi - lo) * (pos - math.floor(pos))
    out["max"] = points[-1][0] if total else None
    return out


def _number(key):
    if not isinstance(key, str):
        return key
    return int(key) if key.lstrip("-").isdigit() else float(key)


def _add(counts: dict, key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def _merge(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _merge(total.setdefault(key, {}), value)
        else:
            _add(total, key, value)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None
