"""An exact set of row keys that many processes can share read-only: the keys sorted by a 64-bit hash, so a lookup
is a binary search (no hash table rebuilt per batch) and a hash match is confirmed against the key itself.

    done = KeySet.of([committed_shard.column("key"), ...])   # built once, in one task; shared via the object store
    done.contains(batch["key"])                               # numpy bool mask, exact

Its two arrays (hashes, keys) pickle as buffers, so a Ray object of it is mapped, not copied, by every reader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each key (blake2b: the same in every process, unlike Python's `hash`); a null hashes as ''."""
    return np.fromiter((int.from_bytes(hashlib.blake2b((k or "").encode(), digest_size=8).digest(), "little")
                        for k in _values(keys)), dtype=np.uint64, count=len(keys))


class KeySet:
    """Keys (strings; nulls ignored) sorted by `key_hashes`; `contains` is exact."""

    def __init__(self, keys: pa.Array | pa.ChunkedArray):
        keys = pc.unique(pc.drop_null(keys.cast(pa.string())))
        keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
        hashes = key_hashes(keys)
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.keys = keys.take(pa.array(order))

    @classmethod
    def of(cls, parts: Iterable[pa.Array | pa.ChunkedArray]) -> KeySet:
        """The keys of several arrays (e.g. the key column of each committed shard)."""
        chunks = [c.cast(pa.string()) for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
        return cls(pa.chunked_array(chunks, type=pa.string()) if chunks else pa.array([], pa.string()))

    def __len__(self) -> int:
        return len(self.hashes)

    def contains(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """A bool per key: is it in the set (a null never is)."""
        hashes = key_hashes(keys)
        lo = np.searchsorted(self.hashes, hashes, side="left")
        hi = np.searchsorted(self.hashes, hashes, side="right")
        found = np.zeros(len(keys), dtype=bool)
        for i in np.flatnonzero(hi > lo):  # a hash match: the key itself, or (rarely) another key with its hash
            key = keys[int(i)].as_py()
            found[i] = key is not None and key in self.keys.slice(lo[i], hi[i] - lo[i]).to_pylist()
        return found


def _values(keys: pa.Array | pa.ChunkedArray, chunk: int = 65536):
    """The keys as Python values, a slice at a time (a whole corpus's keys as one list would double the memory)."""
    for start in range(0, len(keys), chunk):
        yield from keys.slice(start, chunk).to_pylist()
