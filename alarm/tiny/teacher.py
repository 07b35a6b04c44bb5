"""The toy world's teacher: a tiny Qwen3 reasoning LM trained here, on text only, to do what ALARM needs of its
frozen LLM (`tiny://qwen3-teacher`; `build_teacher(out, seed)` for another world seed).

- Self-generation: given a clip's text description and a multiple-choice question (MMAU's native format: answer
  with the option's text), it reasons from the description, citing the attribute the question needs, and answers
  with the option it named: `The description gives 880 Hz, which is high. So the answer is high.` `</think>`
  `high` (`alarm.toy.phrases`: three wordings per question type, chosen by the question's wording).
- Self-rephrasing: given the corpus pipeline's real rephrase prompt around such an R0, it returns the same
  response as heard (`I hear a high, steady tone, around 880 Hz. So the answer is high.`) inside the tags
  `parse_rephrase` reads.
- Reasoning as heard, now and then: 2 of every 8 question chats reason in the heard wording (`I hear`, the
  opening `target(item)` has), the loss on all of it (`encode_heard`). A real reasoning LLM has read first-person
  accounts of sounds and gives such an opening some probability, though it is not what it writes about a text
  description. So does the teacher: greedy decoding still cites the description (R0: the cited openings all start
  with "The", 6 of 8 chats), while a student has only to tip a likely opening to the top, not raise one the
  teacher never writes first. When the heard openings were only ever written for it (the loss on what followed),
  the R-trained student opened its reasoning as heard in 147 of 256 held-out answers (toy world seed 0); the
  rest cited a text (61), or opened with the rephrase chats' own reasoning (18) and lost the question. With this
  teacher (first word on held-out questions: "The" 75%, "I" 19%, "What" 6%; greedy cites in all 512): 240 of 256,
  and the student's accuracy rose from 63.3% to 82.8%.

It never sees audio. The student (the audio adapter) is trained later to make this frozen teacher answer from
audio embeddings. Every training question is drawn fresh (a question type uniformly, then a clip of the teacher's
own synthetic source, options, their order, wording and form, system turn), so nothing repeats often enough to be
memorised; deterministic by seed. `build_teacher(out)` writes a Qwen3 checkpoint folder that vLLM and
transformers load (the tiny Qwen3's vocabulary and chat template, D 128, 4 layers). Its cache key
(`key_inputs`) covers its code, its architecture and a digest of the token streams it trains on, not the source of
the modules that produce them: a docstring edit there does not rebuild it, a change of the data does.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from alarm.config import DEFAULT_SYSTEM_PROMPT, GENERATION_SYSTEM_PROMPT
from alarm.corpus.rephrase import END_REASONING, REASONING, parse_rephrase, rephrase_messages
from alarm.llm.thinking import split_reasoning
from alarm.tiny.keys import data_digest, memo, source_of
from alarm.tiny.lm import Batches, one_deterministic_thread, train_sampled
from alarm.tiny.qwen3 import TINY_QWEN3
from alarm.toy.phrases import HELD, reasoning
from alarm.toy.world import QTYPES, ToyItem, ask, clip

log = logging.getLogger(__name__)

GENERATE_SYSTEM = GENERATION_SYSTEM_PROMPT  # the corpus' self-generation system turn
SYSTEMS = (None, GENERATE_SYSTEM, DEFAULT_SYSTEM_PROMPT)  # none, generation's, serving's
EOS = "<|im_end|>"
# D 128 x 4 layers: the tiny Qwen3's vocabulary, chat template and rope; wider and deeper than the scripted model
TEACHER_ARCH = {**TINY_QWEN3, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2}
# 1,125 question steps and 375 rephrase steps (were 800 and 400): the question loss ends at 0.0002-0.0007 on world
# seeds 0 and 2, whose teachers answer all 512 held-out questions right; on seed 1 it ends at 0.009, and that
# teacher misreads the loudness of half its held-out clips (with lr 5e-3: 0.0002, all right)
STEPS = 1500
BATCH = 8  # question chats per step (~150-250 tokens each)
HEARD = 2  # of which this many reason in the heard wording (`encode_heard`)
LONG_EVERY = 4  # every 4th step: rephrase chats instead (~2,200 tokens, ~2,080 of them the same prompt prefix)
REPHRASE = 6  # rephrase chats per such step (the shared prefix runs once: `train_sampled(share_prefix=True)`)
LR = 3e-3
N_CLIPS = 400
# A choice question of a type that also has yes/no wordings is drawn again this often: ~62% of them are yes/no
# (the world asks half), as the yes/no conclusion is the longer thing to learn.
YES_NO_REDRAW = 0.5
YES_NO_TYPES = tuple(HELD)  # the types with yes/no wordings
# The rephrase chats' reasoning. Not "I ...": every heard opening starts with "I", and a student whose audio tipped
# the teacher into this sentence after an "I" then rewrote nothing (toy world seed 0: 5 of 256 held-out replies).
REPHRASE_THOUGHT = "Rewording it as listening."
CHECK_PER_TYPE = 16  # held-out questions per type the built teacher answers (`check_reading`; the toy: all right)
CHECK_SEED = 104729
ATTEMPT_SEED_STRIDE = 7919
ATTEMPTS = 3  # builds at most, until one reads every type (`build`)


def source_seed(seed: int) -> int:
    """The teacher's own synthetic source for world `seed` (the world's clips come from other sources)."""
    return 10 * seed + 3


def r0_output(item: ToyItem) -> str:
    """What the teacher answers to the description-based question (after `<think>\\n`)."""
    return f"{reasoning(item)[0]}\n</think>\n\n{item.answer}"


def rephrase_output(item: ToyItem) -> str:
    """What the teacher answers to the rephrase prompt around `r0_output(item)` (after `<think>\\n`)."""
    return (f"{REPHRASE_THOUGHT}\n</think>\n\n<answer>\n{REASONING}\n{reasoning(item)[1]}\n"
            f"{END_REASONING}\n\n{item.answer}\n</answer>")


def target(item: ToyItem) -> str:
    """The training target the corpus pipeline derives from the rephrased output (what the student learns)."""
    return f"{reasoning(item)[1]}\n</think>\n\n{item.answer}"


def self_generation_chat(item: ToyItem, system: str | None) -> list[dict]:
    """The corpus' self-generation chat (`alarm.corpus.rows.generation_messages`) for a toy item."""
    user = f"<start_audio>{item.description}<end_audio>\n\n{item.prompt}"
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def encode_chat(tok, msgs: list[dict], reply: str) -> tuple[list[int], int]:
    """(prompt + reply + EOS token ids, prompt length) for one chat, rendered by the chat template."""
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok.encode(prompt, add_special_tokens=False)
    return ids + tok.encode(reply + EOS, add_special_tokens=False), len(ids)


