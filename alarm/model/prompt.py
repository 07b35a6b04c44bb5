"""Prompt assembly: the Qwen3 chat layout with audio spliced in, as LLM input embeddings.

    [system turn]  <|im_start|>user\\n  [audio_start] audio [audio_end]  {prompt}<|im_end|>\\n
    <|im_start|>assistant\\n<think>\\n  {target (training only)}

The user turn is rendered by the tokenizer's own chat template and split where the user content begins, so the
audio sits right after `<|im_start|>user\\n` and before the prompt, with no newline in between (as ALARM trained).
ALARM-E puts several checkpoints' audio blocks in one user turn behind a multi-view preamble. Text-only input is
tokenized as one string and embedded with the frozen table, so it equals the base LLM's token-id path exactly.

Outputs: `prompt_embeds (S, D)` for vLLM; for training, embeddings plus labels (-100 everywhere but the target;
no EOS appended: targets may be cut-off reasoning and the model must not learn to stop early).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alarm.errors import InvalidInput

IGNORE = -100
_SENTINEL = "\u2063ALARM_USER_CONTENT\u2063"

ENSEMBLE_PREAMBLE = (
    "You will hear the same audio {n} times. Each time it reaches you through a different way of listening, "
    "which picks up different aspects of it: the content and words, the environment and background, the "
    "voices, the music, the recording quality. Take all of them into account.\n"
)
ENSEMBLE_HEADER = "This is what you hear in the audio for the ({k}/{n}) time:\n"


@dataclass(frozen=True)
class Prompt:
    """An assembled sequence. embeds `(S, D)`; input_ids `(S,)` with pad ids over audio; audio_spans [(start, end)]."""

    embeds: torch.Tensor
    input_ids: torch.Tensor
    audio_spans: list[tuple[int, int]]
    labels: torch.Tensor | None = None
    truncated: bool = False

    @property
    def length(self) -> int:
        return self.embeds.shape[0]


class PromptBuilder:
    """Builds prompt embeddings around audio blocks with a tokenizer and the frozen LLM input-embedding table.

    Args:
        tokenizer: a Qwen3 tokenizer with its chat template.
        embed_tokens: the frozen `(V, D)` input embedding of the LLM.
        max_length: training sequences are cut to this many positions (`model_max_length`, 4096).
    """

    def __init__(self, tokenizer, embed_tokens: nn.Embedding, max_length: int = 4096):
        self.tok = tokenizer
        self.embed_tokens = embed_tokens
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id

    # -- text pieces ---------------------------------------------------------------------------------------------

    def split_template(self, system: str | None) -> tuple[str, str]:
        """(text before the user content, text after it) for one user turn plus the generation prompt."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": _SENTINEL}
        ]
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        before, found, after = text.partition(_SENTINEL)
        if not found:
            raise ValueError("the chat template dropped the user content; cannot place the audio")
        return before, after

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        w = self.embed_tokens.weight
        return self.embed_tokens(torch.tensor(ids, dtype=torch.long, device=w.device))  # (S, D)

    # -- assembly ------------------------------------------------------------------------------------------------

    def build(self, prompt: str, audio: torch.Tensor | None = None, system: str | None = None) -> Prompt:
        """One user turn with at most one audio block `(S_a, D)` (already wrapped in its start/end vectors)."""
        return self.build_pieces(self._user_pieces(prompt, [audio] if audio is not None else []), system)

    def build_ensemble(self, prompt: str, audios: list[torch.Tensor], system: str | None = None) -> Prompt:
        """ALARM-E: several checkpoints' audio blocks for the same clip, in one user turn behind a preamble."""
        if len(audios) < 2:
            raise InvalidInput(f"an ensemble needs at least 2 audio blocks, got {len(audios)}")
        return self.build_pieces(self._user_pieces(prompt, audios), system)

    def build_training(self, prompt: str, audio: torch.Tensor | None, target: str) -> Prompt:
        """Inputs + labels for one example (no system turn in training, as in the recipe; no EOS)."""
        p = self.build(prompt, audio, system=None)
        target_ids = self.ids(target)
        if not target_ids:
            raise InvalidInput("empty training target; the corpus row has no answer text")
        room = self.max_length - p.length
        if room <= 0:
            raise InvalidInput(
                f"prompt and audio take {p.length} positions, at or above max_length={self.max_length}; "
                "shorten the clip or the prompt"
            )
        keep = target_ids[:room]
        embeds = torch.cat([p.embeds, self.embed_ids(keep)])
        ids = torch.cat([p.input_ids, torch.tensor(keep, dtype=torch.long)])
        labels = torch.cat([torch.full((p.length,), IGNORE, dtype=torch.long), torch.tensor(keep)])
        return Prompt(embeds, ids, p.audio_spans, labels, truncated=len(keep) < len(target_ids))

    def continuation(self, prompt: Prompt, text: str) -> Prompt:
        """`prompt` followed by assistant text (phase 2 of the thinking budget re-feeds the partial output)."""
        ids = self.ids(text)
        return Prompt(
            torch.cat([prompt.embeds, self.embed_ids(ids)]),
            torch.cat([prompt.input_ids, torch.tensor(ids, dtype=torch.long)]),
            prompt.audio_spans,
        )

    def _user_pieces(self, prompt: str, audios: list[torch.Tensor]) -> list[str | torch.Tensor]:
        if not isinstance(prompt, str):
            raise InvalidInput(f"prompt must be a string, got {type(prompt).__name__}")
        if len(audios) <= 1:
            return [*audios, prompt]
        n = len(audios)
        pieces: list[str | torch.Tensor] = [ENSEMBLE_PREAMBLE.format(n=n)]
        for k, a in enumerate(audios, 1):
            pieces += [ENSEMBLE_HEADER.format(k=k, n=n), a, "\n"]
        return [*pieces, prompt]

    def build_pieces(self, user: list[str | torch.Tensor], system: str | None) -> Prompt:
        before, after = self.split_template(system)
        pieces = _merge_text([before, *user, after])
        embeds, ids, spans, pos = [], [], [], 0
        D = self.embed_tokens.embedding_dim
        for piece in pieces:
            if isinstance(piece, str):
                piece_ids = self.ids(piece)
                embeds.append(self.embed_ids(piece_ids))
                ids.append(torch.tensor(piece_ids, dtype=torch.long))
                n = len(piece_ids)
            else:
                if piece.ndim != 2 or piece.shape[1] != D or piece.shape[0] < 1:
                    raise InvalidInput(f"audio block must be (S, {D}) with S >= 1, got {tuple(piece.shape)}")
                embeds.append(piece.to(self.embed_tokens.weight.dtype))
                ids.append(torch.full((piece.shape[0],), self.pad_id, dtype=torch.long))
                n = piece.shape[0]
                spans.append((pos, pos + n))
            pos += n
        return Prompt(torch.cat(embeds), torch.cat(ids), spans)


def _merge_text(pieces: list[str | torch.Tensor]) -> list[str | torch.Tensor]:
    """Join adjacent strings so text is tokenized as the template renders it (text-only = one string)."""
    out: list[str | torch.Tensor] = []
    for p in pieces:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif not (isinstance(p, str) and p == ""):
            out.append(p)
    return out


def collate_training(examples: list[Prompt], pad_embed: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Returns inputs_embeds `(B, S, D)`, attention_mask `(B, S)`, labels `(B, S)` (-100 on pad)."""
    B, S = len(examples), max(e.length for e in examples)
    D = examples[0].embeds.shape[1]
    embeds = torch.zeros(B, S, D, dtype=examples[0].embeds.dtype)
    mask = torch.zeros(B, S, dtype=torch.long)
    labels = torch.full((B, S), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        embeds[i, : e.length] = e.embeds
        if pad_embed is not None:
            embeds[i, e.length :] = pad_embed
        mask[i, : e.length] = 1
        if e.labels is not None:
            labels[i, : e.length] = e.labels
    return {"inputs_embeds": embeds, "attention_mask": mask, "labels": labels}
