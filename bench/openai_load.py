"""The HTTP path of bench/serve.py: the same requests as its gRPC path, sent with the official `openai` client to
the OpenAI-compatible API of the same Serve application (audio as a base64 `input_audio` part)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def through_http(clip: Callable[[int], bytes], summary: Callable, levels: tuple[int, ...], n: int, max_tokens: int,
                 port: int) -> dict[int, dict]:
    """{concurrency: summary(latencies, wall)} for `n` requests per level, as bench/serve.py's through_grpc."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)

    def ask(i: int, prompt: str, tokens: int):
        audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip(i)).decode(), "format": "wav"}}
        return client.chat.completions.create(
            model="", messages=[{"role": "user", "content": [{"type": "text", "text": prompt}, audio]}],
            max_completion_tokens=tokens, temperature=0.0)

    ask(0, "warm up", 4)
    out = {}
    for c in levels:
        lat = []

        def one(i: int, lat=lat):
            t0 = time.perf_counter()
            r = ask(i, f"What is sound {i}?", max_tokens)
            assert r.usage.completion_tokens > 0
            lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(c) as pool:
            list(pool.map(one, range(n)))
        out[c] = summary(lat, time.perf_counter() - t0)
    client.close()
    return out
