"""A tiny Qwen3 that has learned the corpus pipeline's two response formats: a test double in model form.

`build` (`tiny://qwen3-scripted`) starts from `alarm.tiny.qwen3.build` (same config, vocabulary, tokenizer files,
generation config) and trains it briefly on CPU so that, on chat-rendered prompts ending in
`<|im_start|>assistant\\n<think>\\n`, greedy decoding answers

- a self-generation prompt (the last user turn holds the text surrogate `<start_audio>...<end_audio>`) with
  `SELF_GENERATION_OUTPUT`: a short reasoning that leaks the text surrogate ("description", "metadata"),
  `</think>`, an answer;
- a rephrase prompt (the last user turn holds `<NEW_TEXT_LLM_RESPONSE>`) with `REPHRASE_OUTPUT`: a short own
  reasoning, `</think>`, then `<answer>` around `REPHRASED_TARGET`, the same kind of text in auditory wording with
  the renamed `</text_llm_reasoning>` tag and none of the leak phrases;
- any other question (no description in text: what a served request is, its audio arrives as embeddings) with
  `HEARD_OUTPUT`, REPHRASED_TARGET's text as a plain response: what the method trains a model to say, so the tiny
  server's answer never claims to read a description.

All end with `<|im_end|>`. The condition generalises over descriptions, prompts, system prompts, few-shot turns and
R0 bodies because training draws them at random (`self_generation_chat`, `rephrase_chat`: word soup from the real
vocabulary, natural phrases, perturbed copies of the two texts as distractors); every third step is one long
sequence (800-3,900 tokens), so the condition holds over the corpus' ~2,200-token rephrase prompts and beyond.

Training is plain PyTorch, deterministic (same seed -> same bytes on one machine): 400 fixed steps of AdamW on the
body and a lazy Adam on the tied embedding rows a step touches (`alarm.tiny.lm.train_sampled`), ~40 s on one thread
of an Intel Xeon and ~90 s on an AMD EPYC. The loss covers the assistant tokens only, with a sampled softmax (exact
over every output token and every token in the batch, uniform negatives for the rest with a log(|R|/K)
correction), since 151,936-way logits would otherwise dominate the CPU time.

Training draws word soup; the corpus and users send natural text. So `build` then checks the model on held-out
natural chats (`check_chats`: few-shot rephrase prompts of 4 to 10 natural examples, up to ~2,200 tokens, and
natural self-generation and served questions) and trains it again from another initialisation where greedy
decoding misses one. Whether a 2-layer model resists copying its few-shot examples is float noise: the build of
seed 0 that passes on Intel Xeons rewrote its answer after 6 natural examples when built on an AMD EPYC.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

from alarm.config import GENERATION_SYSTEM_PROMPT
from alarm.tiny.keys import data_digest, memo, source_of
from alarm.tiny.lm import Batches, one_deterministic_thread, train_sampled

log = logging.getLogger(__name__)

# -- the two learned outputs (what follows the generation prompt `<|im_start|>assistant\n<think>\n`) ------------

SELF_GENERATION_OUTPUT = (
    "Okay, the description says there is a sound in the audio, and the metadata lists its duration. I think the "
    "user wants to know what it is, so let me use what the description provides.\n</think>\n\n"
    "Based on the description, the audio contains a clear sound that matches the metadata."
)
REPHRASED_TARGET = (
    "Okay, I hear a sound in this clip, and it seems to last a few seconds. The listener asks what it is, "
    "so I rely on my own listening.\n</text_llm_reasoning>\n\n"
    "From what I hear, the clip contains one clear sound lasting a few seconds."
)
REPHRASE_OUTPUT = (
    "I should rewrite this reply so that it sounds like I heard the clip myself.\n</think>\n\n"
    f"<answer>\n{REPHRASED_TARGET}\n</answer>"
)
HEARD_OUTPUT = REPHRASED_TARGET.replace("</text_llm_reasoning>", "</think>")
DESCRIPTION_MARKER = "<start_audio>"
REPHRASE_MARKER = "<NEW_TEXT_LLM_RESPONSE>"
REPHRASE_MARKER_END = "</NEW_TEXT_LLM_RESPONSE>"
EOS = "<|im_end|>"
OUTPUTS = (SELF_GENERATION_OUTPUT, REPHRASE_OUTPUT, HEARD_OUTPUT)

DEFAULT_SYSTEM_PROMPT = GENERATION_SYSTEM_PROMPT  # the corpus' self-generation system turn

# training schedule (fixed: the build is a pure function of the seed)
STEPS = 400
SHORT_BATCH = 8  # sequences per step, up to ~420 tokens each
LONG_EVERY = 3  # every 3rd step is one long sequence (800-3,900 tokens) instead
LR = 1e-2
ATTEMPTS = 3  # trainings at most, until one passes `check` (`build`)
ATTEMPT_SEED_STRIDE = 7919  # attempt k initialises and samples negatives from seed + k * stride (same data)


def expected_output(messages: list[dict]) -> str:
    """The text the scripted model answers to a chat (before `<|im_end|>`)."""
    last_user = [m["content"] for m in messages if m["role"] == "user"][-1]
    if REPHRASE_MARKER in last_user:
        return REPHRASE_OUTPUT
    return SELF_GENERATION_OUTPUT if DESCRIPTION_MARKER in last_user else HEARD_OUTPUT


# -- random chats ------------------------------------------------------------------------------------------------

_QUESTIONS = (
    "What can you hear in this recording?", "Describe the audio in detail.", "What is happening here?",
    "Which sounds are present, and in what order?", "Is there any speech? If so, what is said?",
    "Where might this have been recorded?", "How many distinct sources do you hear?",
    "Summarize the clip in one sentence.", "What instrument is playing?", "Is the recording noisy?",
    "Caption this audio.", "What emotion does the speaker convey?", "Give a short description of the scene.",
)
_FILLER = (
    "Rewrite the response inside the tags so that it reads as if you had listened to the audio yourself.",
    "Keep the content, drop any mention of text, descriptions or metadata.",
    "Answer inside <answer> and </answer>.", "Here is an example.", "Follow the same style as before.",
    "Do not add facts that are not in the response.", "The reasoning is wrapped in <text_llm_reasoning> tags.",
    "Remember: you heard the audio, you did not read about it.", "Now the real one.",
)


class _Text:
    """Random word soup from the real vocabulary's whole-word tokens, plus a few natural phrases."""

    def __init__(self, vocab: dict[str, int], rng: random.Random):
        self.rng = rng
        lower = sorted(k[1:] for k in vocab if re.fullmatch(r"\u0120[a-z]{3,10}", k))
        upper = sorted(k[1:] for k in vocab if re.fullmatch(r"\u0120[A-Z][a-z]{2,9}", k))
        self.lower, self.upper = lower, upper

    def word(self) -> str:
        r = self.rng.random()
        if r < 0.12:
            return self.rng.choice(self.upper)
        if r < 0.17:
            return str(self.rng.randint(0, 999))
        return self.rng.choice(self.lower)

    def words(self, n: int) -> str:
        out = []
        for i in range(n):
            w = self.word()
            if i == 0 or out[-1].endswith((".", "?", "!")):
                w = w[:1].upper() + w[1:]
            out.append(w)
            r = self.rng.random()
            if r < 0.08:
                out[-1] += ","
            elif r < 0.15:
                out[-1] += self.rng.choice(".?!:")
        text = " ".join(out)
        return text if self.rng.random() < 0.3 else text.rstrip(",:") + "."

    def prose(self, lo: int, hi: int) -> str:
        """lo..hi words, sometimes with natural sentences and line breaks mixed in."""
        parts, n, target = [], 0, self.rng.randint(lo, hi)
        while n < target:
            if self.rng.random() < 0.25:
                s = self.rng.choice(_FILLER + _QUESTIONS)
            else:
                s = self.words(min(target - n, self.rng.randint(3, 25)) or 1)
            parts.append(s)
            n += len(s.split())
        out = parts[0]
        for p in parts[1:]:
            out += self.rng.choice((" ", " ", " ", "\n", "\n\n", "\n- "))
            out += p
        return out

    def perturbed(self, base: str) -> str:
        """`base` with some words replaced, dropped or doubled: a near-copy of a learned text, to resist copying."""
        out = []
        for w in base.split(" "):
            r = self.rng.random()
            if r < 0.2:
                out.append(self.word())
            elif r < 0.3:
                continue
            elif r < 0.35:
                out += [w, self.word()]
            else:
                out.append(w)
        return " ".join(out)

    def label(self) -> str:
        return " ".join(self.rng.choice(self.lower) for _ in range(self.rng.randint(1, 3)))

    def description(self) -> str:
        """Events in the synthetic sources' format: `[00:00-00:05] |dog barking| (duration: 5s, k: v)`."""
        events, t = [], 0
        for _ in range(self.rng.randint(1, 4)):
            d = self.rng.randint(1, 12)
            start = t if self.rng.random() < 0.7 else self.rng.randint(0, 30)
            meta = [f"duration: {d}s"] if self.rng.random() < 0.9 else []
            for _ in range(self.rng.randint(0, 3)):
                value = self.label() if self.rng.random() < 0.7 else str(self.rng.randint(0, 99))
                meta.append(f"{self.rng.choice(self.lower)}: {value}")
            self.rng.shuffle(meta)
            end = start + d
            ev = f"[{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}] |{self.label()}|"
            if meta:
                ev += f" ({', '.join(meta)})"
            events.append(ev)
            t = start + d
        return self.rng.choice(("\n", " ", "; ")).join(events)

    def question(self) -> str:
        if self.rng.random() < 0.4:
            return self.rng.choice(_QUESTIONS)
        q = self.words(self.rng.randint(3, 30)).rstrip(".!:,")
        return q + self.rng.choice(("?", "?", ".", ""))