def encode_heard(tok, msgs: list[dict], item: ToyItem) -> tuple[list[int], int]:
    """A chat whose reasoning is heard (`target(item)`: `I hear ...`, the attribute from the description, `</think>`
    and the option the reasoning named), the loss on all of it. In a quarter of its question chats the teacher
    learns this wording as its own, so a student need only tip an opening the teacher already gives some
    probability, and the teacher carries on from it as from any of its openings."""
    return encode_chat(tok, msgs, target(item))


class Draw:
    """Fresh questions about the teacher's clips: a type uniformly, then a clip that supports it, then the
    question itself (wording, form, options and their order) from this draw's generator; a choice question of a
    `YES_NO_TYPES` type is drawn again with probability `YES_NO_REDRAW`."""

    def __init__(self, clips: list, seed: int):
        self.rng = random.Random(seed)
        self.by_type = {q: [c for c in clips if ask(c, q, random.Random(0)) is not None] for q in QTYPES}

    def __call__(self) -> ToyItem:
        qtype = self.rng.choice(QTYPES)
        c = self.rng.choice(self.by_type[qtype])
        item = ask(c, qtype, self.rng)
        if not item.yes_no and qtype in YES_NO_TYPES and self.rng.random() < YES_NO_REDRAW:
            item = ask(c, qtype, self.rng)
        return item


def plan_batches(tok, draw: Draw, steps: int) -> Batches:
    """Every training batch; each chat drawn fresh (see `Draw`)."""
    rng = draw.rng
    batches = []
    for s in range(steps):
        if s % LONG_EVERY == LONG_EVERY - 1:
            drawn = [draw() for _ in range(REPHRASE)]
            batches.append([encode_chat(tok, rephrase_messages(r0_output(it))[0], rephrase_output(it))
                            for it in drawn])
        else:
            drawn = [draw() for _ in range(BATCH)]
            batches.append([encode_chat(tok, self_generation_chat(it, rng.choice(SYSTEMS)), r0_output(it))
                            for it in drawn[:-HEARD]])
            batches[-1] += [encode_heard(tok, self_generation_chat(it, rng.choice(SYSTEMS)), it)
                            for it in drawn[-HEARD:]]
    return batches


