"""One training forward pass and its loss, plus the optimizer, schedule and precision the recipe uses.

    states -> AudioAdapter -> one audio block per clip -> prompt + audio + target embeddings (labels: target only)
           -> frozen LLM -> next-token cross-entropy over target tokens (fp32), token accuracy, per-source sums

The LLM is frozen (no parameter needs a gradient) but differentiable: gradients reach the audio embeddings
through it. Only hidden states at target positions go through the output head, so a 151,936-way vocabulary
costs (target tokens x V) logits instead of (B x S x V), and those a chunk at a time (`head_loss`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from alarm.config import OptimConfig
from alarm.errors import InvalidInput
from alarm.model.audio_adapter import AudioAdapter
from alarm.model.prompt import IGNORE, PromptBuilder, collate_training
from alarm.training.batch import TrainBatch
from alarm.training.head_loss import head_loss, top_hits


@dataclass
class StepOutput:
    """loss: mean over the batch's target tokens (scalar, with grad); per_source: {source: (loss_sum, n_tokens)}."""

    loss: torch.Tensor
    n_tokens: int
    n_correct: int
    per_source: dict[str, tuple[float, int]] = field(default_factory=dict)
    n_truncated: int = 0


# ---------------------------------------------------------------------------------------------------------------
# forward + loss


def forward_loss(
    adapter: nn.Module, builder: PromptBuilder, llm: nn.Module, batch: TrainBatch, max_length: int
) -> StepOutput:
    """Next-token cross-entropy on the target tokens of `batch`.

    Args:
        adapter: the AudioAdapter (or a DDP wrapper around it).
        builder: prompt assembly over the LLM's frozen input embedding.
        llm: the frozen causal LM (a Hugging Face `*ForCausalLM`).
        batch: the micro-batch.
        max_length: LLM positions per example; longer targets are cut (ALARM's `model_max_length`).

    Raises:
        InvalidInput: an example whose prompt and audio alone reach `max_length`, or whose target is empty.
    """
    device = builder.embed_tokens.weight.device
    states = {k: v.to(device, non_blocking=True) for k, v in batch.states.items()}
    lens = {k: v.to(device) for k, v in batch.lens.items()}
    embeds, audio_lens = adapter(states, lens)  # (B, S_a, D_llm), (B,)
    blocks = AudioAdapter.split(embeds, audio_lens)
    if builder.max_length != max_length:
        builder = copy.copy(builder)
        builder.max_length = max_length
    prompts = []
    for key, prompt, block, target in zip(batch.keys, batch.prompts, blocks, batch.targets, strict=True):
        try:
            prompts.append(builder.build_training(prompt, block, target))
        except InvalidInput as e:
            raise InvalidInput(f"example {key!r}: {e}") from None
    with torch.device(device):  # collate_training allocates with the default device
        inputs = collate_training(prompts)
    hidden = _decoder(llm)(
        inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"]
    ).last_hidden_state  # (B, S, D)
    labels = inputs["labels"][:, 1:]  # (B, S-1): position t predicts token t+1
    mask = labels != IGNORE  # (B, S-1)
    targets = labels[mask]  # (N,)
    tok_loss, n_correct = _token_losses(llm.get_output_embeddings(), hidden[:, :-1][mask], targets)  # (N,), int
    n = tok_loss.numel()
    rows = mask.nonzero()[:, 0]  # (N,) batch row of each target token
    row_sum = torch.zeros(len(batch), device=device).index_add_(0, rows, tok_loss.detach())  # (B,)
    row_n = mask.sum(1)  # (B,)
    per_source: dict[str, tuple[float, int]] = {}
    for src, s, k in zip(batch.sources, row_sum.tolist(), row_n.tolist(), strict=True):
        s0, k0 = per_source.get(src, (0.0, 0))
        per_source[src] = (s0 + s, k0 + k)
    return StepOutput(
        loss=tok_loss.sum() / max(n, 1),
        n_tokens=n,
        n_correct=n_correct,
        per_source=per_source,
        n_truncated=sum(p.truncated for p in prompts),
    )


def _token_losses(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per-token cross-entropy (fp32) of `head` over `hidden` (N, D), and how many targets have the highest logit
    of their row (token accuracy; a tie counts as a hit). A frozen linear head (the LLM's) goes through
    `head_loss`, a chunk of tokens at a time, never holding the (N x V) logits; any other head, the plain way."""
    if isinstance(head, nn.Linear) and not any(p.requires_grad for p in head.parameters()):
        return head_loss(hidden, head.weight, targets, head.bias)
    logits = head(hidden).float()  # (N, V)
    tok_loss = F.cross_entropy(logits, targets, reduction="none")
    logits = logits.detach()
    return tok_loss, int(top_hits(logits, logits.gather(1, targets[:, None]).squeeze(1)))


def _decoder(llm: nn.Module) -> nn.Module:
    """The LM's transformer body (hidden states after the final norm), without the output head."""
    get = getattr(llm, "get_decoder", None)
    body = get() if get is not None else getattr(llm, "model", None)
    if body is None or body is llm:
        raise TypeError(f"{type(llm).__name__} exposes no decoder body (get_decoder()); expected a *ForCausalLM")
    return body


# ---------------------------------------------------------------------------------------------------------------
# optimizer and schedule


def trainable(adapter: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters that require a gradient (works on a DDP wrapper too)."""
    return (p for p in adapter.parameters() if p.requires_grad)


def build_optimizer(adapter: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the parameters that require a gradient (frozen adapters and the LLM are left out)."""
    params = list(trainable(adapter))
    if not params:
        raise ValueError("the adapter has no trainable parameters; is every encoder's adapter_frozen set?")
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


class WarmupCosine:
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> 0 at `total` steps (0 after).

    A callable object rather than a closure so LambdaLR.state_dict() records (and restores) its fields.
    """

    def __init__(self, warmup: int, total: int):
        self.total = max(int(total), 1)
        self.warmup = min(int(warmup), self.total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `cfg.warmup_steps` (capped at `total_steps`), then cosine decay to 0 at `total_steps`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup_steps, total_steps))


# ---------------------------------------------------------------------------------------------------------------
# precision


def autocast_context(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA for "auto" and "bf16"; "auto" is fp32 on CPU, "bf16" on CPU uses CPU autocast."""
    kind = torch.device(device).type
    if precision == "fp32" or (precision == "auto" and kind != "cuda"):
        return contextlib.nullcontext()
    if precision not in ("auto", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return torch.autocast(kind, dtype=torch.bfloat16)