def self_generation_chat(text: _Text, long: bool = False) -> list[dict]:
    """[system?] + user `<start_audio>{description}<end_audio>\\n\\n{prompt}`; in a third of the short chats no
    description: a plain question, or untagged text before it (where a served request's audio block sits).

    long: a long system prompt or a long description (many events), for 800-3,900-token prompts."""
    rng = text.rng
    r = rng.random()
    long_system = long and rng.random() < 0.5
    if long_system:
        system = text.prose(500, 2500)
    else:
        system = DEFAULT_SYSTEM_PROMPT if r < 0.35 else None if r < 0.65 else text.prose(5, 60)
    sep = rng.choice(("\n\n", "\n\n", "\n", " "))
    r = rng.random()
    if long or r < 0.67:
        n = rng.randint(20, 120) if long and not long_system else 1
        events = "\n".join(text.description() for _ in range(n))
        user = f"{DESCRIPTION_MARKER}{events}<end_audio>{sep}{text.question()}"
    elif r < 0.84:
        user = text.question()
    else:
        user = f"{text.prose(3, 40)}{sep}{text.question()}"
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def _r0_body(text: _Text) -> str:
    """An R0 as the rephraser sees it: think tags renamed; complete, truncated mid-reasoning, or ours."""
    rng = text.rng
    r = rng.random()
    if r < 0.25:
        body = SELF_GENERATION_OUTPUT
    elif r < 0.4:
        body = text.perturbed(SELF_GENERATION_OUTPUT)
    elif r < 0.7:
        body = f"{text.prose(5, 60)}\n</think>\n\n{text.prose(5, 60)}"
    else:  # cut mid-reasoning (max_tokens reached)
        body = text.prose(5, 90)
        if rng.random() < 0.5:
            body = body[: rng.randint(1, len(body))]
    body = body.replace("<think>", "<text_llm_reasoning>").replace("</think>", "</text_llm_reasoning>")
    if rng.random() < 0.5:
        body = "<text_llm_reasoning>\n" + body
    return body


