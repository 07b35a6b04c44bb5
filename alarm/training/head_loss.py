"""Next-token loss through a frozen output head, a chunk of target tokens at a time.

    tok_loss, n_correct = head_loss(hidden, head.weight, targets)   # (N,) fp32 with grad to `hidden`, int

A 151,936-way vocabulary makes the logits the largest tensors of a training step: (N x V) fp32, written by the
head, read and written again by log-softmax, its backward and the accuracy count, and kept for the backward
pass. As the head is frozen, the gradient of a token's loss with respect to its hidden state,
(softmax - onehot) @ W, can be computed in the forward pass, chunk by chunk, from the chunk's logits; the backward
pass only scales it. Same arithmetic as `cross_entropy(hidden @ W.T)` (the matmuls run in
the weight's dtype, or autocast's, the softmax in fp32), with (chunk x V) logits alive at a time instead of
(N x V) (the approach of Liger Kernel's fused linear cross-entropy).

A head whose rows repeat (a vocabulary most of whose tokens a small model never trained on and gives one row,
as the toy teacher does: `alarm.tiny.lm.train_sampled(shared_rest=True)`) is computed over its distinct rows
once each, with the log of each row's count added to its logit: the same softmax, denominator and gradient as
over every row, at the cost of the distinct ones (the toy teacher: 590 of 151,936). A head of distinct rows
(any real LLM's) takes the plain path.
"""

from __future__ import annotations

import torch

# Logits per chunk: 32 MiB of fp32 (55 target tokens at V = 151,936) on a CPU; 1 GiB on an accelerator. Each
# chunk reads the whole head twice (78 MB at V = 151,936, D = 128, fp32), so chunks of a few rows cost more
# than they save (2 threads, N = 240: 2 MiB 751 ms, 8 MiB 395 ms, 16-160 MiB 243-265 ms; the plain loss 321 ms).
CHUNK_BYTES = {"cpu": 32 << 20}
DEFAULT_CHUNK_BYTES = 1 << 30


def chunk_rows(vocab: int, device: torch.device, chunk_bytes: int | None = None) -> int:
    """Target tokens per chunk: `chunk_bytes` (or the device's default) of fp32 logits, at least one."""
    budget = chunk_bytes if chunk_bytes is not None else CHUNK_BYTES.get(device.type, DEFAULT_CHUNK_BYTES)
    return max(1, budget // (4 * vocab))


def top_hits(logits: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """How many rows of `logits` (N, V) have their `picked` logit (N,) as the highest (a tie counts as a hit). A
    max and a comparison: `argmax` over (N, 151,936) logits is a slow kernel on CPU (one thread, N = 280: 172 ms
    against 18 ms, more than the cross-entropy's forward)."""
    return (picked >= logits.amax(-1)).sum()


class DistinctRows:
    """The distinct rows of a frozen head (`weight` (V, D) and `bias` (V,) together): `weight` (K, D), `bias`
    (K,) or None, `log_count` (K,) fp32, the log of how many vocabulary rows each stands for, and `index` (V,),
    the distinct row of each token."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        rows = weight if bias is None else torch.cat([weight, bias[:, None].to(weight.dtype)], 1)
        unique, self.index, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
        self.weight = unique[:, : weight.shape[1]].contiguous()
        self.bias = None if bias is None else unique[:, -1].to(bias.dtype).contiguous()
        self.log_count = counts.float().log()
        self.vocab = weight.shape[0]


def distinct_rows(weight: torch.Tensor, bias: torch.Tensor | None = None) -> DistinctRows | None:
    """`DistinctRows` of a frozen head whose rows repeat (at most half of them distinct), else None. Computed once
    per head tensor and version (~0.5 s for 151,936 x 128 on a CPU) and kept on the tensor."""
    key = (weight._version, None if bias is None else (id(bias), bias._version))
    memo = getattr(weight, "_alarm_distinct_rows", None)
    if memo is None or memo[0] != key:
        with torch.no_grad():
            found = None
            if 2 * _distinct_projections(weight, bias) <= weight.shape[0]:  # else more than half are distinct too
                found = DistinctRows(weight.detach(), None if bias is None else bias.detach())
        memo = (key, found if found is not None and 2 * found.weight.shape[0] <= found.vocab else None)
        weight._alarm_distinct_rows = memo
    return memo[1]


def _distinct_projections(weight: torch.Tensor, bias: torch.Tensor | None, chunk: int = 16384) -> int:
    """How many distinct values the rows take on one random direction (fp32, a chunk of rows at a time): at most
    the number of distinct rows, and a pass over the head instead of a sort of its copy (a real LLM's head on a GPU)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    direction = torch.randn(weight.shape[1], generator=g).to(weight.device)
    proj = torch.cat([weight[i: i + chunk].float() @ direction for i in range(0, weight.shape[0], chunk)])
    if bias is not None:
        proj = proj + bias.float() * float(torch.randn((), generator=g))
    return int(torch.unique(proj).numel())


class _HeadLoss(torch.autograd.Function):
    """Per-token cross-entropy of `hidden @ weight.T` (+ bias) against `targets`; the gradient reaches `hidden`
    only (the head is frozen). With `log_count` (K,), `weight` holds a head's distinct rows and `targets` index
    them: each row's logit counts `exp(log_count)` times in the softmax."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows, log_count=None):  # noqa: D417 - autograd's signature
        want_grad = ctx.needs_input_grad[0]
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if want_grad else None
        correct = hidden.new_zeros((), dtype=torch.long)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start: start + rows], targets[start: start + rows]
            logits = torch.nn.functional.linear(h, weight, bias).float()  # (c, V) or (c, K)
            picked = logits.gather(1, t[:, None]).squeeze(1)
            correct += top_hits(logits, picked)
            if log_count is not None:
                logits += log_count  # row k stands for count_k equal logits
            lse = torch.logsumexp(logits, 1)
            losses[start: start + rows] = lse - picked
            if want_grad:
                p = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits (summed over equal rows)
                p[torch.arange(len(t), device=p.device), t] -= 1.0
                grad[start: start + rows] = p.to(weight.dtype) @ weight  # d loss_i / d h_i
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(correct)
        return losses, correct

    @staticmethod
    def backward(ctx, grad_losses, _grad_correct):
        (grad,) = ctx.saved_tensors
        grad_hidden = grad * grad_losses[:, None].to(grad.dtype) if grad is not None else None
        return grad_hidden, None, None, None, None, None


def head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_bytes: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Per-token cross-entropy of the frozen head `weight` (V, D) over `hidden` (N, D) against `targets` (N,), and
    how many targets have the highest logit of their row.

    Raises:
        ValueError: the head's weight or bias requires a gradient (train it with the plain loss instead).
    """
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("head_loss needs a frozen output head; its weight or bias requires a gradient")
    if targets.numel() == 0:
        return hidden.new_zeros(0, dtype=torch.float32) + 0 * hidden.sum(), 0
    distinct = distinct_rows(weight, bias)
    if distinct is not None:
        rows = chunk_rows(distinct.weight.shape[0], hidden.device, chunk_bytes)
        losses, correct = _HeadLoss.apply(hidden, distinct.weight, distinct.bias, distinct.index[targets], rows,
                                          distinct.log_count)
        return losses, int(correct)
    rows = chunk_rows(weight.shape[0], hidden.device, chunk_bytes)
    losses, correct = _HeadLoss.apply(hidden, weight, bias, targets, rows)
    return losses, int(correct)
