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
from alarm.encoders.states import StateCache, encoder_fingerprint


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
    """Ray Data callable class: adds `states_<name>` for every row of the batch.

    cache_dir: a local folder of states by clip (`alarm.encoders.states`): clips found there are not encoded
    again, the others are added. None: encode every clip.
    """

    def __init__(self, name: str, cfg_json: dict, cache_dir: str | None = None):
        torch.set_num_threads(max(1, torch.get_num_threads()))
        self.name = name
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        cfg = EncoderConfig.model_validate(cfg_json)
        self.encoder = load_frozen_encoder(name, cfg, self.device)
        self.cache = None
        if cache_dir is not None:
            folder = resolve_checkpoint(cfg.checkpoint, cfg.revision, expect=["config.json"])
            self.cache = StateCache(cache_dir, encoder_fingerprint(name, cfg_json, folder))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key, shape_key = f"feat_{self.name}", f"feat_{self.name}_shape"
        feats = [
            (torch.from_numpy(np.asarray(flat, dtype=np.float32).reshape(tuple(shape[:-1]))), int(shape[-1]))
            for flat, shape in zip(batch[key], batch[shape_key], strict=True)
        ]
        states = self._states(feats)
        out = {k: v for k, v in batch.items() if k not in (key, shape_key)}
        out[f"states_{self.name}"] = _ragged(states)
        return out

    def _states(self, feats: list[tuple[torch.Tensor, int]]) -> list[np.ndarray]:
        if self.cache is None:
            return encode_clips(self.encoder, self.name, feats, self.device)
        keys = [self.cache.key(f.numpy(), n) for f, n in feats]
        found = {k: self.cache.load(k) for k in dict.fromkeys(keys)}
        todo = [keys.index(k) for k, s in found.items() if s is None]  # a clip asked twice is encoded once
        if todo:
            for i, s in zip(todo, encode_clips(self.encoder, self.name, [feats[i] for i in todo], self.device),
                            strict=True):
                self.cache.save(keys[i], s)
                found[keys[i]] = s
        return [found[k] for k in keys]


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array of differently shaped arrays (what Ray Data stores as a variable-shaped tensor column)."""
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out
