"""The training loss through the frozen LLM head: chunked (`alarm.training.head_loss`) vs the plain
cross-entropy over the whole (N x V) logits, forward and backward, in one run.

    python bench/head_loss.py [--tokens 240] [--hidden 128] [--vocab 151936] [--distinct 589] [--repeats 10]

Defaults: a toy-world step (8 targets of ~30 tokens, the toy teacher's D 128, Qwen3's vocabulary). Prints ms per
loss, the ratio (target: chunked / plain <= 0.9) and the logits each keeps for the backward pass. Then the same
on a head whose rows repeat, all but `--distinct` of them one shared row (the toy teacher's: its unused tokens share
one), which the loss computes over the distinct rows (target: that / the plain loss over every row <= 0.1).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch
    import torch.nn.functional as F

    from alarm.training.head_loss import chunk_rows, distinct_rows, head_loss

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=240)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--distinct", type=int, default=589)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(a.vocab, a.hidden, generator=g) * 0.05
    hidden = torch.randn(a.tokens, a.hidden, generator=g)
    targets = torch.randint(0, a.vocab, (a.tokens,), generator=g)

    shared = weight.clone()
    shared[a.distinct:] = shared[a.distinct]
    t = time.perf_counter()
    distinct_rows(shared)  # once per head (kept on the tensor), as in training
    find_ms = 1000 * (time.perf_counter() - t)

    def plain(w=weight):
        h = hidden.clone().requires_grad_()
        losses = F.cross_entropy(F.linear(h, w).float(), targets, reduction="none")
        losses.mean().backward()

    def chunked(w=weight):
        h = hidden.clone().requires_grad_()
        head_loss(h, w, targets)[0].mean().backward()

    arms = {"plain": plain, "chunked": chunked, "plain, shared rows": lambda: plain(shared),
            "distinct rows": lambda: chunked(shared)}
    ms = {name: [] for name in arms}
    for _ in range(a.repeats):  # interleaved, so drift in the machine's load hits both arms alike
        for name, fn in arms.items():
            t = time.perf_counter()
            fn()
            ms[name].append(1000 * (time.perf_counter() - t))
    med = {name: sorted(v)[len(v) // 2] for name, v in ms.items()}
    rows = chunk_rows(a.vocab, torch.device("cpu"))
    print(f"N {a.tokens} target tokens, D {a.hidden}, V {a.vocab}, {torch.get_num_threads()} threads, "
          f"median of {a.repeats}")
    print(f"plain:   {med['plain']:.1f} ms, keeps (N x V) fp32 logits: {a.tokens * a.vocab * 4 / 2**20:.0f} MiB")
    print(f"chunked: {med['chunked']:.1f} ms, keeps (N x D) gradients: {a.tokens * a.hidden * 4 / 2**20:.2f} MiB "
          f"(chunks of {rows} tokens, {rows * a.vocab * 4 / 2**20:.0f} MiB of logits at a time)")
    ratio = med["chunked"] / med["plain"]
    print(f"chunked / plain: {ratio:.2f} (target <= 0.9): {'met' if ratio <= 0.9 else 'NOT met'}")
    print(f"a head of {a.distinct + 1} distinct rows (the rest one shared row): plain {med['plain, shared rows']:.1f} "
          f"ms, over the distinct rows {med['distinct rows']:.1f} ms (finding them: {find_ms:.0f} ms, once)")
    ratio = med["distinct rows"] / med["plain, shared rows"]
    print(f"distinct rows / plain: {ratio:.3f} (target <= 0.1): {'met' if ratio <= 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
