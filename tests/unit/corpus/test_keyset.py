"""KeySet: an exact set of row keys, looked up by binary search over 64-bit hashes; a hash match is checked against
the key, so two keys with one hash never mask each other."""

import hashlib
import pickle

import numpy as np
import pyarrow as pa

from alarm.corpus import keyset
from alarm.corpus.keyset import KeySet


def test_contains_exactly_the_keys_given():
    keys = [f"src/{i:06d}" for i in range(5000)]
    done = KeySet.of([pa.array(keys[:3000]), pa.chunked_array([keys[3000:4000], keys[4000:]]), pa.array(keys[:10])])
    assert len(done) == 5000  # repeats counted once
    probe = pa.array(keys[::7] + ["src/x", "other/000001", None, ""])
    assert done.contains(probe).tolist() == [True] * len(keys[::7]) + [False] * 4
    assert KeySet.of([]).contains(pa.array(["a"])).tolist() == [False]
    assert KeySet(pa.array(["a", None])).contains(pa.array([None, "a"])).tolist() == [False, True]


def test_colliding_hashes_are_told_apart_by_the_key(monkeypatch):
    real = keyset.key_hashes
    monkeypatch.setattr(keyset, "key_hashes", lambda keys: real(keys) % np.uint64(3))  # 3 hash values for all keys
    done = KeySet(pa.array(["a", "b", "c", "d", "e"]))
    assert done.contains(pa.array(["e", "f", "a", "zz", "c", None])).tolist() == [True, False, True, False, True,
                                                                                     False]


def test_hashes_are_the_same_in_every_process_and_a_pickled_set_answers_the_same():
    assert keyset.key_hashes(pa.array(["esc50/1-100038-A-14.wav"])).tolist() == [
        int.from_bytes(hashlib.blake2b(b"esc50/1-100038-A-14.wav", digest_size=8).digest(), "little")]
    done = KeySet(pa.array([f"k{i}" for i in range(100)]))
    again = pickle.loads(pickle.dumps(done, protocol=5))
    probe = pa.array([f"k{i}" for i in range(95, 105)])
    assert again.contains(probe).tolist() == done.contains(probe).tolist() == [True] * 5 + [False] * 5
