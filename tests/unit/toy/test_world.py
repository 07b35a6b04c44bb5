"""The toy world's items, and the files `alarm.toy` writes for the corpus and the evaluation."""

import json
from collections import Counter

from alarm.config import ManifestSourceConfig
from alarm.corpus import rows as R
from alarm.corpus.manifest import read_manifest
from alarm.eval.benchmarks import load_items
from alarm.eval.runner import audio_locations
from alarm.toy.world import KINDS, NAMES, audio_path, toy_item, write_benchmark, write_source


def test_items_are_deterministic_cover_every_kind_and_ask_about_the_clip():
    items = [toy_item(5, i) for i in range(16)]
    assert [toy_item(5, i) for i in range(16)] == items
    assert Counter(it.kind for it in items) == Counter({k: 2 for k in KINDS})  # 8 kinds per block of 8
    for it in items:
        assert len(set(it.choices)) == 4 and it.choices[it.gold] == NAMES[it.kind]
        assert it.prompt.startswith(it.question) and f"\n- {NAMES[it.kind]}\n" in it.prompt
        assert it.audio[:4] == b"fLaC" and it.description.startswith("[00:00-")
    assert toy_item(6, 0) != items[0]


def test_the_corpus_manifest_reproduces_descriptions_and_prompts(tmp_path):
    """Read back through the corpus' own manifest reader and describer, each row carries exactly the description
    and question the teacher was trained on (so R0 is what the teacher learned to answer)."""
    items = [toy_item(3, i) for i in range(16)]
    path = write_source(tmp_path, items)
    cfg = ManifestSourceConfig(name="toy", path=str(path), prompt_column="prompt", family_column="family")
    rows = list(read_manifest(cfg))
    assert len(rows) == len(items)
    for it, row in zip(items, rows, strict=True):
        assert row["row_error"] is None
        assert row["prompt_given"] == it.prompt and row["family"] == it.family
        assert R.describe_row(R.probe_row(row, 60.0))["audio_description"] == it.description
    before = path.read_bytes()
    assert write_source(tmp_path, items).read_bytes() == before  # a rerun rewrites the same files


def test_the_benchmark_is_mmau_format_with_the_gold_option(tmp_path):
    items = [toy_item(4, i) for i in range(8)]
    meta = write_benchmark(tmp_path, items)
    loaded = load_items("mmau", [meta])
    assert [x.gold for x in loaded] == [it.gold for it in items]
    assert [x.choices for x in loaded] == [it.choices for it in items]
    assert all((tmp_path / x.audio).read_bytes() == it.audio for x, it in zip(loaded, items, strict=True))
    assert {x.groups["sub-category"] for x in loaded} == set(KINDS)
    assert json.loads(meta.read_text())[0]["id"] == items[0].key
    # the evaluation hands the answerer these locations; alarm.toy finds each clip's description by them
    assert list(audio_locations(loaded, str(tmp_path)).values()) == [str(tmp_path / audio_path(it)) for it in items]