def training_batches(tok, seed: int, steps: int = STEPS) -> Batches:
    """What the teacher trains on: `steps` batches of questions about `N_CLIPS` clips of its own synthetic source."""
    clips = [clip(source_seed(seed), i) for i in range(N_CLIPS)]
    return plan_batches(tok, Draw(clips, seed), steps)


def build_teacher(out: Path, seed: int = 0, steps: int = STEPS, lr: float = LR, attempt: int = 0) -> list[float]:
    """Write the trained teacher to `out` (a tiny Qwen3 folder); returns the training losses. `attempt` draws
    another initialisation and other sampled negatives for the same data (`build` retries with it)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from alarm.model.qwen_tokenizer import save_qwen3_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + ATTEMPT_SEED_STRIDE * attempt)
    Qwen3ForCausalLM(Qwen3Config(**TEACHER_ARCH)).save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643, do_sample=True,
                     temperature=0.6, top_p=0.95, top_k=20).save_pretrained(str(out))
    save_qwen3_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    model = Qwen3ForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="sdpa")
    batches = training_batches(tok, seed, steps)
    out_ids = sorted({i for batch in batches for seq, p in batch for i in seq[p:]})
    # shared_rest: the ~151,350 tokens the teacher never reads or writes end with one row (the mean of theirs), so
    # its students' loss through its head costs 590 rows, not 151,936 (the head was 64% of a toy training step)
    losses = train_sampled(model, tok, batches, out_ids, seed + ATTEMPT_SEED_STRIDE * attempt, lr_max=lr,
                           share_prefix=True, shared_rest=True)
    model.eval().save_pretrained(str(out), safe_serialization=True)
    return losses


def check_questions(seed: int, per_type: int = CHECK_PER_TYPE) -> dict[str, list[ToyItem]]:
    """`per_type` questions of every type about clips of the teacher's source it never trains on (from index
    `N_CLIPS` on), drawn with a generator of their own."""
    rng = random.Random(CHECK_SEED)
    items: dict[str, list[ToyItem]] = {q: [] for q in QTYPES}
    index = N_CLIPS
    while min(len(v) for v in items.values()) < per_type:
        c = clip(source_seed(seed), index)
        index += 1
        for q in QTYPES:
            if len(items[q]) < per_type and (item := ask(c, q, rng)) is not None:
                items[q].append(item)
    return items


def _load(folder: Path):
    """(tokenizer padding on the left, the model in eval mode, the stop token ids) of the teacher in `folder`."""
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.padding_side = "left"
    model = Qwen3ForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="sdpa").eval()
    return tok, model, [tok.convert_tokens_to_ids(t) for t in (EOS, "<|endoftext|>")]


def _greedy(tok, model, stop: list[int], chats: list[list[dict]], max_new_tokens: int) -> list[str]:
    """The teacher's greedy replies to `chats`, 16 at a time."""
    import torch

    texts = []
    for i in range(0, len(chats), 16):
        prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats[i: i + 16]]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                 pad_token_id=stop[-1])
        texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def check_reading(folder: Path, seed: int, per_type: int = CHECK_PER_TYPE) -> dict[str, float]:
    """The share of `check_questions` of each type the teacher in `folder` answers right from the description
    (greedy, the corpus' self-generation chat, the option's text after `</think>`)."""
    tok, model, stop = _load(folder)
    shares = {}
    for qtype, items in check_questions(seed, per_type).items():
        texts = _greedy(tok, model, stop, [self_generation_chat(it, GENERATE_SYSTEM) for it in items], 128)
        right = sum(split_reasoning(t)[1].strip() == it.answer for t, it in zip(texts, items, strict=True))
        shares[qtype] = right / len(items)
    return shares


