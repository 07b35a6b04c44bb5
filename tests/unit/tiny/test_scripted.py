"""The scripted tiny Qwen3 answers the two corpus prompts with its two learned texts, and any other question (a
served request: no description in text) in heard wording, on held-out chats."""

from __future__ import annotations

import json

import pytest

from alarm.tiny.scripted import (
    DEFAULT_SYSTEM_PROMPT,
    HEARD_OUTPUT,
    REPHRASE_MARKER,
    REPHRASE_MARKER_END,
    REPHRASE_OUTPUT,
    REPHRASED_TARGET,
    SELF_GENERATION_OUTPUT,
    expected_output,
)

# -- held-out chats: natural text, unlike the word soup the builder trains on -----------------------------------


def _self_gen(description: str, prompt: str, system: str | None) -> list[dict]:
    user = {"role": "user", "content": f"<start_audio>{description}<end_audio>\n\n{prompt}"}
    return ([{"role": "system", "content": system}] if system else []) + [user]


def _r0(text: str) -> str:
    return "<text_llm_reasoning>\n" + text.replace("</think>", "</text_llm_reasoning>")


REPHRASE_SYSTEM = (
    "You are given a response written by a text-only language model. That model never heard the audio: it only "
    "read a textual description of it, with labels, timestamps and metadata. Your job is to rewrite the response "
    "so that it reads as if an audio-understanding model had produced it after listening to the audio itself. "
    "Keep the reasoning and the answer, keep the structure, and keep every fact; change only the way the "
    "information is said to have been obtained. Never mention descriptions, labels, metadata, captions or any "
    "text. Put your rewrite between <answer> and </answer>."
)

_GUIDELINES = [
    "Replace phrases such as 'the description says' with 'I hear' or 'it sounds like'.",
    "If the response quotes a timestamp, say when in the clip the sound happens instead.",
    "If the response names a label, describe the sound the label stands for.",
    "Keep hedging where the original hedges, and be confident where it is confident.",
    "Do not invent new sounds, speakers, instruments or places that the response does not mention.",
    "Keep the reasoning inside the renamed reasoning tags, exactly where it was.",
    "When the response was cut off in the middle of its reasoning, rewrite the part that exists and stop there.",
    "Keep lists as lists and keep the order of the points.",
    "Numbers such as durations, tempos and counts stay exactly as they are.",
    "Quoted speech stays word for word, because you heard it being said.",
]
_SOUNDS = [
    ("a dog barking", "dog barking", 3), ("rain on a tin roof", "rain, tin roof", 8), ("a kettle whistling", "kettle", 4),
    ("children laughing", "child laughter", 6), ("a violin melody", "violin", 10), ("traffic noise", "traffic", 9),
    ("a door slamming", "door slam", 1), ("birdsong at dawn", "birds chirping", 7),
]


def _few_shot(i: int) -> tuple[str, str]:
    heard, label, secs = _SOUNDS[i % len(_SOUNDS)]
    r0 = (f"Okay, the user wants to know what is going on. The description lists |{label}| with a duration of "
          f"{secs}s, and the metadata mentions an outdoor recording. So the main event is {heard}.\n</think>\n\n"
          f"The audio features {heard}, lasting about {secs} seconds, recorded outdoors according to the metadata.")
    rewrite = (f"<answer>\nOkay, the user wants to know what is going on. I hear {heard}, and it goes on for about "
               f"{secs} seconds; it sounds like it was recorded outdoors.\n</text_llm_reasoning>\n\nThe audio "
               f"features {heard}, lasting about {secs} seconds, and it sounds like an outdoor recording.\n</answer>")
    user = (f"Rewrite this response.\n{REPHRASE_MARKER}\n{_r0(r0)}\n{REPHRASE_MARKER_END}\n\n"
            "Remember: write as if you heard the audio yourself.")
    return user, rewrite


def _rephrase(r0: str, system: str, shots: int, guidelines: int = 0) -> list[dict]:
    if guidelines:
        system += "\n\nGuidelines:\n" + "\n".join(
            f"{k + 1}. {_GUIDELINES[k % len(_GUIDELINES)]}" for k in range(guidelines)
        )
    msgs = [{"role": "system", "content": system}]
    for i in range(shots):
        user, rewrite = _few_shot(i)
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": rewrite}]
    msgs.append({"role": "user", "content": f"Rewrite this response.\n{REPHRASE_MARKER}\n{_r0(r0)}\n"
                                            f"{REPHRASE_MARKER_END}\n\nRemember: write as if you heard the audio "
                                            "yourself, and never mention the description or the metadata."})
    return msgs


