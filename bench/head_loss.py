"""The training loss through the frozen LLM head: chunked (`alarm.training.head_loss`) vs the plain
cross-entropy over the whole (N x V) logits, forward and backward, in one run.

    python bench/head_loss.py [--tokens 240] [--hidden 128] [--vocab 151936] [--repeats 10]

Defaults: a toy-world step (8 targets of ~30 tokens, the toy teacher's D 128, Qwen3's vocabulary). Prints ms per
loss, the ratio (target: chunked / plain <= 0.9) and the logits each keeps for the backward pass.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch
    import torch.nn.functional as F

    from alarm.training.head_loss import chunk_rows, head_loss

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=240)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(a.vocab, a.hidden, generator=g) * 0.05
    hidden = torch.randn(a.tokens, a.hidden, generator=g)
    targets = torch.randint(0, a.vocab, (a.tokens,), generator=g)

    def plain():
        h = hidden.clone().requires_grad_()
        losses = F.cross_entropy(F.linear(h, weight).float(), targets, reduction="none")
        losses.mean().backward()

    def chunked():
        h = hidden.clone().requires_grad_()
        head_loss(h, weight, targets)[0].mean().backward()

    arms = {"plain": plain, "chunked": chunked}
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


if __name__ == "__main__":
    main()
