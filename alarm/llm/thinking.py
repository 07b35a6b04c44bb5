"""Two-phase thinking budget and answer extraction (ALARM's inference), pure logic over a `Generate` protocol.

    outs = generate_with_budget(engine, prompts, budget=1536, max_tokens=4096, max_total=4096,
                                extend=lambda prompt, text: prompt + text)
    steps = budget_steps(prompt, budget=1536, max_tokens=4096, max_total=4096, extend=...)   # one prompt, as steps

Phase 1 runs every prompt with `max_tokens = budget`. A row cut off by length before closing `</think>` gets the
Qwen3 forcing sentence appended and continues in phase 2 (batched: one call for every forced row; as steps: as
soon as the row's phase 1 ends). Unlike the reference (D16), phase 2 is capped so that phase 1 + phase 2 never
exceeds `max_total` new tokens. The vLLM wrapper implements `Generate`; tests use a scripted fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from alarm.llm.steps import Steps, lockstep

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


def needs_forcing(c: Completion) -> bool:
    """Cut off by the budget while still reasoning: finish 'length' and no `</think>` yet."""
    return c.finish_reason == "length" and END_THINK not in c.text


def budget_steps(
    prompt: P,
    *,
    budget: int,
    max_tokens: int,
    max_total: int | None = None,
    extend: Callable[[P, str], P],
) -> Steps[tuple[P, int], Completion, BudgetedCompletion]:
    """One prompt's generation with a thinking budget, as steps (`alarm.llm.steps`): yields `(prompt, max_tokens)`
    for each engine call (one or two), receives its Completion, returns the BudgetedCompletion.

    Args:
        prompt: The prompt (text, token ids or embeddings: whatever the engine and `extend` accept).
        budget: Phase-1 cap in new tokens; < 0 means one unconstrained call with `max_tokens`.
        max_tokens: Phase-2 cap (the full answer allowance, as in the reference).
        max_total: Cap on phase 1 + phase 2 new tokens (None = no cap, the reference's behaviour).
        extend: `extend(prompt, phase1_text + FORCING_SUFFIX)` -> the phase-2 prompt.

    Returns:
        The steps. A forced prompt whose phase 1 used up `max_total` is not sent to phase 2: it keeps its phase-1
        text, forced=False, finish_reason 'length'.

    Raises:
        ValueError: budget == 0 or a non-positive cap (at once, not when the steps run).
    """
    if budget == 0:
        raise ValueError("budget must be > 0 (thinking tokens) or < 0 (no budget), found 0")
    if max_tokens <= 0 or (max_total is not None and max_total <= 0):
        raise ValueError(f"max_tokens and max_total must be > 0, found max_tokens={max_tokens}, max_total={max_total}")
    return _budget_steps(prompt, budget, max_tokens, max_total, extend)


def _budget_steps(prompt, budget, max_tokens, max_total, extend):
    cap = (lambda n: min(n, max_total)) if max_total is not None else (lambda n: n)
    p1: Completion = yield (prompt, cap(max_tokens if budget < 0 else budget))
    if budget < 0 or not needs_forcing(p1):
        return BudgetedCompletion(p1.text, False, p1.finish_reason, p1.n_tokens, p1.n_tokens)
    left = max_tokens if max_total is None else min(max_tokens, max_total - p1.n_tokens)
    if left <= 0:
        return BudgetedCompletion(p1.text, False, p1.finish_reason, p1.n_tokens, p1.n_tokens)
    p2: Completion = yield (extend(prompt, p1.text + FORCING_SUFFIX), left)
    return BudgetedCompletion(
        p1.text + FORCING_SUFFIX + p2.text, True, p2.finish_reason, p1.n_tokens + p2.n_tokens, p1.n_tokens
    )


def generate_with_budget(
    generate: Generate[P],
    prompts: Sequence[P],
    *,
    budget: int,
    max_tokens: int,
    max_total: int | None = None,
    extend: Callable[[P, str], P],
) -> list[BudgetedCompletion]:
    """`budget_steps` for every prompt, batched: at most two calls (phase 1 for all, phase 2 for the forced ones).

    Args:
        generate: Batched generator (e.g. the vLLM wrapper).
        prompts: One prompt per row.
        budget, max_tokens, max_total, extend: As in `budget_steps`.

    Returns:
        One `BudgetedCompletion` per prompt, in order.

    Raises:
        ValueError: budget == 0, a non-positive cap, or a `generate` that returns the wrong number of results.
    """
    items = [budget_steps(p, budget=budget, max_tokens=max_tokens, max_total=max_total, extend=extend)
             for p in prompts]
    return lockstep(items, lambda calls: _call(generate, [p for p, _ in calls], [m for _, m in calls]))


def _call(generate: Generate, prompts: list, max_tokens: list[int]) -> list[Completion]:
    outs = generate(prompts, max_tokens)
    if len(outs) != len(prompts):
        raise ValueError(
            f"Generate returned {len(outs)} completions for {len(prompts)} prompts; an implementation must return "
            "exactly one Completion per prompt, in order"
        )
    return list(outs)


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
