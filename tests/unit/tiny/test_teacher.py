"""The toy teacher's training data: what it learns to say is what the corpus pipeline asks and parses."""

import json
from collections import Counter

import pytest

from alarm.corpus.leak import find_leaks
from alarm.corpus.rephrase import parse_rephrase, rephrase_messages
from alarm.corpus.rows import generation_messages
from alarm.tiny import teacher as T
from alarm.toy.judge import leaks
from alarm.toy.phrases import HELD, OPENINGS, reasoning
from alarm.toy.world import QTYPES, clip, toy_items


@pytest.fixture(scope="module")
def items() -> list:
    return [it for i in range(48) for it in toy_items(0, i)]


def test_r0_cites_the_description_and_the_target_hears_it(items):
    for it in items:
        r0, target = T.r0_output(it), T.target(it)
        assert r0.endswith(f" So the answer is {it.answer}.\n</think>\n\n{it.answer}") or it.yes_no
        assert r0.endswith(f", so the answer is {it.answer}.\n</think>\n\n{it.answer}") or not it.yes_no
        assert find_leaks(r0) and not leaks(target)  # the corpus detector and the held-out judge
        cited, heard = reasoning(it)
        opening = next(o for o in OPENINGS if cited.startswith(o[0]))
        assert heard == opening[1] + cited[len(opening[0]):]  # the light edit: only the opening changes
    assert len({T.target(it) for it in items}) > len(items) // 3  # varied: openings, kinds, attributes


def test_the_rephrase_output_parses_into_the_target(items):
    for it in items[:12]:
        _, complete = rephrase_messages(T.r0_output(it))
        parsed = parse_rephrase(T.rephrase_output(it), complete)
        assert parsed.has_answer_tag and parsed.answer == T.target(it)


def test_a_yes_no_conclusion_writes_each_option_beside_its_answer_then_the_value(items):
    """The question copied, each option beside the answer it gives, then the value found: the answer is looked up
    by the value's words, with no step that compares two of them (an XOR the tiny teacher learns late or not at
    all)."""
    yes_no = [it for it in items if it.yes_no]
    assert {it.answer for it in yes_no} == {"yes", "no"} and {it.qtype for it in yes_no} == set(HELD)
    for it in yes_no:
        end = T.target(it).split(". ", 1)[1]
        asked, other, held = it.facts["asked"], it.facts["other"], it.facts[HELD[it.qtype]]
        assert end == (f"{it.question} If it is {asked}, yes; if it is {other}, no. It is {held}, so the answer is "
                       f"{it.answer}.\n</think>\n\n{it.answer}")
        assert {asked, other} == set(next(i for i in items if i.qtype == it.qtype and not i.yes_no).choices)
        assert (it.answer == "yes") == (held == asked)


def test_the_rephrase_reasoning_is_no_heard_opening(items):
    """A heard opening starts with "I"; the rephrase chats' reasoning must not, or a student that brings "I" can
    tip the teacher into rewording instead of reasoning."""
    assert all(not T.REPHRASE_THOUGHT.startswith(heard.split()[0]) for _, heard in OPENINGS)
    assert T.rephrase_output(items[0]).startswith(T.REPHRASE_THOUGHT + "\n</think>")


def test_the_self_generation_chat_is_the_corpus_chat(items):
    it = items[1]
    row = {"instruction": False, "audio_description": it.description, "prompt": it.prompt}
    assert T.self_generation_chat(it, T.GENERATE_SYSTEM) == generation_messages(row, T.GENERATE_SYSTEM)


