"""The toy world's questions, and the files `alarm.toy` writes for the corpus and the evaluation."""

import json
import random
from collections import Counter, defaultdict

import pytest

from alarm.config import ManifestSourceConfig
from alarm.corpus import rows as R
from alarm.corpus.manifest import read_manifest
from alarm.eval.benchmarks import load_items
from alarm.eval.runner import audio_locations
from alarm.toy.phrases import HELD
from alarm.toy.world import (
    COUNT_WORDS,
    NAMES,
    QTYPES,
    SEP,
    ask,
    audio_path,
    chance,
    clip,
    eval_items,
    toy_items,
    train_items,
    write_benchmark,
    write_source,
)


@pytest.fixture(scope="module")
def world() -> list:
    return [it for i in range(160) for it in toy_items(5, i)]


def test_items_are_deterministic_per_seed_and_ask_about_the_clip(world):
    assert [it for i in range(8) for it in toy_items(5, i)] == [it for it in world if int(it.clip[-6:]) < 8]
    assert toy_items(6, 0) != toy_items(5, 0)
    for it in world:
        assert len(set(it.choices)) == len(it.choices) >= 2 and it.choices[it.gold] == it.answer
        assert it.prompt.startswith(it.question) and f"\n- {it.answer}\n" in it.prompt
        assert it.audio[:4] == b"fLaC" and it.description.startswith("[00:")
        assert it.key == f"{it.clip}#{it.qtype}"


def test_every_type_is_asked_and_half_the_attribute_questions_are_yes_no(world):
    counts = Counter(it.qtype for it in world)
    assert set(counts) == set(QTYPES) and min(counts.values()) >= 15
    attribute = [it for it in world if it.qtype not in ("kind", "count")]
    assert 0.35 < sum(it.yes_no for it in attribute) / len(attribute) < 0.65
    assert not any(it.yes_no for it in world if it.qtype in ("kind", "count"))


def test_the_kind_alone_never_gives_the_answer(world):
    """Within one kind, every attribute question has clips on either side (high and low, ...), and its yes/no
    form both answers."""
    truths, answers = defaultdict(list), defaultdict(list)
    for it in world:
        if it.qtype != "kind":
            truths[(it.qtype, it.kind)].append(it.answer if it.qtype == "count" else it.facts[HELD[it.qtype]])
            if it.yes_no:
                answers[(it.qtype, it.kind)].append(it.answer)
    for key, seen in (*truths.items(), *answers.items()):
        assert len(seen) < 6 or len(set(seen)) >= 2, (key, seen)  # too few to tell in a fixed (seeded) sample


def test_attributes_are_asked_only_clearly_on_one_side_of_the_line(world):
    for it in world:
        c = clip(5, int(it.clip[-6:]))
        m = c.source
        if it.qtype == "pitch":
            octave = int(m["note"][-1])
            assert octave >= SEP.high_octave if it.facts["level"] == "high" else octave <= SEP.low_octave
        elif it.qtype == "loudness":
            assert m["loudness"] == it.facts["level"] != "moderate"
        elif it.qtype == "duration":
            long = it.facts["length"] == "long"
            assert c.duration_s >= SEP.long_s if long else c.duration_s <= SEP.short_s
        elif it.qtype == "rate":
            rate = m["tremolo rate hz"] if it.kind == "tremolo" else m["clicks per second"]
            fast, slow = ((SEP.fast_tremolo_hz, SEP.slow_tremolo_hz) if it.kind == "tremolo"
                          else (SEP.fast_clicks, SEP.slow_clicks))
            assert rate >= fast if it.facts["speed"] == "fast" else rate <= slow
        elif it.qtype == "count":
            assert it.answer == COUNT_WORDS[m["beeps"] - 1]
        elif it.qtype == "voices":
            assert it.facts["first"] == ("the low voice" if m["turns"][0]["speaker"] == "A" else "the high voice")
        elif it.qtype == "direction":
            assert it.facts["way"] == ("rising" if m["direction"] == "upward" else "falling")
        else:
            assert it.answer == NAMES[it.kind] and len(it.choices) == 4


