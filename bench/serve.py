"""Serving latency and throughput: gRPC and OpenAI-compatible HTTP through Ray Serve vs the same pipeline
in-process, and encoder batching.

    python bench/serve.py [--preset tiny] [--requests-per-level 16] [key=value ...]

Both paths run the same code (services/serve/core.py) on the same requests: a 5 s clip and a question, greedy,
`max_tokens` fixed so every request decodes the same number of tokens. For concurrency 1, 4 and 16 it prints p50
and p95 latency and requests/s for each path, the ratio gRPC/in-process (the cost of the distributed path: gRPC,
the proxy, object transfers between deployments) and the p50 overhead of gRPC over in-process, and the same for the
HTTP API (bench/openai_load.py: the `openai` client, base64 audio in JSON). The in-process baseline runs first,
alone, then the Serve application on a local Ray, in the layout the preset sets (`deployments.colocate`: false, a
deployment per stage; true, one `audio` deployment; all, every stage in the ingress; pass e.g.
`deployments.colocate=all` to measure another layout on the same machine). Encoder batching: the whisper
and w2vbert encoder deployments are deployed twice,
`max_batch_size` 1 and 8, and called with 16 concurrent clips; the ratio is the clips/s gain from @serve.batch,
and the batch sizes the deployment actually ran (its `stats()`) show how far the 16 clips were batched.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile as sf

from alarm.cli import add_config_args, config_from_args
from alarm.config import ServeConfig

LEVELS = (1, 4, 16)


def clip(i: int, seconds: float = 5.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def summary(lat_s: list[float], wall_s: float) -> dict:
    lat = sorted(lat_s)
    return {"p50_ms": 1e3 * statistics.median(lat), "p95_ms": 1e3 * lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "rps": len(lat) / wall_s}


def in_process(cfg: ServeConfig, n: int, max_tokens: int) -> dict[int, dict]:
    from alarm.client import make_request
    from services.serve.local import LocalPipeline

    async def run() -> dict[int, dict]:
        pipe = await LocalPipeline.create(cfg)
        out = {}
        try:
            await pipe.generate(make_request(clip(0), "warm up", max_tokens=4))
            for c in LEVELS:
                sem, lat = asyncio.Semaphore(c), []

                async def one(i: int, sem=sem, lat=lat):
                    async with sem:
                        t0 = time.perf_counter()
                        r = await pipe.generate(make_request(clip(i), f"What is sound {i}?", max_tokens=max_tokens,
                                                             temperature=0.0))
                        assert r.usage.total_tokens > 0
                        lat.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(n)))
                out[c] = summary(lat, time.perf_counter() - t0)
        finally:
            await pipe.aclose()
        return out

    return asyncio.run(run())


def through_grpc(cfg: ServeConfig, n: int, max_tokens: int, port: int) -> dict[int, dict]:
    from alarm.client import AlarmClient

    out = {}
    with AlarmClient(f"127.0.0.1:{port}", timeout_s=600) as client:
        client.generate(clip(0), "warm up", max_tokens=4)
        for c in LEVELS:
            lat = []

            def one(i: int, lat=lat):
                t0 = time.perf_counter()
                r = client.generate(clip(i), f"What is sound {i}?", max_tokens=max_tokens, temperature=0.0)
                assert r.usage.total_tokens > 0
                lat.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                list(pool.map(one, range(n)))
            out[c] = summary(lat, time.perf_counter() - t0)
    return out


def encoder_batching(cfg: ServeConfig, n: int) -> dict[str, tuple[float, float, dict[int, int]]]:
    """clips/s of one encoder deployment at max_batch_size 1 and 8, n clips in flight, and the batch sizes the
    max_batch_size 8 deployment ran them in (its stats() over the timed calls: {size: batches})."""
    from ray import serve

    from alarm.audio.decode import load_audio
    from services.serve.deployments import EncoderServer

    waves = [load_audio(clip(i)) for i in range(n)]
    out = {}
    for name in ("whisper", "w2vbert"):
        rates, sizes = [], {}
        for bs in (1, 8):
            app = EncoderServer.options(name=f"bench-{name}-{bs}", ray_actor_options={"num_cpus": 1},
                                        max_ongoing_requests=32).bind(
                name, cfg.model.encoders[name].model_dump(mode="json"), cfg.model.audio.resample_quality, bs, 0.02,
                cfg.deployments.free_memory)
            handle = serve.run(app, name=f"bench-{name}-{bs}", route_prefix=None)
            [r.result() for r in [handle.encode.remote(w) for w in waves[:4]]]  # warm-up
            before = Counter(handle.stats.remote().result()["batch_sizes"])
            t0 = time.perf_counter()
            [r.result() for r in [handle.encode.remote(w) for w in waves]]
            rates.append(n / (time.perf_counter() - t0))
            sizes = dict(sorted((Counter(handle.stats.remote().result()["batch_sizes"]) - before).items()))
            serve.delete(f"bench-{name}-{bs}")
        out[name] = (rates[0], rates[1], sizes)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser, "serve", "tiny", ServeConfig)
    parser.add_argument("--requests-per-level", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--grpc-port", type=int, default=9310)
    args = parser.parse_args()
    cfg = config_from_args(args, ServeConfig, "serve")
    n = args.requests_per_level
    for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
                 "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
        os.environ.setdefault(k, v)
    import torch

    torch.set_num_threads(1)
    layout = {"stages": "one deployment per stage", "audio": "colocated audio (ingress, audio, llm)",
              "one": "everything in the ingress"}[cfg.deployments.layout]
    print(f"model {cfg.model.name}, backend {cfg.llm.backend}, layout {layout}, {n} requests per level, 5 s clips, "
          f"max_tokens {args.max_tokens}, greedy", flush=True)
    local = in_process(cfg, n, args.max_tokens)

    import ray
    from ray import serve
    from ray.serve.api import _run
    from ray.serve.config import gRPCOptions

    from alarm.client import AlarmClient
    from services.connect import init_ray
    from services.serve.app import GRPC_SERVICERS, build_app

    init_ray(cfg.ray.model_copy(update={"num_cpus": cfg.ray.num_cpus or 4}))
    serve.start(http_options={"host": "127.0.0.1", "port": args.grpc_port - 1000},
                grpc_options=gRPCOptions(port=args.grpc_port, grpc_servicer_functions=GRPC_SERVICERS))
    _run(build_app(cfg), name=cfg.name, route_prefix="/", _blocking=True)
    with AlarmClient(f"127.0.0.1:{args.grpc_port}") as c:
        while c.health() != "SERVING":
            time.sleep(0.5)
    remote = through_grpc(cfg, n, args.max_tokens, args.grpc_port)
    from openai_load import through_http  # bench/openai_load.py (this script's folder is on sys.path)

    http = through_http(clip, summary, LEVELS, n, args.max_tokens, args.grpc_port - 1000)
    serve.delete(cfg.name)
    batching = encoder_batching(cfg, 16)
    serve.shutdown()
    ray.shutdown()

    print("\nconcurrency | in-process p50 / p95 ms, req/s | gRPC p50 / p95 ms, req/s | HTTP p50 / p95 ms, req/s | "
          "req/s ratio gRPC/in-process, HTTP/in-process | gRPC p50 overhead")
    for c in LEVELS:
        a, b, h = local[c], remote[c], http[c]
        print(f"{c:>11} | {a['p50_ms']:7.0f} / {a['p95_ms']:7.0f}, {a['rps']:5.2f} | "
              f"{b['p50_ms']:7.0f} / {b['p95_ms']:7.0f}, {b['rps']:5.2f} | "
              f"{h['p50_ms']:7.0f} / {h['p95_ms']:7.0f}, {h['rps']:5.2f} | "
              f"{b['rps'] / a['rps']:.2f}, {h['rps'] / a['rps']:.2f} | {100 * (b['p50_ms'] / a['p50_ms'] - 1):+.0f}%")
    print("\nencoder deployment, 16 clips in flight | clips/s batch 1 | clips/s batch 8 | ratio | batch 8: "
          "batches run, by size")
    for name, (one, eight, sizes) in batching.items():
        seen = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        print(f"{name:>38} | {one:15.1f} | {eight:15.1f} | {eight / one:5.2f} | {seen}")


if __name__ == "__main__":
    main()