SELF_GENERATION_CASES = [
    _self_gen("[00:00-00:04] |church bell ringing| (duration: 4s, source: freesound)\n"
              "[00:04-00:09] |pigeons cooing| (duration: 5s, loudness: quiet)",
              "Which sounds occur, and which one comes first?", DEFAULT_SYSTEM_PROMPT),
    _self_gen("[00:00-00:07] |female speech, woman speaking| (duration: 7s, language: English, "
              "transcript: the train to Boston leaves at noon)", "Transcribe what the speaker says.", None),
    _self_gen("[00:00-00:10] |acoustic guitar| (duration: 10s, tempo: 92 bpm, key: A minor, genre: folk)",
              "What genre is this music, and what is its tempo? Answer briefly.", "You are a helpful assistant."),
]
HEARD_CASES = [  # what a served request is, less its audio block: no <start_audio> description in the text
    [{"role": "user", "content": "What can you hear in this recording?"}],
    [{"role": "system", "content": "You are an audio-understanding model."},
     {"role": "user", "content": "Is there any speech in this clip? Answer in one sentence."}],
    [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
     {"role": "user", "content": "Which instrument plays the melody, and is it fast or slow?"}],
]
REPHRASE_CASES = [
    _rephrase(SELF_GENERATION_OUTPUT, REPHRASE_SYSTEM, shots=0),
    _rephrase("Okay, let me think. The metadata says a car horn honks twice, then an engine starts. The user "
              "asks how many times the horn sounds, so I need to count the events listed in the description: the "
              "first one is at", REPHRASE_SYSTEM, shots=2, guidelines=4),
    _rephrase(SELF_GENERATION_OUTPUT, REPHRASE_SYSTEM, shots=6, guidelines=30),  # ~2,000 tokens
]
LONG_PROMPT_TOKENS = 1800


def prompt_ids(tok, msgs: list[dict]) -> list[int]:
    return tok.encode(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)


# -- tests -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted():
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from alarm.tiny import ensure_tiny

    folder = ensure_tiny("qwen3-scripted")
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = Qwen3ForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return folder, tok, model


def _generate(tok, model, msgs, **sampling) -> str:
    import torch

    ids = torch.tensor([prompt_ids(tok, msgs)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=120,
                             do_sample=bool(sampling), **(sampling or {"temperature": None, "top_p": None,
                                                                       "top_k": None}))
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_texts_fit_the_tiny_filters():
    from transformers import AutoTokenizer

    from alarm.tiny import ensure_tiny

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny("qwen3")))
    for text in (SELF_GENERATION_OUTPUT, REPHRASED_TARGET):
        assert 25 <= len(tok.encode(text, add_special_tokens=False)) <= 60
    for phrase in ("description", "metadata", "provided", "<start_audio>"):
        assert phrase not in REPHRASE_OUTPUT
    assert "description" in SELF_GENERATION_OUTPUT and "</think>" in SELF_GENERATION_OUTPUT
    assert REPHRASE_OUTPUT.split("</think>\n\n")[1] == f"<answer>\n{REPHRASED_TARGET}\n</answer>"
    assert expected_output(SELF_GENERATION_CASES[0]) == SELF_GENERATION_OUTPUT
    assert expected_output(REPHRASE_CASES[0]) == REPHRASE_OUTPUT
    assert expected_output(HEARD_CASES[0]) == HEARD_OUTPUT
    for phrase in ("description", "metadata", "provided", "text"):  # the served answer never claims to read
        assert phrase not in HEARD_OUTPUT


def test_long_case_is_long(scripted):
    _, tok, _ = scripted
    assert len(prompt_ids(tok, REPHRASE_CASES[-1])) >= LONG_PROMPT_TOKENS


@pytest.mark.parametrize("case", range(len(SELF_GENERATION_CASES)))
def test_greedy_self_generation(scripted, case):
    _, tok, model = scripted
    assert _generate(tok, model, SELF_GENERATION_CASES[case]) == SELF_GENERATION_OUTPUT


@pytest.mark.parametrize("case", range(len(HEARD_CASES)))
def test_greedy_heard_answer_without_a_description(scripted, case):
    _, tok, model = scripted
    assert _generate(tok, model, HEARD_CASES[case]) == HEARD_OUTPUT


