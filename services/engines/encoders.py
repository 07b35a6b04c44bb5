"""Frozen audio encoders as Ray actors: one encoder per actor, loaded once, called on batches of clips.

Ray Data uses `EncoderActor` as a callable class in `map_batches` (training data path); the Serve encoder
deployments wrap the same `encode_clips`. Batches carry each clip's front-end features (`feat_<enc>` flattened +
`feat_<enc>_shape`); the actor adds `states_<enc>`: the tapped hidden states `(L, T_i, D)` trimmed to the clip.
"""

from __future__ import annotations

import numpy as np
import torch

from alarm.audio.features import collate
from alarm.checkpoints import resolve_checkpoint
from alarm.config import EncoderConfig
from alarm.encoders.checkpoint import load_encoder


def load_frozen_encoder(name: str, cfg: EncoderConfig, device: str = "cpu"):
    folder = resolve_checkpoint(cfg.checkpoint, cfg.revision, expect=["config.json"])
    return load_encoder(name, folder, cfg.layers, cfg.hidden_size, device=device)


def encode_clips(encoder, name: str, feats: list[tuple[torch.Tensor, int]], device: str = "cpu") -> list[np.ndarray]:
    """Per-clip features -> per-clip tapped states `(L, T_i, D)` float32 (one padded encoder call)."""
    f = collate(name, feats)
    with torch.no_grad():
        states, lens = encoder(f.values.to(device), f.lens.to(device))  # (L, B, T, D), (B,)
    return [states[:, i, : int(n)].float().cpu().numpy() for i, n in enumerate(lens)]


class EncoderActor:
    """Ray Data callable class: adds `states_<name>` for every row of the batch."""

    def __init__(self, name: str, cfg_json: dict):
        torch.set_num_threads(max(1, torch.get_num_threads()))
        self.name = name
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = load_frozen_encoder(name, EncoderConfig.model_validate(cfg_json), self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key, shape_key = f"feat_{self.name}", f"feat_{self.name}_shape"
        feats = [
            (torch.from_numpy(np.asarray(flat, dtype=np.float32).reshape(tuple(shape[:-1]))), int(shape[-1]))
            for flat, shape in zip(batch[key], batch[shape_key], strict=True)
        ]
        states = encode_clips(self.encoder, self.name, feats, self.device)
        out = {k: v for k, v in batch.items() if k not in (key, shape_key)}
        out[f"states_{self.name}"] = _ragged(states)
        return out


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array of differently shaped arrays (what Ray Data stores as a variable-shaped tensor column)."""
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out