def test_batches_are_fresh_deterministic_and_mark_the_reply():
    from transformers import AutoTokenizer

    from alarm.tiny import ensure_tiny

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny("qwen3")))
    clips = [clip(T.source_seed(0), i) for i in range(24)]
    a = T.plan_batches(tok, T.Draw(clips, 0), 2 * T.LONG_EVERY)
    assert a == T.plan_batches(tok, T.Draw(clips, 0), 2 * T.LONG_EVERY)
    assert [len(b) for b in a] == ([T.BATCH] * (T.LONG_EVERY - 1) + [T.REPHRASE]) * 2  # then rephrase chats
    seq, p = a[0][0]
    assert tok.decode(seq[:p]).endswith("<|im_start|>assistant\n<think>\n") and tok.decode(seq).endswith(T.EOS)
    assert any(tok.decode(seq[p:]).startswith(cited) for cited, _ in OPENINGS)
    questions = {tok.decode(s[:p]) for b in a for s, p in b if len(b) == T.BATCH}
    assert len(questions) == 2 * (T.LONG_EVERY - 1) * T.BATCH  # 24 clips, yet no question repeats: options and wording are redrawn


def test_every_question_type_is_drawn_about_as_often_and_yes_no_more_than_half():
    draw = T.Draw([clip(T.source_seed(0), i) for i in range(48)], 0)
    drawn = [draw() for _ in range(1600)]
    counts = Counter(it.qtype for it in drawn)
    assert set(counts) == set(QTYPES) and max(counts.values()) < 2 * min(counts.values())
    asked = [it for it in drawn if it.qtype in T.YES_NO_TYPES]
    share = sum(it.yes_no for it in asked) / len(asked)
    assert abs(share - (0.5 + 0.25 * T.YES_NO_REDRAW)) < 0.05  # the world's half, plus the redrawn choices


def test_heard_chats_teach_the_heard_reasoning_whole_and_the_cited_one_stays_greedy(items):
    """A quarter of the question chats reason as heard, the loss on all of it, the opening included: the teacher
    gives a heard opening some probability of its own. The cited openings, which all start with "The", keep the
    rest, so greedy decoding still cites the description."""
    from transformers import AutoTokenizer

    from alarm.tiny import ensure_tiny

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny("qwen3")))
    for it in items[:16]:
        msgs = T.self_generation_chat(it, None)
        ids, p = T.encode_heard(tok, msgs, it)
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert tok.decode(ids[:p]) == prompt
        assert tok.decode(ids[p:]) == T.target(it) + T.EOS
    assert {cited.split()[0] for cited, _ in OPENINGS} == {"The"}
    assert 0 < T.HEARD and (T.BATCH - T.HEARD) / T.BATCH >= 0.75  # "The" stays the likeliest first word
    batches = T.plan_batches(tok, T.Draw([clip(T.source_seed(0), i) for i in range(40)], 0), 3)
    for batch in batches[:3:2]:  # question steps (every 4th is rephrasing)
        first = [tok.decode(seq[p:]).split()[0] for seq, p in batch]
        assert first[: -T.HEARD] == ["The"] * (T.BATCH - T.HEARD)
        assert set(first[-T.HEARD:]) <= {"I", "What"}


def test_the_toy_corpus_budgets_hold_the_longest_answer_and_rephrase():
    """The corpus' phase 1 stops at the thinking budget even after `</think>`: a rephrase longer than it loses its
    closing tags (`no_answer_tag`), as every yes/no row did with a budget of 64 once their reasoning grew."""
    from transformers import AutoTokenizer

    from alarm.config import CorpusConfig, load_config
    from alarm.tiny import ensure_tiny
    from alarm.toy.world import train_items

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny("qwen3")))
    cfg = load_config(CorpusConfig, "toy", section="corpus")
    items = train_items(0, 12)
    assert {it.yes_no for it in items} == {True, False}

    def longest(texts):
        return max(len(tok.encode(t + T.EOS, add_special_tokens=False)) for t in texts)

    assert longest(T.rephrase_output(it) for it in items) <= cfg.rephrase.thinking_budget
    assert longest(T.r0_output(it) for it in items) <= cfg.generate.max_tokens