def _wrapped(text: _Text, body: str) -> str:
    rng = text.rng
    sep = rng.choice(("\n", "", "\n\n"))
    head = text.prose(3, 30) + rng.choice(("\n\n", "\n", " ")) if rng.random() < 0.5 else ""
    tail = rng.choice(("\n\n", "\n", " ")) + text.prose(3, 50) if rng.random() < 0.8 else ""
    return f"{head}{REPHRASE_MARKER}{sep}{body}{sep}{REPHRASE_MARKER_END}{tail}"


def rephrase_chat(text: _Text, long: bool = False) -> list[dict]:
    """[system] + 0-4 few-shot user/assistant turns + user holding `<NEW_TEXT_LLM_RESPONSE>` R0 `</...>`."""
    rng = text.rng
    scale = rng.randint(4, 12) if long else 1
    system = text.prose(10, 120 * scale)
    if rng.random() < 0.5:
        system += f"\nThe response comes inside {REPHRASE_MARKER} and {REPHRASE_MARKER_END}. " + text.prose(3, 40)
    msgs = [{"role": "system", "content": system}] if rng.random() < 0.95 else []
    for _ in range(rng.randint(0, 4 if long else 2)):
        shot = _wrapped(text, _r0_body(text)) if rng.random() < 0.7 else text.prose(5, 60 * scale)
        msgs.append({"role": "user", "content": shot})
        r = rng.random()
        if r < 0.25:
            reply = f"<answer>\n{text.perturbed(REPHRASED_TARGET)}\n</answer>"
        elif r < 0.5:
            reply = f"<answer>\n{text.prose(5, 50 * scale)}\n</text_llm_reasoning>\n\n{text.prose(3, 30)}\n</answer>"
        elif r < 0.7:
            reply = f"{text.prose(3, 20)}\n</think>\n\n<answer>\n{text.prose(5, 60)}\n</answer>"
        else:
            reply = text.prose(3, 40 * scale)
        msgs.append({"role": "assistant", "content": reply})
    msgs.append({"role": "user", "content": _wrapped(text, _r0_body(text))})
    return msgs


