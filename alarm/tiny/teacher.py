"""The toy world's teacher: a tiny Qwen3 reasoning LM trained here, on text only, to do what ALARM needs of its
frozen LLM (`tiny://qwen3-teacher`).

- Self-generation: given a clip's text description and a multiple-choice question (MMAU's native format: answer
  with the option's text), it reasons from the description, as text LLMs do, and answers:
  `The description says it is {name}.` `</think>` `{name}`.
- Self-rephrasing: given the corpus pipeline's real rephrase prompt around such an R0, it returns the same
  response as heard: `I hear that it is {name}.` `</think>` `{name}` (inside the tags `parse_rephrase` reads).
- Following its own reasoning: in 2 of every 8 question chats the heard reasoning is already written and the loss
  covers only what follows it (`encode_follow`), so that after any wording it closes `</think>` and answers the
  name it reasoned to, as a real reasoning LLM does; it never learns to start in the heard wording itself.

It never sees audio. The student (the audio adapter) is trained later to make this frozen teacher answer from
audio embeddings. Why the option's text and not its number: with shuffled options, naming the option number means
finding the described name among the options in context, a lookup a model this small learns only after far more
steps than a CPU build allows (measured: 35-63% after 800-1,600 steps); answering with the text needs only the
description -> name mapping, which it learns fully in a few hundred. The heard reasoning keeps R0's "it is
{name}" so that rephrasing is a copy (an induction pattern), learned in the same few hundred steps.

Every training question is drawn fresh (clip description, option set and order, wording, system turn), so nothing
repeats often enough to be memorised; deterministic by seed; `build_teacher(out)` writes a Qwen3 checkpoint folder
that vLLM and transformers load (the tiny Qwen3's vocabulary and chat template, D 128, 4 layers). Its cache key
(`key_inputs`) covers its code, its architecture and a digest of the token streams it trains on, not the source of
the modules that produce them: a docstring edit there does not rebuild it, a change of the data does.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from alarm.config import DEFAULT_SYSTEM_PROMPT, GENERATION_SYSTEM_PROMPT
from alarm.corpus.rephrase import END_REASONING, REASONING, rephrase_messages
from alarm.tiny.keys import data_digest, memo, source_of
from alarm.tiny.lm import Batches, one_deterministic_thread, train_sampled
from alarm.tiny.qwen3 import TINY_QWEN3
from alarm.toy.world import NAMES, QUESTIONS, ToyItem, toy_item

GENERATE_SYSTEM = GENERATION_SYSTEM_PROMPT  # the corpus' self-generation system turn
SYSTEMS = (None, GENERATE_SYSTEM, DEFAULT_SYSTEM_PROMPT)  # none, generation's, serving's
EOS = "<|im_end|>"
# D 128 x 4 layers: the tiny Qwen3's vocabulary, chat template and rope; wider and deeper than the scripted model
TEACHER_ARCH = {**TINY_QWEN3, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2}
STEPS = 450
BATCH = 8  # question chats per step (~150-250 tokens each)
FOLLOW = 2  # of which this many have the heard reasoning written already (`encode_follow`)
LONG_EVERY = 3  # every 3rd step: 2 rephrase chats (~2,100 tokens each) instead
LR = 3e-3
N_DESCRIPTIONS = 400
SOURCE_SEED = 10_000  # the teacher's descriptions come from their own synthetic source, not the toy data


def r0_output(item: ToyItem) -> str:
    """What the teacher answers to the description-based question (after `<think>\\n`)."""
    name = item.choices[item.gold]
    return f"The description says it is {name}.\n</think>\n\n{name}"


def heard_reasoning(item: ToyItem) -> str:
    return f"I hear that it is {item.choices[item.gold]}."


def rephrase_output(item: ToyItem) -> str:
    """What the teacher answers to the rephrase prompt around `r0_output(item)` (after `<think>\\n`)."""
    return (f"I change the wording to listening.\n</think>\n\n<answer>\n{REASONING}\n{heard_reasoning(item)}\n"
            f"{END_REASONING}\n\n{item.choices[item.gold]}\n</answer>")


def target(item: ToyItem) -> str:
    """The training target the corpus pipeline derives from the rephrased output (what the student learns)."""
    return f"{heard_reasoning(item)}\n</think>\n\n{item.choices[item.gold]}"


def self_generation_chat(item: ToyItem, system: str | None) -> list[dict]:
    """The corpus' self-generation chat (`alarm.corpus.rows.generation_messages`) for a toy item."""
    user = f"<start_audio>{item.description}<end_audio>\n\n{item.prompt}"
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def encode_chat(tok, msgs: list[dict], reply: str) -> tuple[list[int], int]:
    """(prompt + reply + EOS token ids, prompt length) for one chat, rendered by the chat template."""
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok.encode(prompt, add_special_tokens=False)
    return ids + tok.encode(reply + EOS, add_special_tokens=False), len(ids)


