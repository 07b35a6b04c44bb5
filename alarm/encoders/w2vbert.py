"""W2V-BERT 2.0 (`facebook/w2v-bert-2.0`): the transformers model, its SeamlessM4T fbank front-end, its checkpoint
format and its tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from alarm.audio.features import EDGE_PAD, FrontEnd, kaldi_fbank, kaldi_frames
from alarm.encoders import family
from alarm.encoders.base import FrozenEncoder, stack
from alarm.encoders.checkpoint import CheckpointFormat, hf_fields, random_state, write_folder


class FrozenW2VBert(FrozenEncoder):
    """Input `(B, T, 160)` SeamlessM4T features at 50 Hz, T a multiple of 1500.

    Each chunk is masked to its valid frames (attention and the conformer convolutions honour the mask).
    """

    name = "w2vbert"

    @property
    def feature_dim(self) -> int:
        return self.model.config.feature_projection_input_dim

    def output_lengths(self, lens: Tensor) -> Tensor:
        return lens.long()

    def encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < x_lens[:, None]  # (N, C)
        dtype = self.model.feature_projection.projection.weight.dtype
        out = self.model(input_features=x.to(dtype), attention_mask=mask.long(), output_hidden_states=True)
        return stack(out.hidden_states, self.layers)  # (L, N, 1500, D)


# ---------------------------------------------------------------------------------------------------------------
# checkpoint format: Wav2Vec2BertModel folders (or a head model's "wav2vec2_bert." prefix)


def build(cfg: dict, layers: list[int]) -> nn.Module:
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    return FrozenW2VBert(Wav2Vec2BertModel(Wav2Vec2BertConfig(**hf_fields(cfg))), layers)


def checkpoint_key(key: str) -> str | None:
    return "model." + key.removeprefix("wav2vec2_bert.")


FORMAT = CheckpointFormat(build, checkpoint_key, hidden="hidden_size", depth="num_hidden_layers", states_per_depth=1,
                          model_type="wav2vec2-bert", features="feature_projection_input_dim",
                          optional=("num_batches_tracked", "masked_spec_embed"),  # SpecAugment only
                          defaults={"feature_projection_input_dim": 160})  # Wav2Vec2BertConfig's


# ---------------------------------------------------------------------------------------------------------------
# front-end


def valid_frames(samples: int) -> int:
    """The extractor's attention mask: fbank frames // 2 (an odd last frame is paired with padding)."""
    return kaldi_frames(samples) // 2


def w2vbert_features(samples: np.ndarray) -> tuple[torch.Tensor, int]:
    """W2V-BERT 2.0 input: pad 160 each side, SeamlessM4T fbank (80 bins, povey, int16 scale), per-bin mean/var
    normalisation, pad frames to even, stack pairs -> 160-dim at 50 frames/s.

    Valid length = the extractor's attention mask = T100 // 2 (an odd last frame is paired with padding).

    Returns:
        `(ceil(T100 / 2), 160)` float32 and the valid frame count.
    """
    x = torch.nn.functional.pad(torch.from_numpy(samples).double(), (EDGE_PAD, EDGE_PAD)) * 2**15
    fb = kaldi_fbank(x, "povey", 80)  # (T100, 80)
    mean, var = fb.mean(dim=0, keepdim=True), fb.var(dim=0, keepdim=True, correction=1)
    fb = ((fb - mean) / torch.sqrt(var + 1e-7)).float()
    t100 = fb.shape[0]
    fb = torch.nn.functional.pad(fb, (0, 0, 0, t100 % 2))  # (2 * T50, 80)
    return fb.reshape(-1, 160), t100 // 2  # (T50, 160)


FRONT_END = FrontEnd(w2vbert_features, valid_frames)


# ---------------------------------------------------------------------------------------------------------------
# tiny checkpoint


def build_tiny(out_dir: Path, seed: int = 0, config: dict | None = None) -> None:
    """A Wav2Vec2BertModel folder (config, model.safetensors, preprocessor_config.json) with random weights: the
    family's tiny config, or `config` (e.g. its real_config for a full-size random checkpoint)."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    config = Wav2Vec2BertConfig(**(config or family("w2vbert").tiny_config))
    with torch.device("meta"):
        model = Wav2Vec2BertModel(config)
    cfg = {**config.to_diff_dict(), "architectures": ["Wav2Vec2BertModel"]}
    write_folder(Path(out_dir), cfg, random_state(model.state_dict(), seed))
    SeamlessM4TFeatureExtractor().to_json_file(str(Path(out_dir) / "preprocessor_config.json"))