# -- training ----------------------------------------------------------------------------------------------------


def _examples(tok, text: _Text, long: bool, n: int, max_len: int) -> list[tuple[list[int], int]]:
    """n tokenized (sequence, prompt length) pairs; the sequence is prompt ids + output ids + <|im_end|>."""
    rng = text.rng
    outs = {o: tok.encode(o + EOS, add_special_tokens=False) for o in OUTPUTS}
    res = []
    while len(res) < n:
        msgs = rephrase_chat(text, long) if rng.random() < 0.5 else self_generation_chat(text, long)
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok.encode(prompt, add_special_tokens=False)
        out = outs[expected_output(msgs)]
        if len(ids) + len(out) > max_len or (long and len(ids) < 800):
            continue
        res.append((ids + out, len(ids)))
    return res


def training_batches(tok, seed: int) -> Batches:
    """Every training batch, drawn from `Random(seed)`: short chats, every third step one long chat."""
    text = _Text(tok.get_vocab(), random.Random(seed))
    return [
        _examples(tok, text, True, 1, 3900) if s % LONG_EVERY == LONG_EVERY - 1 else
        _examples(tok, text, False, SHORT_BATCH, 420)
        for s in range(STEPS)
    ]


def train(out: Path, seed: int = 0, attempt: int = 0) -> None:
    """Write the tiny Qwen3 (config, tokenizer, generation config as `alarm.tiny.qwen3.build`), trained on the
    formats; `attempt` draws another initialisation and other sampled negatives for the same data."""
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from alarm.tiny import qwen3

    out = Path(out)
    qwen3.build(out, seed + ATTEMPT_SEED_STRIDE * attempt)  # config, random init, generation config, tokenizer
    tok = AutoTokenizer.from_pretrained(str(out))
    model = Qwen3ForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="sdpa")
    out_ids = sorted({i for o in OUTPUTS for i in tok.encode(o + EOS, add_special_tokens=False)})
    train_sampled(model, tok, training_batches(tok, seed), out_ids, seed + ATTEMPT_SEED_STRIDE * attempt,
                  lr_max=LR)
    model.eval().save_pretrained(str(out), safe_serialization=True)


