"""AudioAdapter: the only trainable module (layer mixing, adapters, fusion, audio start/end vectors).

Frozen encoders and the LLM are not its children: it takes tapped encoder states and returns LLM input vectors
already wrapped as [audio_start] + tokens + [audio_end], plus the length bookkeeping that goes with them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from alarm.config import ModelConfig
from alarm.encoders import family
from alarm.model.adapters import ADAPTERS, LayerMix
from alarm.model.fusion import FUSIONS, PerceiverLayer
from alarm.types import lengths_to_mask


class AudioAdapter(nn.Module):
    """Layer mixing + adapter per encoder, a fusion, and the learned audio separators.

    Args:
        adapters: encoder name -> adapter (see alarm.model.adapters.Adapter).
        fusion: a fusion (see alarm.model.fusion.Fusion) expecting exactly these encoders.
        mix: encoder name -> LayerMix over that encoder's tapped layers.
        d_llm: the LLM hidden size D_llm.
        separator_init_std: init std of `audio_start` / `audio_end` (reference: randn, std 1).
        summary: clip-level tokens appended after the fused frames (`Summary`), or None.

    Raises:
        ValueError: the key sets of `adapters`, `mix` and `fusion.encoders` differ.

    Shapes:
        states {enc: (L, B, T, D_enc)}, lens {enc: (B,)} -> embeds (B, S, D_llm), lens (B,)
        with S_i = fused tokens (min 1) + summary tokens + 2.
    """

    def __init__(
        self,
        adapters: dict[str, nn.Module],
        fusion: nn.Module,
        mix: dict[str, LayerMix],
        d_llm: int,
        separator_init_std: float = 1.0,
        summary: Summary | None = None,
    ):
        super().__init__()
        fusion_keys = set(getattr(fusion, "encoders", ()))
        if not (set(adapters) == set(mix) == fusion_keys):
            raise ValueError(
                f"AudioAdapter needs the same encoders everywhere: adapters {sorted(adapters)}, layer mixes "
                f"{sorted(mix)}, fusion {sorted(fusion_keys)}; fix the encoders section or fusion.main/fusion.order"
            )
        self.mix = nn.ModuleDict(mix)
        self.adapters = nn.ModuleDict(adapters)
        self.fusion = fusion
        self.d_llm = d_llm
        self.audio_start = nn.Parameter(torch.randn(d_llm) * separator_init_std)
        self.audio_end = nn.Parameter(torch.randn(d_llm) * separator_init_std)
        self.summary = summary
        self.frozen: set[str] = set()

    @property
    def encoders(self) -> tuple[str, ...]:
        return tuple(self.adapters)

    # --------------------------------------------------------------------------------------------------------
    # freezing

    def freeze_adapter(self, enc: str) -> None:
        """Freeze `enc`'s layer mix and adapter: no gradients, and eval mode even under `train()` (fixes D10)."""
        if enc not in self.adapters:
            raise KeyError(f"no adapter for encoder {enc!r}; this AudioAdapter has {sorted(self.adapters)}")
        for module in (self.mix[enc], self.adapters[enc]):
            module.requires_grad_(False)
            module.eval()
        self.frozen.add(enc)

    def train(self, mode: bool = True) -> AudioAdapter:
        super().train(mode)
        for enc in self.frozen:  # frozen BatchNorm statistics must never drift
            self.mix[enc].eval()
            self.adapters[enc].eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    # --------------------------------------------------------------------------------------------------------
    # lengths

    def output_lengths(self, enc_lens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Positions per item S_i (audio tokens + 2 separators) from the encoders' output lengths."""
        lens = {k: self.adapters[k].output_lengths(enc_lens[k]) for k in self.encoders}
        extra = self.summary.tokens if self.summary is not None else 0
        return self.fusion.output_lengths(lens).clamp(min=1) + extra + 2

    # --------------------------------------------------------------------------------------------------------
    # forward

    def _check_inputs(self, states: dict[str, torch.Tensor], lens: dict[str, torch.Tensor]) -> None:
        if set(states) != set(self.encoders) or set(lens) != set(self.encoders):
            raise ValueError(
                f"AudioAdapter expects states and lens for encoders {sorted(self.encoders)}, found states "
                f"{sorted(states)} and lens {sorted(lens)}"
            )
        for k, x in states.items():
            d_enc = getattr(self.adapters[k], "d_enc", x.shape[-1])
            L = self.mix[k].logits.numel()
            if x.dim() != 4 or x.shape[0] != L or x.shape[-1] != d_enc or lens[k].shape != (x.shape[1],):
                raise ValueError(
                    f"encoder {k}: expected states (L={L}, B, T, D={d_enc}) and lens (B,), found "
                    f"{tuple(x.shape)} and {tuple(lens[k].shape)}; check encoders.{k}.layers and "
                    f"encoders.{k}.hidden_size"
                )

    def forward(
        self, states: dict[str, torch.Tensor], lens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_inputs(states, lens)
        streams, stream_lens, mixed = {}, {}, {}
        for k in self.encoders:
            with torch.set_grad_enabled(torch.is_grad_enabled() and k not in self.frozen):
                mixed[k] = self.mix[k](states[k])  # (B, T, D_enc)
                streams[k], stream_lens[k] = self.adapters[k](mixed[k], lens[k])  # (B, T', D_k)
        fused, fused_lens = self.fusion(streams, stream_lens)  # (B, T_f, D_llm)
        if self.summary is not None:
            reads = self.summary.reads
            source = None if reads == "fused" else (mixed[reads], lens[reads])
            fused, fused_lens = self.summary(fused, fused_lens, source)  # (B, T_f + K, D_llm)
        return self.wrap(fused, fused_lens)

    def wrap(self, fused: torch.Tensor, fused_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[audio_start] + each item's first max(len, 1) tokens + [audio_end], right-padded with zeros."""
        B, _, D = fused.shape
        n = fused_lens.clamp(min=1)
        T = int(n.max())
        if T > fused.shape[1]:
            raise ValueError(f"fusion returned {fused.shape[1]} frames but lengths up to {T}")
        dt = fused.dtype
        body = fused[:, :T] * lengths_to_mask(n, T)[..., None].to(dt)  # (B, T, D)
        out = torch.cat([self.audio_start.to(dt).expand(B, 1, D), body, fused.new_zeros(B, 1, D)], 1)  # (B, S, D)
        end_at = torch.arange(T + 2, device=fused.device)[None, :] == (n + 1)[:, None]  # (B, S)
        out = torch.where(end_at[..., None], self.audio_end.to(dt), out)
        return out, n + 2

    @staticmethod
    def split(embeds: torch.Tensor, lens: torch.Tensor) -> list[torch.Tensor]:
        """(B, S, D) + (B,) -> one (S_i, D) tensor per item."""
        return [embeds[i, : int(n)] for i, n in enumerate(lens.tolist())]


class Summary(nn.Module):
    """`tokens` clip-level tokens after an item's frames: learned queries read its valid frames (one pre-norm
    cross-attention + MLP layer, as a Perceiver's), so a property of the whole clip (its level, its length, how
    many events it holds) reaches the LLM in a few positions instead of spread over every frame. The
    frames stay as they are; padding is masked, so an item's tokens never depend on the rest of the batch.

    `reads` (`summary.reads`): "fused", the queries read the frames themselves; an encoder's name, they read that
    encoder's layer-mixed states (`kv_dim` wide, its own lengths), passed to `forward` as `source`.
    `count` (`summary.count`): one more token, `Count`'s sum over what the queries read (`tokens` counts it).
    `drop_frames` (`summary.drop_frames`): in training mode, each item's frames are zeroed with this probability
    (its summary tokens, read from the intact frames, stay), so the LLM learns to read the summary tokens too and
    not only the frames; off in eval mode.

    Shapes:
        frames (B, T, D), lens (B,)[, source ((B, T_s, kv_dim), (B,))] -> (B, T', D) with each item's
        max(len, 1) frames then its `tokens` summary tokens, zero-padded; lens max(len, 1) + tokens
    """

    def __init__(self, dim: int, tokens: int, heads: int, reads: str = "fused", kv_dim: int | None = None,
                 count: bool = False, drop_frames: float = 0.0, count_head: str = "norm"):
        super().__init__()
        self.tokens, self.reads = tokens + int(count), reads  # positions added per item
        self.drop_frames = drop_frames
        self.queries = nn.Parameter(torch.randn(tokens, dim) * 0.02)
        self.read = PerceiverLayer(dim, heads, 0.0, kv_dim=kv_dim or dim)
        self.count = Count(kv_dim or dim, dim, count_head) if count else None

    def forward(self, frames: torch.Tensor, lens: torch.Tensor,
                source: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, D = frames.shape
        n = lens.clamp(min=1)  # as `AudioAdapter.wrap`: an empty item keeps one (zero) frame
        T = int(n.max())
        frames = frames[:, :T] * lengths_to_mask(n, T)[..., None].to(frames.dtype)  # (B, T, D)
        kv, kv_lens = source if source is not None else (frames, n)
        kv_n = kv_lens.clamp(min=1)
        kv = kv[:, : int(kv_n.max())]
        kv_mask = lengths_to_mask(kv_n, kv.shape[1])  # (B, T_s)
        kv = (kv * kv_mask[..., None].to(kv.dtype)).to(frames.dtype)
        q = self.queries.to(frames.dtype).expand(B, -1, -1)  # (B, K, D)
        z = self.read(q, kv, kv_mask)  # (B, K, D)
        if self.count is not None:
            z = torch.cat([z, self.count(kv, kv_mask)[:, None]], 1)  # (B, K + 1, D)
        if self.training and self.drop_frames > 0:
            keep = torch.rand(B, device=frames.device) >= self.drop_frames  # (B,)
            frames = frames * keep[:, None, None].to(frames.dtype)
        out = torch.cat([frames, frames.new_zeros(B, self.tokens, D)], 1)  # (B, T + K, D)
        at = (n[:, None] + torch.arange(self.tokens, device=n.device))[..., None].expand(B, self.tokens, D)
        return out.scatter(1, at, z), n + self.tokens


class Count(nn.Module):
    """`summary.count`'s token: a width-3 convolution (it sees a frame and its neighbours, so it can fire on an
    onset) and a GELU per frame, summed over the item's valid frames (padding contributes nothing), scaled by
    1/`PER`, then made a token by `head` (`summary.count_head`): a sum grows with the number of events, where
    attention's average cannot. "norm" (LayerNorm, Linear) loses that growth, a LayerNorm being scale-invariant;
    "mlp" (Linear, GELU, Linear) keeps it.

    Shapes:
        kv (B, T, D_in) (zero past each item's length), mask (B, T) -> (B, D)
    """

    PER = 16.0  # a frame scale, so that the sum over a clip of a few hundred frames starts near unit size

    def __init__(self, d_in: int, dim: int, head: str = "norm"):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.detect = nn.Conv1d(d_in, dim, kernel_size=3, padding=1)
        if head == "norm":
            self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        elif head == "mlp":
            self.out = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        else:
            raise ValueError(f"count head must be 'norm' or 'mlp', got {head!r}")

    def events(self, kv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The scaled sum of the detector's output over each item's valid frames, (B, D)."""
        m = mask[..., None].to(kv.dtype)
        h = self.detect((self.norm(kv) * m).transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        return (nn.functional.gelu(h) * m).sum(1) / self.PER

    def forward(self, kv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.events(kv, mask))


# ---------------------------------------------------------------------------------------------------------------
# building


def build_audio_adapter(cfg: ModelConfig, enc_dims: dict[str, int] | None = None) -> AudioAdapter:
    """AudioAdapter for `cfg` with fresh weights (freezing is applied when trained weights are loaded).

    Args:
        cfg: the model config.
        enc_dims: D_enc per encoder; defaults to `encoders.<enc>.hidden_size`.
    """
    d_llm = cfg.llm.hidden_size
    enc_dims = enc_dims or {k: e.hidden_size for k, e in cfg.encoders.items()}
    mix, adapters, dims = {}, {}, {}
    for k, e in cfg.encoders.items():
        mix[k] = LayerMix(len(e.layers))
        adapters[k] = ADAPTERS[e.adapter.kind](e.adapter, enc_dims[k], d_llm)
        dims[k] = adapters[k].out_dim
    fusion = FUSIONS[cfg.fusion.kind](cfg.fusion, dims, d_llm)
    s = cfg.summary
    kv_dim = None if s.reads == "fused" else enc_dims[s.reads]
    summary = (Summary(d_llm, s.tokens, s.heads, s.reads, kv_dim, s.count, s.drop_frames, s.count_head)
               if s.tokens else None)
    return AudioAdapter(adapters, fusion, mix, d_llm, cfg.separator_init_std, summary)


# ---------------------------------------------------------------------------------------------------------------
# token counts from durations (pure arithmetic; must agree with the encoders' output_lengths)


def encoder_frames(enc: str, duration_s: float, sample_rate: int | None = None) -> int:
    """Encoder output frames for a clip of `duration_s` seconds (decoded at `sample_rate`, if known).

    From the family record and its front-end: the front-end's valid input frames for the clip's samples at the
    record's rate, times output_rate / input_rate. With `sample_rate` the count is exact: the clip has
    round(duration_s * sample_rate) samples and the resampler returns ceil(N * sr / sample_rate) of them at the
    encoder's rate `sr`.
    """
    fam = family(enc)
    sr = fam.sample_rate
    n = round(duration_s * sr) if sample_rate is None else -(-round(duration_s * sample_rate) * sr // sample_rate)
    return fam.code().FRONT_END.valid_frames(n) * fam.output_rate // fam.input_rate


def audio_token_count(cfg: ModelConfig, duration_s: float, sample_rate: int | None = None) -> int:
    """LLM positions S_i for one clip: fused audio tokens (min 1) + the summary's (`summary.total`) + the two audio
    separators.

    25 tokens/s: 30 s -> 752 with sum / cross_attention, 814 with perceiver (3 × 20 latents + 2 cond separators).
    """
    lens = {}
    for k, e in cfg.encoders.items():
        n = encoder_frames(k, duration_s, sample_rate)
        lens[k] = (n + 1) // 2 if e.adapter.kind == "downsample" else n  # Downsample.output_lengths
    f = cfg.fusion
    if f.kind == "sum":
        tokens = max(lens.values())
    elif f.kind == "cross_attention":
        tokens = lens[f.main]
    else:
        tokens = lens[f.main] + len(f.order) * f.num_latents + 2
    return max(tokens, 1) + cfg.summary.total + 2