def test_descriptions_name_attributes_in_words_no_question_or_option_uses(world):
    """The description says "level: strong", the options "loud": the value is found by its word alone."""
    for it in world:
        words = {w for k, v in it.metadata.items() if k not in ("label", "turns") for w in str(v).split()}
        asked = set(it.prompt.lower().replace("?", " ").replace(".", " ").split())
        assert not words & asked, (it.key, words & asked)
        assert not any(ch.isdigit() for k, v in it.metadata.items() if k != "turns" for ch in str(v))
        assert {"label", "level", "span"} <= set(it.metadata)


def test_a_fresh_draw_asks_the_same_clip_in_other_words():
    c = clip(5, 2)
    rng = random.Random(0)
    drawn = {ask(c, "kind", rng).prompt for _ in range(20)}
    assert len(drawn) > 5 and {ask(c, "kind", rng).answer for _ in range(5)} == {NAMES[c.kind]}


def test_the_held_out_set_has_the_same_count_of_every_type_on_distinct_clips():
    items = eval_items(7, 6)
    assert Counter(it.qtype for it in items) == dict.fromkeys(QTYPES, 6)
    assert len({it.clip for it in items}) == len(items)
    assert eval_items(7, 6) == items
    assert 0.25 < chance(items) < 0.6


def test_training_items_balance_the_types_in_clip_order(world):
    items = train_items(5, 12)
    assert Counter(it.qtype for it in items) == dict.fromkeys(QTYPES, 12)
    assert train_items(5, 12) == items
    # each type's first 12 questions of the source, whichever clips carry them: no question is skipped or redrawn
    for q in QTYPES:
        assert [it for it in items if it.qtype == q] == [it for it in world if it.qtype == q][:12]
    assert [int(it.clip[-6:]) for it in items] == sorted(int(it.clip[-6:]) for it in items)


def test_a_type_given_its_own_number_of_training_items_adds_its_next_questions_only(world):
    base = train_items(5, 12)
    more = train_items(5, {**dict.fromkeys(QTYPES, 12), "loudness": 18})
    assert Counter(it.qtype for it in more) == {**dict.fromkeys(QTYPES, 12), "loudness": 18}
    assert [it for it in more if it.qtype != "loudness"] == [it for it in base if it.qtype != "loudness"]
    assert [it for it in more if it.qtype == "loudness"] == [it for it in world if it.qtype == "loudness"][:18]
    for bad in ({"loudness": 18}, {**dict.fromkeys(QTYPES, 12), "pitch": 0}, {**dict.fromkeys(QTYPES, 12), "x": 3}, 0):
        with pytest.raises(ValueError, match="a number >= 1 for each of kind, pitch"):
            train_items(5, bad)


def test_the_corpus_manifest_reproduces_descriptions_and_prompts(tmp_path):
    """Read back through the corpus' own manifest reader and describer, each row carries exactly the description
    and question the teacher answers (so R0 is what the teacher learned to answer); a clip's questions share its
    audio file."""
    items = [it for i in range(6) for it in toy_items(3, i)]
    path = write_source(tmp_path, items)
    cfg = ManifestSourceConfig(name="toy", path=str(path), prompt_column="prompt", family_column="family")
    rows = list(read_manifest(cfg))
    assert len(rows) == len(items) and len({r["key"] for r in rows}) == len(items)
    for it, row in zip(items, rows, strict=True):
        assert row["row_error"] is None
        assert row["prompt_given"] == it.prompt and row["family"] == it.family
        assert R.describe_row(R.probe_row(row, 60.0))["audio_description"] == it.description
    assert len(list((tmp_path / "audio").iterdir())) == 6
    before = path.read_bytes()
    assert write_source(tmp_path, items).read_bytes() == before  # a rerun rewrites the same files


def test_the_benchmark_is_mmau_format_with_the_gold_option(tmp_path):
    items = eval_items(4, 2)
    meta = write_benchmark(tmp_path, items)
    loaded = load_items("mmau", [meta])
    assert [x.gold for x in loaded] == [it.gold for it in items]
    assert [x.choices for x in loaded] == [it.choices for it in items]
    assert all((tmp_path / x.audio).read_bytes() == it.audio for x, it in zip(loaded, items, strict=True))
    assert {x.groups["sub-category"] for x in loaded} == set(QTYPES)
    assert json.loads(meta.read_text())[0]["id"] == items[0].key
    # the evaluation hands the answerer these locations; alarm.toy finds each clip's description by them
    assert list(audio_locations(loaded, str(tmp_path)).values()) == [str(tmp_path / audio_path(it)) for it in items]