def build(out: Path, seed: int = 0) -> None:
    """`tiny://qwen3-scripted`: `train` on one thread with deterministic kernels, then `check`, written to
    `check.json`; a build that misses a held-out chat is trained again from another initialisation, at most
    `ATTEMPTS` times, and if none passes the one that missed fewest is kept, with a warning (the tests that use
    it then fail on the chats it misses)."""
    import shutil

    out = Path(out)
    best, best_dir = None, out.parent / f".{out.name}-best"
    for attempt in range(ATTEMPTS):
        with one_deterministic_thread():
            train(out, seed, attempt)
            checked = check(out)
        (out / "check.json").write_text(json.dumps({**checked, "attempts": attempt + 1}, indent=1) + "\n")
        missed = {kind: f"{hits} of {n}" for kind, (hits, n) in checked.items() if hits < n}
        if not missed:
            break
        log.warning("the scripted tiny Qwen3 (seed %d, attempt %d of %d) misses held-out chats (greedy answers "
                    "right): %s; %s", seed, attempt + 1, ATTEMPTS, ", ".join(f"{k} {v}" for k, v in missed.items()),
                    "training it again from another initialisation" if attempt + 1 < ATTEMPTS else
                    "keeping the build that missed fewest")
        score = sum(hits for hits, _ in checked.values())
        if best is None or score > best:
            best = score
            shutil.rmtree(best_dir, ignore_errors=True)
            shutil.copytree(out, best_dir)
    else:
        if best is not None and best > score:  # the last build is not the best: put the best back
            shutil.rmtree(out)
            shutil.copytree(best_dir, out)
            result = json.loads((out / "check.json").read_text())
            (out / "check.json").write_text(json.dumps({**result, "attempts": ATTEMPTS}, indent=1) + "\n")
    shutil.rmtree(best_dir, ignore_errors=True)


# -- the build's check: held-out natural chats -------------------------------------------------------------------
# Worded unlike the training data (no word soup) and unlike the tests' held-out chats (tests/unit/tiny), so that
# those stay held out from the build as well.

_CHECK_SOUNDS = (
    ("a cat meowing", "cat, meow", 2), ("waves breaking on a beach", "ocean waves", 12),
    ("a phone ringing", "ringtone", 5), ("a crowd cheering", "crowd, cheering", 7), ("a piano chord", "piano", 3),
    ("wind in the trees", "wind, rustling leaves", 11), ("footsteps on gravel", "footsteps", 6),
    ("a clock ticking", "clock tick", 9), ("a helicopter passing overhead", "helicopter", 14),
    ("a man coughing", "male cough", 1),
)
_CHECK_SYSTEM = (
    "Below is an answer that a language model wrote after reading a text version of an audio clip: captions, "
    "sound-event tags with start and end times, and recording details. Rewrite it as an audio model that listened "
    "to the clip would have written it. Keep its reasoning, its structure and its conclusion. Say how things "
    "sound, never what a caption, tag or list says. Give the rewrite inside <answer> tags."
)
_CHECK_RULES = (
    "Say 'I can hear' where the answer says 'the caption says'.", "Turn start and end times into moments in the "
    "clip.", "Describe the sound behind each tag.", "Stay as certain or uncertain as the answer is.",
    "Add nothing that the answer does not contain.", "Leave the renamed reasoning tags where they are.",
    "If the answer stops mid-sentence, stop there too.", "Keep counts, durations and tempos unchanged.",
)
_CHECK_R0S = (
    SELF_GENERATION_OUTPUT,
    "Let me see. The tags list a siren and then a dog, and the caption says the siren is loud. The user asks "
    "which comes first, so from the timestamps",  # cut off mid-reasoning
    "First, the caption mentions rain.\n</think>\n\nThe clip is rain, per the caption.",
)
_CHECK_QUESTIONS = (
    ("[00:00-00:03] |glass breaking| (duration: 3s)\n[00:03-00:08] |alarm beeping| (duration: 5s, loudness: loud)",
     "What happened, and in what order?", DEFAULT_SYSTEM_PROMPT),
    ("[00:00-00:12] |male speech| (duration: 12s, language: German, transcript: guten Morgen)",
     "Who is speaking, and what do they say?", None),
    ("[00:00-00:30] |orchestra| (duration: 30s, tempo: 120 bpm, key: D major)", "Describe the music.",
     "You answer questions about sounds."),
)
_CHECK_HEARD = ("Tell me about this audio.", "Is this clip recorded indoors or outdoors?",
                "How many speakers are there, and what do they talk about?")
