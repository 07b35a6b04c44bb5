"""The sampling and token limits checked at the edge are exactly what the installed vLLM accepts: a request that
passes them never fails inside the engine, and none that vLLM would take is refused (seeds aside, see below)."""

from __future__ import annotations

import math

import pytest

from alarm.errors import InvalidInput
from alarm.llm.backends import GenerationParams
from alarm.llm.limits import SEED_MAX, check_sampling, length_problem, sampled_temperature, sampling_problem

SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=20, seed=None)
CASES = [
    ("temperature", v) for v in (0.0, 1e-6, 0.005, 0.01, 1.0, 2.0, 2.0000001, 2.5, 1e30, -0.1, math.inf, math.nan)
] + [
    ("top_p", v) for v in (1e-9, 0.5, 1.0, 0.0, -0.2, 1.0000001, math.nan, math.inf)
] + [
    ("top_k", v) for v in (0, 1, 20, 151936, 10**9, -2)
] + [
    ("seed", v) for v in (None, 0, 7, SEED_MAX)
]


def vllm_accepts(**kw) -> bool:
    sampling_params = pytest.importorskip("vllm.sampling_params")
    from vllm.exceptions import VLLMValidationError

    try:
        sampling_params.SamplingParams(max_tokens=kw.pop("max_tokens", 16), **kw)
        return True
    except (VLLMValidationError, ValueError):
        return False


@pytest.mark.parametrize("field, value", CASES, ids=[f"{f}={v}" for f, v in CASES])
def test_the_edge_accepts_what_vllm_accepts(field, value):
    kw = {**SAMPLING, field: value}
    ours = sampling_problem(**kw) is None
    assert ours == vllm_accepts(**kw), f"{field}={value}: ours {ours}, vLLM's differs"


def test_seeds_are_stricter_than_vllm_on_purpose():
    # vLLM reads seed -1 as "no seed" (non-deterministic), while the transformers backend would seed with it: the
    # edge refuses negative seeds so a seed means the same on both backends
    assert vllm_accepts(**{**SAMPLING, "seed": -1})
    assert sampling_problem(**{**SAMPLING, "seed": -1}) == ("seed", f"in [0, {SEED_MAX}] or unset")


@pytest.mark.parametrize("max_tokens, budget, ok", [(1, 1, True), (0, 1, False), (-3, 1, False), (8, -1, True),
                                                     (8, 0, True), (8, -2, False)])  # 0 = no thinking
def test_token_caps(max_tokens, budget, ok):
    assert (length_problem(max_tokens, budget) is None) == ok
    if budget == 1:
        assert ok == vllm_accepts(max_tokens=max_tokens)


def test_messages_name_the_field_and_the_range():
    with pytest.raises(InvalidInput, match=r"^sampling\.temperature must be a number in \[0, 2\] \(0 = greedy\), "
                                           r"found 2\.5$"):
        check_sampling(2.5, 0.95, 20, None, prefix="sampling.")
    with pytest.raises(InvalidInput, match=r"top_p must be in \(0, 1\]"):
        GenerationParams(top_p=0.0)
    with pytest.raises(InvalidInput, match="temperature must be a number in"):
        GenerationParams(temperature=1e30)


def test_small_temperatures_sample_as_vllm_does():
    assert [sampled_temperature(t) for t in (0.0, 1e-6, 0.01, 0.7)] == [0.0, 0.01, 0.01, 0.7]
