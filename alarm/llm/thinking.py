"""Two-phase thinking budget and answer extraction (ALARM's inference), pure logic over a `Generate` protocol.

    outs = generate_with_budget(engine, prompts, budget=1536, max_tokens=4096, max_total=4096,
                                extend=lambda prompt, text: prompt + text)

Phase 1 runs every prompt with `max_tokens = budget`. A row cut off by length before closing `</think>` gets the
Qwen3 forcing sentence appended and continues in one batched phase-2 call. Unlike the reference (D16), phase 2 is
capped so that phase 1 + phase 2 never exceeds `max_total` new tokens. The vLLM wrapper implements `Generate`;
tests use a scripted fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

FORCING_SUFFIX = (
    "Considering the limited time by the user, I have to give the solution based on the thinking directly now.\n"
    "</think>\n\n"
)
END_THINK = "</think>"

FinishReason = Literal["stop", "length", "error"]
P = TypeVar("P")
P_contra = TypeVar("P_contra", contravariant=True)


@dataclass(frozen=True)
class Completion:
    """One generation: the new text, its token count, and why it ended ('stop' | 'length' | 'error')."""

    text: str
    n_tokens: int
    finish_reason: str


class Generate(Protocol[P_contra]):
    """Batched generation: one Completion per prompt, in order. Sampling parameters are the implementation's."""

    def __call__(self, prompts: list[P_contra], max_tokens: list[int]) -> list[Completion]: ...


@dataclass(frozen=True)
class BudgetedCompletion:
    """Result of `generate_with_budget` for one prompt.

    Attributes:
        text: Phase-1 text, plus `FORCING_SUFFIX` and the phase-2 text when forced.
        forced: The forcing sentence was appended and phase 2 ran.
        finish_reason: The final phase's finish reason.
        n_tokens: New tokens generated over both phases (the suffix is prompt, not counted).
        n_tokens_phase1: New tokens of phase 1.
    """

    text: str
    forced: bool
    finish_reason: str
    n_tokens: int
    n_tokens_phase1: int


def _call(generate: Generate, prompts: list, max_tokens: list[int], phase: str) -> list[Completion]:
    outs = generate(prompts, max_tokens)
    if len(outs) != len(prompts):
        raise ValueError(
            f"Generate returned {len(outs)} completions for {len(prompts)} prompts in {phase}; an implementation "
            "must return exactly one Completion per prompt, in order"
        )
    return list(outs)


def needs_forcing(c: Completion) -> bool:
    """Cut off by the budget while still reasoning: finish 'length' and no `</think>` yet."""
    return c.finish_reason == "length" and END_THINK not in c.text


def generate_with_budget(
    generate: Generate[P],
    prompts: Sequence[P],
    *,
    budget: int,
    max_tokens: int,
    max_total: int | None = None,
    extend: Callable[[P, str], P],
) -> list[BudgetedCompletion]:
    """Generate with a thinking budget, in at most two batched calls.

    Args:
        generate: Batched generator (e.g. the vLLM wrapper).
        prompts: One prompt per row (text, token ids or embeddings: whatever `generate` and `extend` accept).
        budget: Phase-1 cap in new tokens; < 0 means one unconstrained call with `max_tokens`.
        max_tokens: Phase-2 cap (the full answer allowance, as in the reference).
        max_total: Cap on phase 1 + phase 2 new tokens (None = no cap, the reference's behaviour).
        extend: `extend(prompt, phase1_text + FORCING_SUFFIX)` -> the phase-2 prompt.

    Returns:
        One `BudgetedCompletion` per prompt, in order. A forced row whose phase 1 used up `max_total` is not sent
        to phase 2: it keeps its phase-1 text, forced=False, finish_reason 'length'.

    Raises:
        ValueError: budget == 0, a non-positive cap, or a `generate` that returns the wrong number of results.
    """
    if budget == 0:
        raise ValueError("budget must be > 0 (thinking tokens) or < 0 (no budget), found 0")
    if max_tokens <= 0 or (max_total is not None and max_total <= 0):
        raise ValueError(f"max_tokens and max_total must be > 0, found max_tokens={max_tokens}, max_total={max_total}")
    prompts = list(prompts)
    if not prompts:
        return []
    cap = (lambda n: min(n, max_total)) if max_total is not None else (lambda n: n)
    if budget < 0:
        outs = _call(generate, prompts, [cap(max_tokens)] * len(prompts), "the single call (budget < 0)")
        return [BudgetedCompletion(c.text, False, c.finish_reason, c.n_tokens, c.n_tokens) for c in outs]

    phase1 = _call(generate, prompts, [cap(budget)] * len(prompts), "phase 1")
    results = [BudgetedCompletion(c.text, False, c.finish_reason, c.n_tokens, c.n_tokens) for c in phase1]
    todo = []  # (row, phase-2 max_tokens)
    for i, c in enumerate(phase1):
        if needs_forcing(c):
            left = max_tokens if max_total is None else min(max_tokens, max_total - c.n_tokens)
            if left > 0:
                todo.append((i, left))
    if not todo:
        return results
    extended = [extend(prompts[i], phase1[i].text + FORCING_SUFFIX) for i, _ in todo]
    phase2 = _call(generate, extended, [left for _, left in todo], "phase 2")
    for (i, _), c in zip(todo, phase2, strict=True):
        p1 = phase1[i]
        results[i] = BudgetedCompletion(
            p1.text + FORCING_SUFFIX + c.text, True, c.finish_reason, p1.n_tokens + c.n_tokens, p1.n_tokens
        )
    return results


def split_reasoning(text: str) -> tuple[str, str, bool]:
    """Split a thinking model's output into (reasoning, answer, complete).

    Reasoning is the text before the first `</think>` (a leading `<think>` removed, whitespace stripped); answer is
    the text after it without leading newlines. Without `</think>` the whole text is unfinished reasoning:
    `(text, "", False)`.
    """
    body = text.lstrip()
    if body.startswith("<think>"):
        body = body[len("<think>"):]
    if END_THINK not in body:
        return body.strip(), "", False
    reasoning, _, answer = body.partition(END_THINK)
    return reasoning.strip(), answer.lstrip("\n"), True


def extract_answer_tag(text: str) -> str | None:
    """The text after the last `<answer>` up to the next `</answer>`, stripped; None if there is no closed block."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start)
    if end < 0:
        return None
    return text[start + len("<answer>"):end].strip()
