"""Corpus statistics merged shard by shard equal one pass over every row (stats.json byte for byte)."""

from __future__ import annotations

import json
import random

from alarm.corpus.stats import corpus_stats, finish_stats, histogram_percentiles, merge_counts, shard_counts
from tests.unit.corpus.test_filters import finished


def some_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text = " ".join(["word"] * rng.randint(1, 20))
        rows.append(finished(
            key=f"s{i % 3}/{i}", source=f"s{i % 3}", split=rng.choice(["train", "validation"]),
            answer_rephrased=text, judge_label=rng.choice([None, "yes", "no", "unparsed"]),
            prompt_origin=rng.choice(["template:labels:0", "llm:1", "given", None]),
            forced_rephrase=rng.random() < 0.2, instruction=rng.random() < 0.1,
            leak_rephrased=rng.choice(['["the label"]', "[]"]), duration_s=rng.choice([3.0, 61.0]),
        ))
    return rows


def test_merged_shard_counts_equal_one_pass_over_the_rows():
    rows = some_rows(203)
    cuts = sorted(random.Random(1).sample(range(1, len(rows)), 9))
    shards = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    parts = [json.loads(json.dumps(shard_counts(s))) for s in shards]  # as stored: through JSON
    merged = finish_stats(merge_counts(parts))
    assert json.dumps(merged) == json.dumps(corpus_stats(rows))
    assert merged["rows"] == 203 and sum(v["rows"] for v in merged["per_source"].values()) == 203


def test_histogram_percentiles_read_json_keys():
    assert histogram_percentiles({"9": 3, "7": 1, "1": 1}) == {"p5": 2.2, "p50": 9.0, "p95": 9.0, "max": 9}
    assert histogram_percentiles({}) == {"p5": None, "p50": None, "p95": None, "max": None}