def test_the_reading_check_asks_every_type_about_clips_the_teacher_never_trained_on():
    from alarm.toy.world import clip as toy_clip

    asked = T.check_questions(0, per_type=4)
    assert set(asked) == set(QTYPES) and all(len(v) == 4 for v in asked.values())
    trained = {toy_clip(T.source_seed(0), i).key for i in range(T.N_CLIPS)}
    assert not trained & {it.clip for v in asked.values() for it in v}
    assert T.check_questions(0, per_type=4) == asked  # the same questions every build


def test_a_teacher_that_misreads_a_type_is_trained_again_then_reported(tmp_path, monkeypatch, caplog):
    """The build measures how the teacher reads its own held-out descriptions (`reading.json`, a target of the toy
    report); one that misreads a type is trained again from another initialisation, and the last is kept with a
    warning naming the types. An untrained model (the random tiny Qwen3 in the teacher's place) answers none."""
    import shutil

    from alarm.tiny import ensure_tiny

    attempts = []

    def untrained(out, seed, attempt):
        attempts.append(attempt)
        shutil.copytree(ensure_tiny("qwen3"), out, dirs_exist_ok=True)

    monkeypatch.setattr(T, "build_teacher", untrained)
    monkeypatch.setattr(T, "CHECK_PER_TYPE", 1)
    T.build(tmp_path / "t", 0)
    assert attempts == list(range(T.ATTEMPTS))
    assert T.reading(tmp_path / "t") == {q: 0.0 for q in QTYPES}
    checked = json.loads((tmp_path / "t" / "reading.json").read_text())
    assert checked["rephrase_per_type"] == {q: 0.0 for q in QTYPES} and checked["attempts"] == T.ATTEMPTS
    assert (f"(attempt 1 of {T.ATTEMPTS}) misreads or misrephrases its own held-out questions (read, rephrased "
            "right of 1 each): kind 0%, 0%") in caplog.text
    assert "loudness 0%, 0%" in caplog.text and "keeping the best build: its students cannot" in caplog.text
    assert T.reading(tmp_path) is None  # not a teacher this code built
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no copy of a build left beside it


def test_the_first_teacher_that_reads_every_type_is_kept(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(T, "build_teacher", lambda out, seed, attempt: built.append(attempt))
    shares = iter([{q: 0.5 if q == "loudness" else 1.0 for q in QTYPES}, {q: 1.0 for q in QTYPES}])
    monkeypatch.setattr(T, "check_reading", lambda out, seed, n: next(shares))
    monkeypatch.setattr(T, "check_rephrasing", lambda out, seed, n: {q: 1.0 for q in QTYPES})
    (tmp_path / "t").mkdir()
    T.build(tmp_path / "t", 0)
    assert built == [0, 1] and T.reading(tmp_path / "t") == {q: 1.0 for q in QTYPES}
    assert json.loads((tmp_path / "t" / "reading.json").read_text())["attempts"] == 2


def test_a_teacher_that_rephrases_answers_wrong_is_trained_again_and_the_best_build_is_kept(tmp_path, monkeypatch):
    """Rephrasing that changes the answer of a type fails the build as misreading does; when no build passes, the
    one that passed most types is kept, not the last."""
    def built(out, seed, attempt):
        out.mkdir(exist_ok=True)
        (out / "weights").write_text(str(attempt))

    wrong = iter([{"duration": 0.5}, {"duration": 0.5, "loudness": 0.5}, {"duration": 0.75, "count": 0.5}])
    monkeypatch.setattr(T, "build_teacher", built)
    monkeypatch.setattr(T, "check_reading", lambda out, seed, n: {q: 1.0 for q in QTYPES})
    monkeypatch.setattr(T, "check_rephrasing", lambda out, seed, n: {q: 1.0 for q in QTYPES} | next(wrong))
    T.build(tmp_path / "t", 0)
    assert (tmp_path / "t" / "weights").read_text() == "0"  # one type missed, against two in the later builds
    checked = json.loads((tmp_path / "t" / "reading.json").read_text())
    assert checked["rephrase_per_type"]["duration"] == 0.5 and checked["attempts"] == T.ATTEMPTS
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