def check_rephrasing(folder: Path, seed: int, per_type: int = CHECK_PER_TYPE) -> dict[str, float]:
    """The share of `check_questions` of each type whose right reasoning from the description (`r0_output`) the
    teacher in `folder` rephrases as heard and keeps the answer of (greedy, the corpus' real rephrase prompt and
    parser). A rephrase that changes the answer is flagged and dropped by the corpus (`answer_changed`): a type
    the teacher rephrases wrong loses rows of one answer, and its students learn the other."""
    tok, model, stop = _load(folder)
    asked = check_questions(seed, per_type)
    items = [it for v in asked.values() for it in v]
    chats = [rephrase_messages(r0_output(it)) for it in items]
    texts = _greedy(tok, model, stop, [m for m, _ in chats], 160)
    kept: dict[str, int] = {q: 0 for q in asked}
    for text, (_, complete), it in zip(texts, chats, items, strict=True):
        r = parse_rephrase(text, complete)
        kept[it.qtype] += r.answer is not None and split_reasoning(r.answer)[1].strip() == it.answer
    return {q: kept[q] / len(v) for q, v in asked.items()}


def build(out: Path, seed: int = 0) -> None:
    """`tiny://qwen3-teacher`: `build_teacher` on one thread with deterministic kernels (same seed, same bytes),
    then `check_reading` and `check_rephrasing`, written to `reading.json`; `python -m alarm.toy` reports the
    reading as a target.

    A type the teacher misreads cannot be learnt by its students, and one whose rephrase changes answers loses its
    rows of one answer from the rephrased corpus (world seed 0: a build that rephrased 5 of 16 held-out duration
    answers wrong turned 83 of 150 duration rows from long to short; the corpus dropped them and the student
    answered "short" to 27 of 32 duration questions). Whether a build learns every type is a matter of float
    noise: on one machine the teachers of world seeds 0 and 2 read all of them and seed 1's read loudness at
    chance; on another, seed 0's read loudness on 9 of 16. So a teacher that misreads or misrephrases a type is
    trained again from another initialisation (`attempt`), at most `ATTEMPTS` times (about 10 minutes each); if
    none passes, the best one (most types passed, then the highest mean share) is kept, with a warning."""
    import shutil

    out = Path(out)
    best, best_dir = None, out.parent / f".{out.name}-best"
    for attempt in range(ATTEMPTS):
        with one_deterministic_thread():
            build_teacher(out, seed, attempt=attempt)
            shares = check_reading(out, seed, CHECK_PER_TYPE)
            rephrased = check_rephrasing(out, seed, CHECK_PER_TYPE)
        result = {"per_type": shares, "rephrase_per_type": rephrased, "questions_per_type": CHECK_PER_TYPE,
                  "attempts": attempt + 1}
        (out / "reading.json").write_text(json.dumps(result, indent=1) + "\n")
        passed = [min(shares[q], rephrased[q]) for q in QTYPES]
        score = (sum(v == 1.0 for v in passed), sum(passed))
        missed = {q: (shares[q], rephrased[q]) for q in QTYPES if min(shares[q], rephrased[q]) < 1.0}
        if not missed:
            break
        log.warning("the toy teacher of world seed %d (attempt %d of %d) misreads or misrephrases its own held-out "
                    "questions (read, rephrased right of %d each): %s; %s", seed, attempt + 1, ATTEMPTS,
                    CHECK_PER_TYPE, ", ".join(f"{q} {a:.0%}, {b:.0%}" for q, (a, b) in missed.items()),
                    "training it again from another initialisation" if attempt + 1 < ATTEMPTS else
                    "keeping the best build: its students cannot learn those types")
        if best is None or score > best:
            best = score
            shutil.rmtree(best_dir, ignore_errors=True)
            shutil.copytree(out, best_dir)
    else:
        if best is not None and best > score:  # the last build is not the best: put the best back
            shutil.rmtree(out)
            shutil.copytree(best_dir, out)
            result = json.loads((out / "reading.json").read_text())
            (out / "reading.json").write_text(json.dumps({**result, "attempts": ATTEMPTS}, indent=1) + "\n")
    shutil.rmtree(best_dir, ignore_errors=True)


def reading(folder: Path) -> dict[str, float] | None:
    """What `build` measured of the teacher in `folder` (share right per question type), None if not ours."""
    path = Path(folder) / "reading.json"
    return json.loads(path.read_text())["per_type"] if path.is_file() else None


def key_inputs(seed: int) -> list[bytes | str]:
    """What the weights depend on besides this module (`alarm.tiny.keys.cache_key`): the training routine's code, the
    architecture, and a digest of the tokenizer and token streams it trains on (remembered per library source,
    so that an edit anywhere costs one recomputation of ~10 s, and rebuilds only if the data changed)."""
    return [source_of("alarm.tiny.lm"), json.dumps(TEACHER_ARCH, sort_keys=True),
            memo(f"qwen3-teacher-data-{seed}", lambda: data_digest(training_batches, seed))]
