"""Training examples -> micro-batches (the one batching policy of every training driver) -> padded batches of
encoder states.

An example is a plain dict, as the data pipeline streams it to a training worker:

    key, source, prompt, target: str
    states_<enc>: float32 / float16 array (L, T_i, D), the frozen encoder's tapped states trimmed to the clip

    for group in epoch_batches(examples, cfg, epoch):       # the Ray Train worker and `fit` alike
        trainer.train_micro_batch(to_train_batch(group, encoders))
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from alarm.config import TrainConfig
from alarm.errors import InvalidInput

T = TypeVar("T")
TEXT_FIELDS = ("key", "source", "prompt", "target")


@dataclass(frozen=True)
class TrainBatch:
    """A micro-batch. states {enc: (L, B, T, D) float32}, lens {enc: (B,) int64}; text fields one per item."""

    keys: list[str]
    sources: list[str]
    prompts: list[str]
    targets: list[str]
    states: dict[str, torch.Tensor]
    lens: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.keys)


def collate_states(
    examples: list[dict], encoders: Sequence[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Right-pad each encoder's per-clip states `(L, T_i, D)` with zeros into `(L, B, T, D)` float32.

    Raises:
        InvalidInput: an example lacks `states_<enc>`, its array is not `(L, T_i, D)` with the batch's L and D, or
            it holds NaN / inf.
    """
    if not examples:
        raise InvalidInput("cannot collate an empty batch")
    states, lens = {}, {}
    for enc in encoders:
        arrays = [_states(ex, enc) for ex in examples]
        L, _, D = arrays[0].shape
        for ex, a in zip(examples, arrays, strict=True):
            if a.shape[0] != L or a.shape[2] != D:
                raise InvalidInput(
                    f"example {ex.get('key')!r}: states_{enc} has shape {a.shape}, expected (L={L}, T, D={D}) "
                    "like the rest of the batch; were the states made by the same encoder config?"
                )
        n = torch.tensor([a.shape[1] for a in arrays], dtype=torch.int64)  # (B,)
        out = torch.zeros(L, len(arrays), int(n.max()), D, dtype=torch.float32)  # (L, B, T, D)
        for i, a in enumerate(arrays):
            out[:, i, : a.shape[1]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
        if not torch.isfinite(out).all():  # NaN states would also poison BatchNorm running statistics
            bad = [ex.get("key") for ex, a in zip(examples, arrays, strict=True) if not np.isfinite(a).all()]
            raise InvalidInput(f"examples {bad}: states_{enc} hold non-finite values; re-encode these clips")
        states[enc], lens[enc] = out, n
    return states, lens


def _states(ex: dict, enc: str) -> np.ndarray:
    name = f"states_{enc}"
    if name not in ex:
        raise InvalidInput(
            f"example {ex.get('key')!r} has no {name!r} (fields: {sorted(ex)}); the model needs states for "
            f"encoder {enc!r}"
        )
    a = ex[name]
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim != 3 or a.shape[1] < 1:
        raise InvalidInput(f"example {ex.get('key')!r}: {name} must be (L, T_i >= 1, D), found {a.shape}")
    return a


def to_train_batch(examples: list[dict], encoders: Sequence[str]) -> TrainBatch:
    """Collate examples into a TrainBatch (states padded, text fields kept as lists)."""
    for ex in examples:
        missing = [f for f in TEXT_FIELDS if not isinstance(ex.get(f), str)]
        if missing:
            raise InvalidInput(f"example {ex.get('key')!r}: fields {missing} must be strings")
    states, lens = collate_states(examples, encoders)
    return TrainBatch(
        keys=[ex["key"] for ex in examples],
        sources=[ex["source"] for ex in examples],
        prompts=[ex["prompt"] for ex in examples],
        targets=[ex["target"] for ex in examples],
        states=states,
        lens=lens,
    )


def bucket_by_length(
    items: Sequence[T],
    key_fn: Callable[[T], float],
    batch_size: int,
    seed: int,
    window: int = 50,
    drop_last: bool = True,
) -> list[list[T]]:
    """Batches of items of similar length, in a seeded random order.

    Items are shuffled, cut into windows of `window * batch_size`, sorted by `key_fn` inside each window and cut
    into batches; then the batches are shuffled. Padding shrinks while every epoch still mixes lengths and
    sources. Deterministic for a given `seed` (use seed + epoch for a new order each epoch).

    Args:
        drop_last: drop the one incomplete batch (the recipe's `drop_last`), else keep it.
    """
    if batch_size < 1 or window < 1:
        raise ValueError(f"batch_size and window must be >= 1, got {batch_size} and {window}")
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    span = window * batch_size
    batches: list[list[T]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: key_fn(items[i]))
        batches += [[items[i] for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    rng.shuffle(batches)
    return batches


def example_length(ex: dict) -> int:
    """Frames of the longest encoder stream in an example (a `key_fn` for `bucket_by_length`)."""
    return max(np.shape(v)[1] for k, v in ex.items() if k.startswith("states_"))


def epoch_batches(examples: Iterable[dict], cfg: TrainConfig, epoch: int, skip: int = 0,
                  length: Callable[[dict], float] = example_length) -> Iterator[list[dict]]:
    """One epoch's micro-batches of `cfg.batch.per_worker` examples from a stream of examples, in training order.

    The stream is cut into windows of `cfg.batch.window_batches` micro-batches' worth of examples; inside each
    window the examples are bucketed by `length` (`cfg.batch.bucket_by_duration`) with seed `cfg.seed + epoch`,
    so every epoch has a new order, else cut in stream order; incomplete batches are dropped (per window, the
    recipe's drop_last). Windows keep the stream's order. A window as large as the corpus buckets the whole epoch.

    Args:
        skip: examples of this epoch already trained on (a resumed run): that many whole batches are skipped, so
            a resumed run sees exactly the batches a run that never stopped would have seen.
        length: the bucketing key (default: frames of the longest encoder stream).
    """
    size = cfg.batch.per_worker
    span = size * cfg.batch.window_batches
    to_skip = skip // size
    window: list[dict] = []

    def emit(rows: list[dict]) -> Iterator[list[dict]]:
        nonlocal to_skip
        if cfg.batch.bucket_by_duration:
            batches = bucket_by_length(rows, length, size, seed=cfg.seed + epoch)
        else:
            batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        for b in batches:
            if len(b) < size:
                continue
            if to_skip:
                to_skip -= 1
                continue
            yield b

    for ex in examples:
        window.append(ex)
        if len(window) == span:
            yield from emit(window)
            window = []
    if window:
        yield from emit(window)