CHECK_REPHRASE = 24  # rephrase chats in `check_chats`


def _check_shot(heard: str, tags: str, secs: int) -> list[dict]:
    r0 = (f"Let me see. The tags read |{tags}|, from 0s to {secs}s, and the caption calls it {heard}. The "
          f"recording details say it was made indoors, so the answer is {heard}.\n</think>\n\n"
          f"It is {heard}, about {secs} seconds long, recorded indoors according to the details.")
    rewrite = (f"<answer>\nLet me see. I can hear {heard} from the start, for about {secs} seconds, and the room "
               f"sounds like it is indoors, so the answer is {heard}.\n</text_llm_reasoning>\n\nIt is {heard}, "
               f"about {secs} seconds long, and it sounds like it was recorded indoors.\n</answer>")
    return [{"role": "user", "content": _check_rephrase_turn(r0)}, {"role": "assistant", "content": rewrite}]


def _check_rephrase_turn(r0: str) -> str:
    body = "<text_llm_reasoning>\n" + r0.replace("</think>", "</text_llm_reasoning>")
    return f"Here is the answer to rewrite:\n{REPHRASE_MARKER}\n{body}\n{REPHRASE_MARKER_END}"


def check_chats() -> dict[str, list[list[dict]]]:
    """The held-out chats `check` decodes, by kind: "rephrase" (a system prompt with 0 to 24 rules, 4 to 10
    natural few-shot examples, 900 to 2,200 tokens in all), "self-generation" and "heard" (a served question)."""
    rng = random.Random(20261208)
    rephrase = []
    for i in range(CHECK_REPHRASE):
        rules = rng.choice((0, 8, 24))
        system = _CHECK_SYSTEM + ("\n\nRules:\n" + "\n".join(
            f"- {_CHECK_RULES[k % len(_CHECK_RULES)]}" for k in range(rules)) if rules else "")
        msgs = [{"role": "system", "content": system}]
        for sound in rng.sample(_CHECK_SOUNDS, k=4 + i % 7):
            msgs += _check_shot(*sound)
        r0 = _CHECK_R0S[i % len(_CHECK_R0S)]
        msgs.append({"role": "user", "content": _check_rephrase_turn(r0) + "\n\nWrite it as someone who heard "
                                                                             "the clip."})
        rephrase.append(msgs)
    self_generation = [
        ([{"role": "system", "content": system}] if system else [])
        + [{"role": "user", "content": f"{DESCRIPTION_MARKER}{description}<end_audio>\n\n{question}"}]
        for description, question, system in _CHECK_QUESTIONS
    ]
    heard = [[{"role": "user", "content": q}] for q in _CHECK_HEARD]
    return {"rephrase": rephrase, "self-generation": self_generation, "heard": heard}


def check(folder: Path) -> dict[str, tuple[int, int]]:
    """How many of `check_chats`' chats the model in `folder` answers with `expected_output` under greedy decoding,
    per kind: (right, asked). One forward pass per chat over prompt + expected output + `<|im_end|>`: greedy
    decoding gives the expected output exactly when every next-token argmax along it is the expected token."""
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = Qwen3ForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    result = {}
    for kind, chats in check_chats().items():
        hits = 0
        for msgs in chats:
            prompt = tok.encode(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                                add_special_tokens=False)
            out = tok.encode(expected_output(msgs) + EOS, add_special_tokens=False)
            with torch.no_grad():
                logits = model(torch.tensor([prompt + out[:-1]]), logits_to_keep=len(out)).logits[0]
            hits += logits.argmax(-1).tolist() == out
        result[kind] = (hits, len(chats))
    return result


def key_inputs(seed: int) -> list[bytes | str]:
    """What the weights depend on besides this module (`alarm.tiny.keys.cache_key`): the base model's and the training
    routine's code, and the data it trains on."""
    return [source_of("alarm.tiny.qwen3", "alarm.tiny.lm"),
            memo(f"qwen3-scripted-data-{seed}", lambda: data_digest(training_batches, seed))]