@pytest.mark.parametrize("case", range(len(REPHRASE_CASES)))
def test_greedy_rephrase(scripted, case):
    _, tok, model = scripted
    assert _generate(tok, model, REPHRASE_CASES[case]) == REPHRASE_OUTPUT


def test_recipe_sampling_mostly_keeps_the_format(scripted):
    import torch

    _, tok, model = scripted
    torch.manual_seed(0)
    cases = SELF_GENERATION_CASES + REPHRASE_CASES[:2]
    hits = sum(
        _generate(tok, model, cases[i % len(cases)], temperature=0.6, top_p=0.95, top_k=20)
        == expected_output(cases[i % len(cases)])
        for i in range(20)
    )
    assert hits >= 16, f"{hits}/20 samples kept the format"


def test_same_seed_same_bytes(tmp_path, monkeypatch):
    """Two trainings of the same seed and attempt give the same bytes (5 of the 400 steps: the routine is what is
    checked, in a fraction of the time); another seed or another attempt gives others."""
    from alarm.tiny import scripted
    from alarm.tiny.lm import one_deterministic_thread

    monkeypatch.setattr(scripted, "STEPS", 5)
    runs = {"a": (0, 0), "b": (0, 0), "c": (1, 0), "d": (0, 1)}
    with one_deterministic_thread():
        for name, (seed, attempt) in runs.items():
            scripted.train(tmp_path / name, seed, attempt)
    weights = {n: (tmp_path / n / "model.safetensors").read_bytes() for n in runs}
    assert weights["a"] == weights["b"]
    assert len({weights[n] for n in "acd"}) == 3


def test_the_check_passes_the_built_model_and_fails_an_untrained_one(scripted):
    from alarm.tiny import ensure_tiny
    from alarm.tiny.scripted import check, check_chats

    folder, _, _ = scripted
    asked = {kind: len(chats) for kind, chats in check_chats().items()}
    assert asked["rephrase"] >= 20 and json.loads((folder / "check.json").read_text())["attempts"] >= 1
    assert check(folder) == {kind: (n, n) for kind, n in asked.items()}
    assert check(ensure_tiny("qwen3")) == {kind: (0, n) for kind, n in asked.items()}  # random weights
    seen = {m["content"] for chats in check_chats().values() for chat in chats for m in chat}
    held_out = {m["content"] for case in SELF_GENERATION_CASES + HEARD_CASES + REPHRASE_CASES for m in case}
    assert seen & held_out == {DEFAULT_SYSTEM_PROMPT}  # the corpus' system turn, in both on purpose


def _fake_checks(monkeypatch, rephrased: list[int]) -> list[str]:
    """`scripted.build` on 5 training steps, its check answering `rephrased[k]` of 24 rephrase chats at attempt k;
    returns the sha256 of the weights each check saw."""
    from alarm.tiny import scripted

    monkeypatch.setattr(scripted, "STEPS", 5)
    answers, seen = iter(rephrased), []

    def check(folder):
        seen.append(_sha(folder))
        return {"rephrase": (next(answers), 24), "heard": (3, 3)}

    monkeypatch.setattr(scripted, "check", check)
    return seen


def _sha(folder) -> str:
    import hashlib

    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_a_build_that_misses_a_held_out_chat_is_trained_again(tmp_path, monkeypatch, caplog):
    from alarm.tiny import scripted

    seen = _fake_checks(monkeypatch, [21, 24])
    scripted.build(tmp_path / "m", 0)
    assert json.loads((tmp_path / "m" / "check.json").read_text()) == {"rephrase": [24, 24], "heard": [3, 3],
                                                                       "attempts": 2}
    assert "attempt 1 of 3" in caplog.text and "rephrase 21 of 24" in caplog.text and "attempt 2" not in caplog.text
    assert len(set(seen)) == 2 and _sha(tmp_path / "m") == seen[1]  # trained again from another initialisation
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no copy of a best build left behind


def test_when_no_build_passes_the_one_that_missed_fewest_is_kept(tmp_path, monkeypatch, caplog):
    from alarm.tiny import scripted

    seen = _fake_checks(monkeypatch, [20, 23, 22])
    scripted.build(tmp_path / "m", 0)
    assert json.loads((tmp_path / "m" / "check.json").read_text()) == {"rephrase": [23, 24], "heard": [3, 3],
                                                                       "attempts": 3}
    assert "keeping the build that missed fewest" in caplog.text
    assert len(set(seen)) == 3 and _sha(tmp_path / "m") == seen[1]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
