"""Frozen-encoder states on local disk, keyed by what produced them: a clip is encoded once, then every run that
reads it with the same encoder (ablations on one corpus, questions that share a clip, reruns) loads the states.

    cache = StateCache(folder, encoder_fingerprint("whisper", cfg.model_dump(mode="json"), checkpoint_folder))
    key = cache.key(features, n)           # features (T, F) as the encoder takes them, n valid frames
    states = cache.load(key)               # (L, T', D) float32 as encoded, or None
    cache.save(key, states)

The key is a hash of the encoder's fingerprint (its config and its checkpoint files' names and sizes) and of the
clip's front-end features, so a changed checkpoint, tapped layer or clip never reads stale states. Entries are
written atomically (concurrent actors may write the same one) and stored in float32, exactly as encoded, so a
cached run trains on the same numbers as an uncached one.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from alarm.files import atomic_write


def encoder_fingerprint(name: str, cfg_json: dict, folder: str | Path) -> str:
    """A hash of the encoder `name`, its config (checkpoint, layers, widths) and its checkpoint folder's files."""
    h = hashlib.sha256(json.dumps([name, cfg_json], sort_keys=True).encode())
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(folder)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


class StateCache:
    """`folder/<fingerprint>/<key[:2]>/<key>.npy` for each clip one encoder has encoded."""

    def __init__(self, folder: str | Path, fingerprint: str):
        self.root = Path(folder) / fingerprint
        self.fingerprint = fingerprint

    def key(self, features: np.ndarray, n: int) -> str:
        a = np.ascontiguousarray(features)
        h = hashlib.sha256(f"{self.fingerprint}:{a.dtype}:{a.shape}:{int(n)}".encode())
        h.update(a.tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def load(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        return np.load(path, allow_pickle=False) if path.exists() else None

    def save(self, key: str, states: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(states, dtype=np.float32), allow_pickle=False)
        atomic_write(self._path(key), buf.getvalue())
