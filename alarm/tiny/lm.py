"""The text-training routine the trained tiny Qwen3s share (`scripted`, `teacher`): a sampled-softmax causal-LM
loop that runs in seconds to minutes on one CPU thread and yields the same bytes for a seed.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

Batches = list[list[tuple[list[int], int]]]  # per step: (token ids, prompt length) per sequence

NEGATIVES = 4096  # uniform negatives per step of the sampled softmax
BETAS = (0.9, 0.98)
WARMUP = 20


@contextmanager
def one_deterministic_thread():
    """torch on one thread with deterministic kernels (a build that yields the same bytes for a seed), restored
    afterwards."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)



def train_sampled(model, tok, batches: Batches, out_ids: list[int], seed: int, lr_max: float,
                  share_prefix: bool = False, shared_rest: bool = False) -> list[float]:
    """Train a causal LM on (sequence, prompt length) batches, loss on the tokens after the prompt only.

    AdamW on the body and a lazy Adam on the tied embedding rows a step touches; a sampled softmax, exact over
    `out_ids` and every token of the batch, uniform negatives for the rest with a log(|R|/K) correction (the
    151,936-way logits would otherwise dominate CPU time); warmup + cosine over len(batches) steps; the
    gradient clipped to norm 1. Deterministic for a seed (one thread, deterministic algorithms).

    share_prefix: run the prompt prefix every sequence of a batch shares (`shared_prefix`, e.g. a long system
    prompt and few-shot turns) once for the batch, not once per sequence; the same loss and gradients.
    shared_rest: after training, every token the batches never read or write (the rest of the vocabulary) gets
    one embedding row, the mean of their trained rows. The model keeps its vocabulary, and a student's loss through
    its head costs only the distinct rows (`alarm.training.head_loss`). Greedy decoding is unchanged wherever the
    top token was one the batches hold: on any hidden state the mean row's logit is the mean of the rows' logits,
    below the highest of them. (Training with that row shared from the start, an exact softmax over it, gave
    teachers that rephrased several types wrong in all three builds tried.)
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    steps = len(batches)
    emb = model.get_input_embeddings().weight
    vocab = emb.shape[0]
    out_ids = torch.tensor(out_ids)
    # AdamW for the body; the (tied) embedding gets a lazy Adam over the rows a step touches (the candidates),
    # as a dense update of 151,936 x 64 every step would cost more than the model itself
    params = [p for p in model.parameters() if p is not emb]
    opt = torch.optim.AdamW(params, lr=lr_max, betas=BETAS, weight_decay=0.0)
    m, v = torch.zeros_like(emb), torch.zeros_like(emb)
    model.train()
    losses = []
    for step, batch in enumerate(batches):
        lr = lr_max * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        width = max(len(seq) for seq, _ in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols = [], []
        for b, (seq, p) in enumerate(batch):
            ids[b, : len(seq)] = torch.tensor(seq)
            mask[b, : len(seq)] = 1
            rows += [b] * (len(seq) - p)
            cols += range(p - 1, len(seq) - 1)
        rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
        targets = ids[rows_t, cols_t + 1]
        # sampled softmax: exact over output + batch tokens, uniform negatives for the rest with a |R|/K correction
        exact = torch.zeros(vocab, dtype=torch.bool)
        exact[out_ids] = True
        exact[ids] = True  # padding included: every input row comes from the candidate table
        perm = torch.randperm(vocab, generator=gen)
        negatives = perm[~exact[perm]][:NEGATIVES]
        cand = torch.cat([exact.nonzero().squeeze(1), negatives])
        correction = torch.zeros(len(cand))
        correction[-len(negatives):] = math.log((vocab - int(exact.sum())) / len(negatives))
        where = torch.full((vocab,), -1, dtype=torch.long)
        where[cand] = torch.arange(len(cand))
        table = emb.detach()[cand].requires_grad_()  # the rows this step reads, input and output side alike
        shared = shared_prefix(batch) if share_prefix else 0
        hidden = forward_shared(model.model, table[where[ids]], mask, shared)
        logits = hidden[rows_t, cols_t] @ table.T + correction
        loss = F.cross_entropy(logits, where[targets])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = table.grad
        norm = torch.cat([grad.flatten()] + [p.grad.flatten() for p in params if p.grad is not None]).norm()
        scale = min(1.0, 1.0 / (norm.item() + 1e-6))
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
        opt.step()
        with torch.no_grad():  # lazy Adam on the candidate rows, global bias correction
            grad = grad * scale
            m[cand] = BETAS[0] * m[cand] + (1 - BETAS[0]) * grad
            v[cand] = BETAS[1] * v[cand] + (1 - BETAS[1]) * grad * grad
            c1, c2 = 1 - BETAS[0] ** (step + 1), 1 - BETAS[1] ** (step + 1)
            emb[cand] -= lr * (m[cand] / c1) / ((v[cand] / c2).sqrt() + 1e-8)
        losses.append(loss.item())
    if shared_rest:
        used = torch.zeros(vocab, dtype=torch.bool)
        used[out_ids] = True
        used[tok.pad_token_id] = True
        used[torch.tensor(sorted({i for batch in batches for seq, _ in batch for i in seq}))] = True
        rest = (~used).nonzero().squeeze(1)
        with torch.no_grad():
            emb[rest] = emb[rest].mean(0)
    model.eval()
    return losses


MIN_SHARED = 64  # shorter common prefixes are not worth a second forward call


def shared_prefix(batch: list[tuple[list[int], int]]) -> int:
    """Tokens every sequence of the batch starts with, up to the shortest prompt (0 if fewer than `MIN_SHARED` or
    a single sequence): the positions `forward_shared` runs once."""
    if len(batch) < 2:
        return 0
    n = min(p for _, p in batch) - 1  # keep the last prompt token: its hidden state predicts the first output
    first = batch[0][0]
    for seq, _ in batch[1:]:
        n = next((i for i in range(n) if seq[i] != first[i]), n)
    return n if n >= MIN_SHARED else 0


def forward_shared(body, embeds, mask, shared: int):
    """`body(inputs_embeds=embeds, attention_mask=mask).last_hidden_state` (B, S, D), the first `shared`
    positions (identical in every row, unpadded) run once and their keys and values reused by every row."""
    import torch

    if shared == 0:
        return body(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    B = embeds.shape[0]
    head = body(inputs_embeds=embeds[:1, :shared], use_cache=True)
    cache = head.past_key_values
    cache.batch_repeat_interleave(B)
    tail = body(inputs_embeds=embeds[:, shared:], attention_mask=mask, past_key_values=cache, use_cache=False)
    return torch.cat([head.last_hidden_state.expand(B, -1, -1), tail.last_hidden_state], dim=1)
