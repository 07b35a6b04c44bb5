"""Prompts for one item: ALARM's `<answer>` format or the benchmark's native format.

    p = build_prompt(item, "alarm", "mmau")   # Prompt(system=..., user="Instruction: ...<question>...")

`alarm`: the structure of the reference `generate_vllm_mcqa.py` in our own words: a system prompt that
defines `(Option_{id}) {value}` and asks for one 0-based id between `<answer>` and `</answer>`, and a user
turn with the question and options in `<question>` / `<options>` tags. `native`: MMAU/MMAR ask for the bare
choice text (a letter prefix breaks the official `string_match`); MMSU/AIR-Bench ask for the letter only, as
their reference inference scripts do. The audio goes before the text in the user turn (the prompt builder's
job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from alarm.config.eval import PromptFormat
from alarm.eval.benchmarks import LETTERS, Item, get_spec

FORMATS: tuple[str, ...] = get_args(PromptFormat)

ALARM_SYSTEM = (
    "You are an audio-understanding model. You will receive an audio clip, a question about it, and a list "
    "of answer options, each written as '(Option_{option_ID}) {option_value}'.\n\n"
    "Listen to the audio and pick the option that answers the question. Write your final answer between "
    "<answer> and </answer> tags. The answer must be a single number: the {option_ID} of the chosen option. "
    "Always give a valid {option_ID}, even when you are unsure.\n\n"
    "Good response format:\n"
    "<answer>{option_ID}</answer>\n\n"
    "Bad response format:\n"
    "{some text}<answer>{option_ID}<answer>\n\n"
    "The bad response adds text besides the answer. Give only good responses."
)
ALARM_INSTRUCTION = (
    "Instruction: Answer the question in the <question> tag, choosing among the options in the <options> "
    "tag. Return only your final answer between <answer> and </answer> tags: a single number, the "
    "{option_ID} of the correct option.\n\n"
)
TEXT_INSTRUCTION = "Answer with the exact text of the correct option and nothing else."
LETTER_INSTRUCTION = (
    "Choose the most suitable answer to the question from options A, B, C and D. "
    "Respond with only the letter."
)


@dataclass(frozen=True)
class Prompt:
    """The text of one request: system turn (None = the server's default) and user turn."""

    system: str | None
    user: str


def alarm_user_text(question: str, choices: tuple[str, ...]) -> str:
    options = "".join(f"(Option_{i}) {c}\n" for i, c in enumerate(choices))
    return f"{ALARM_INSTRUCTION}<question>\n{question}\n</question>\n\n<options>\n{options}</options>\n\n"


def text_user_text(question: str, choices: tuple[str, ...]) -> str:
    """The native MMAU / MMAR question: answer with the text of the option."""
    options = "\n".join(f"- {c}" for c in choices)
    return f"{question}\n\nOptions:\n{options}\n\n{TEXT_INSTRUCTION}"


def native_user_text(item: Item, benchmark: str) -> str:
    if get_spec(benchmark).native_answer == "text":
        return text_user_text(item.question, item.choices)
    choices = list(item.choices)
    if benchmark == "airbench":  # the reference prints absent choice_c/choice_d as "None"
        choices += ["None"] * (len(LETTERS) - len(choices))
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{LETTER_INSTRUCTION}\n\nQuestion: {item.question}\n{options}"


def build_prompt(item: Item, fmt: str, benchmark: str) -> Prompt:
    if fmt == "alarm":
        return Prompt(ALARM_SYSTEM, alarm_user_text(item.question, item.choices))
    if fmt == "native":
        return Prompt(None, native_user_text(item, benchmark))
    raise ValueError(f"unknown prompt format {fmt!r}; expected one of {FORMATS}")
