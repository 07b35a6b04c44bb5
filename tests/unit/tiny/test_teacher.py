"""The toy teacher's training data: what it learns to say is what the corpus pipeline asks and parses."""

import random

from alarm.corpus.leak import find_leaks
from alarm.corpus.rephrase import parse_rephrase, rephrase_messages
from alarm.corpus.rows import generation_messages
from alarm.tiny import teacher as T
from alarm.toy.world import toy_item


def test_r0_leaks_and_the_rephrased_target_does_not():
    item = toy_item(0, 3)
    name = item.choices[item.gold]
    assert T.r0_output(item).endswith(f"</think>\n\n{name}") and find_leaks(T.r0_output(item))
    assert find_leaks(T.target(item)) == [] and name in T.target(item)


def test_the_rephrase_output_parses_into_the_target():
    item = toy_item(0, 5)
    _, complete = rephrase_messages(T.r0_output(item))
    parsed = parse_rephrase(T.rephrase_output(item), complete)
    assert parsed.has_answer_tag and parsed.answer == T.target(item)


def test_the_self_generation_chat_is_the_corpus_chat():
    item = toy_item(0, 1)
    row = {"instruction": False, "audio_description": item.description, "prompt": item.prompt}
    assert T.self_generation_chat(item, T.GENERATE_SYSTEM) == generation_messages(row, T.GENERATE_SYSTEM)


def test_batches_are_fresh_deterministic_and_mark_the_reply():
    from transformers import AutoTokenizer

    from alarm.tiny import ensure_tiny

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny("qwen3")))
    items = [toy_item(T.SOURCE_SEED, i) for i in range(8)]
    a = T.plan_batches(tok, items, random.Random(0), 6)
    assert a == T.plan_batches(tok, items, random.Random(0), 6)
    assert [len(b) for b in a] == [T.BATCH, T.BATCH, 2, T.BATCH, T.BATCH, 2]  # every 3rd: two rephrase chats
    seq, p = a[0][0]
    reply = tok.decode(seq[p:])
    assert reply.startswith("The description says it is ") and reply.endswith(T.EOS)
    assert tok.decode(seq[:p]).endswith("<|im_start|>assistant\n<think>\n")
    questions = {tok.decode(s[:p]) for b in a for s, p in b if len(b) == T.BATCH}
    assert len(questions) == 4 * T.BATCH  # 8 clips, yet no question repeats: options and wording are redrawn
