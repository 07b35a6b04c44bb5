"""What the generation backends accept, in one place: a server checks a request against it at its edge, before any
work, and `GenerationParams` checks again, so no value an engine would refuse gets as far as the engine.

The ranges are vLLM's (`vllm.SamplingParams`, checked against the installed vLLM by tests/unit/llm/test_limits.py);
the transformers backend follows them so that both backends accept exactly the same requests:

    temperature          finite, in [0, 2]; 0 = greedy; values in (0, 0.01) sample at 0.01 (vLLM raises them)
    top_p                in (0, 1]; 1 = disabled
    top_k                >= 0; 0 = disabled; values over the vocabulary size keep every token
    seed                 in [0, 2^63 - 1] or unset (vLLM reads -1 as "no seed", so negatives are refused)
    max_tokens           >= 1 (and the prompt plus max_tokens within the context, checked where the prompt is known)
    max_thinking_tokens  >= 0 or -1 (unlimited); 0 = no thinking (the forcing sentence closes the reasoning at once)
    stop                 at most 4 strings (vLLM's VLLM_MAX_STOP_STRINGS), each 1 to 64 characters (ours: a stream
                         holds back up to 63 characters of answer that may still become a stop string)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from alarm.errors import InvalidInput

TEMPERATURE_MAX = 2.0
TEMPERATURE_FLOOR = 0.01  # vLLM samples any temperature in (0, 0.01) at 0.01 (smaller ones overflow the softmax)
SEED_MAX = 2**63 - 1
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64


def sampling_problem(temperature: float, top_p: float, top_k: int, seed: int | None) -> tuple[str, str] | None:
    """(field, what it must be) for the first out-of-range sampling value, or None when all are accepted."""
    if not (math.isfinite(temperature) and 0 <= temperature <= TEMPERATURE_MAX):
        return "temperature", f"a number in [0, {TEMPERATURE_MAX:g}] (0 = greedy)"
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        return "top_p", "in (0, 1] (1 = disabled)"
    if top_k < 0:
        return "top_k", ">= 0 (0 = disabled)"
    if seed is not None and not 0 <= seed <= SEED_MAX:
        return "seed", f"in [0, {SEED_MAX}] or unset"
    return None


def length_problem(max_tokens: int, max_thinking_tokens: int) -> tuple[str, str] | None:
    """(field, what it must be) for an out-of-range token cap, or None."""
    if max_tokens < 1:
        return "max_tokens", ">= 1"
    if max_thinking_tokens < -1:
        return "max_thinking_tokens", ">= 0 (0 = no thinking) or -1 (unlimited)"
    return None


def stop_problem(stop: Sequence[str]) -> str | None:
    """What is wrong with a list of stop strings (naming the field as "stop" or "stop[i]"), or None."""
    if len(stop) > MAX_STOP_STRINGS:
        return f"stop holds {len(stop)} strings; send at most {MAX_STOP_STRINGS}"
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not 1 <= len(s) <= MAX_STOP_CHARS:
            found = f"{len(s)} characters" if isinstance(s, str) else f"a {type(s).__name__}"
            return f"stop[{i}] must be a string of 1 to {MAX_STOP_CHARS} characters, found {found}"
    return None


def check_sampling(temperature: float, top_p: float, top_k: int, seed: int | None, *, prefix: str = "") -> None:
    """InvalidInput naming the field (`prefix` + name, e.g. "sampling.temperature"), its range and the value."""
    problem = sampling_problem(temperature, top_p, top_k, seed)
    if problem is not None:
        name, want = problem
        value = dict(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)[name]
        raise InvalidInput(f"{prefix}{name} must be {want}, found {value!r}")


def sampled_temperature(temperature: float) -> float:
    """The temperature a backend samples with: 0 stays greedy, (0, 0.01) becomes 0.01 (as vLLM does)."""
    return temperature if temperature == 0 else max(temperature, TEMPERATURE_FLOOR)