def reshuffled(item: ToyItem, rng: random.Random) -> ToyItem:
    """The same clip with a fresh set and order of options and a fresh wording of the question."""
    gold = item.choices[item.gold]
    order = [gold, *rng.sample([n for n in NAMES.values() if n != gold], len(item.choices) - 1)]
    rng.shuffle(order)
    return dataclasses.replace(item, question=rng.choice(QUESTIONS), choices=tuple(order), gold=order.index(gold))


def plan_batches(tok, items: list[ToyItem], rng: random.Random, steps: int) -> Batches:
    """Every training batch; each chat drawn fresh from `items` (see `reshuffled`)."""
    batches = []
    for s in range(steps):
        if s % LONG_EVERY == LONG_EVERY - 1:
            drawn = [reshuffled(rng.choice(items), rng) for _ in range(2)]
            batches.append([encode_chat(tok, rephrase_messages(r0_output(it))[0], rephrase_output(it))
                            for it in drawn])
        else:
            drawn = [reshuffled(rng.choice(items), rng) for _ in range(BATCH)]
            batches.append([encode_chat(tok, self_generation_chat(it, rng.choice(SYSTEMS)), r0_output(it))
                            for it in drawn[:-FOLLOW]])
            batches[-1] += [encode_follow(tok, self_generation_chat(it, rng.choice(SYSTEMS)), it)
                            for it in drawn[-FOLLOW:]]
    return batches


def encode_follow(tok, msgs: list[dict], item: ToyItem) -> tuple[list[int], int]:
    """A chat whose reasoning is already written in the heard wording (`target(item)`), the loss on what follows
    it only: `</think>` and the same name as the answer. The teacher never learns to start that way; it learns
    what a reasoning LLM does anyway, answer as its reasoning concluded, whatever the wording."""
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok.encode(prompt + target(item) + EOS, add_special_tokens=False)
    end = len(ids) - 1 - ids[::-1].index(tok.convert_tokens_to_ids("</think>"))
    return ids, end - 1  # from the token before </think> (the reasoning's last, with its newline)


def training_batches(tok, seed: int, steps: int = STEPS) -> Batches:
    """What the teacher trains on: `steps` batches over `N_DESCRIPTIONS` clips of its own synthetic source."""
    items = [toy_item(SOURCE_SEED + seed, i) for i in range(N_DESCRIPTIONS)]
    return plan_batches(tok, items, random.Random(seed), steps)


def build_teacher(out: Path, seed: int = 0, steps: int = STEPS, lr: float = LR) -> list[float]:
    """Write the trained teacher to `out` (a tiny Qwen3 folder); returns the training losses."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from alarm.model.qwen_tokenizer import save_qwen3_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Qwen3ForCausalLM(Qwen3Config(**TEACHER_ARCH)).save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643, do_sample=True,
                     temperature=0.6, top_p=0.95, top_k=20).save_pretrained(str(out))
    save_qwen3_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    model = Qwen3ForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="sdpa")
    batches = training_batches(tok, seed, steps)
    out_ids = sorted({i for batch in batches for seq, p in batch for i in seq[p:]})
    losses = train_sampled(model, tok, batches, out_ids, seed, lr_max=lr)
    model.eval().save_pretrained(str(out), safe_serialization=True)
    return losses


def build(out: Path, seed: int = 0) -> None:
    """`tiny://qwen3-teacher`: `build_teacher` on one thread with deterministic kernels (same seed, same bytes)."""
    with one_deterministic_thread():
        build_teacher(Path(out), seed)


def key_inputs(seed: int) -> list[bytes | str]:
    """What the weights depend on besides this module (`alarm.tiny.keys.cache_key`): the training routine's code, the
    architecture, and a digest of the tokenizer and token streams it trains on (remembered per library source,
    so that an edit anywhere costs one recomputation of ~10 s, and rebuilds only if the data changed)."""
    return [source_of("alarm.tiny.lm"), json.dumps(TEACHER_ARCH, sort_keys=True),
            memo(f"qwen3-teacher-data-{seed}", lambda: data_digest(training_batches, seed))]
