"""The toy teacher's training data: what it learns to say is what the corpus pipeline asks and parses."""

from collections import Counter

import pytest

from alarm.corpus.leak import find_leaks
from alarm.corpus.rephrase import parse_rephrase, rephrase_messages
from alarm.corpus.rows import generation_messages
from alarm.tiny import teacher as T
from alarm.toy.judge import leaks
from alarm.toy.phrases import OPENINGS, reasoning
from alarm.toy.world import QTYPES, clip, toy_items


@pytest.fixture(scope="module")
def items() -> list:
    return [it for i in range(48) for it in toy_items(0, i)]


def test_r0_cites_the_description_and_the_target_hears_it(items):
    for it in items:
        r0, target = T.r0_output(it), T.target(it)
        assert r0.endswith(f" So the answer is {it.answer}.\n</think>\n\n{it.answer}") or it.yes_no
        assert r0.endswith(f", and the answer is {it.answer}.\n</think>\n\n{it.answer}") or not it.yes_no
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


def test_the_self_generation_chat_is_the_corpus_chat(items):
    it = items[1]
    row = {"instruction": False, "audio_description": it.description, "prompt": it.prompt}
    assert T.self_generation_chat(it, T.GENERATE_SYSTEM) == generation_messages(row, T.GENERATE_SYSTEM)


def test_batches_are_fresh_deterministic_and_mark_the_reply():
    from transformers import AutoTokenizer

    from alarm.tiny import ensure_tiny

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny("qwen3")))
    clips = [clip(T.source_seed(0), i) for i in range(24)]
    a = T.plan_batches(tok, T.Draw(clips, 0), 6)
    assert a == T.plan_batches(tok, T.Draw(clips, 0), 6)
    assert [len(b) for b in a] == [T.BATCH, T.BATCH, T.REPHRASE] * 2  # every 3rd: rephrase chats
    seq, p = a[0][0]
    assert tok.decode(seq[:p]).endswith("<|im_start|>assistant\n<think>\n") and tok.decode(seq).endswith(T.EOS)
    assert any(tok.decode(seq[p:]).startswith(cited) for cited, _ in OPENINGS)
    questions = {tok.decode(s[:p]) for b in a for s, p in b if len(b) == T.BATCH}
    assert len(questions) == 4 * T.BATCH  # 24 clips, yet no question repeats: options and wording are redrawn


def test_every_question_type_is_drawn_about_as_often():
    draw = T.Draw([clip(T.source_seed(0), i) for i in range(48)], 0)
    counts = Counter(draw().qtype for _ in range(800))
    assert set(counts) == set(QTYPES) and max(counts.values()) < 2 * min(counts.values())


def test_follow_chats_write_the_heard_opening_and_teach_the_rest(items):
    """The teacher learns to carry on from a heard opening (the attribute, the conclusion, the answer), never to
    write the opening itself: that stays the student's to bring."""
    from transformers import AutoTokenizer

    from alarm.tiny import ensure_tiny

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny("qwen3")))
    for it in items[:16]:
        msgs = T.self_generation_chat(it, None)
        ids, p = T.encode_follow(tok, msgs, it)
        heard = OPENINGS[it.wording % len(OPENINGS)][1]
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert tok.decode(ids[:p]) == prompt + heard
        assert tok.decode(ids[p:]) == T.target(it)[len(heard):] + T.EOS
