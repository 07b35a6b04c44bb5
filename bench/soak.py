"""A bounded soak of the Serve application: resident memory per deployment while mixed traffic runs.

    python bench/soak.py [--requests 2000] [--burst 64] [--max-minutes 30] [--preset tiny] [key=value ...]

Serves the preset on a local Ray (ports 8103/9103, 127.0.0.1 only), warms it up with one burst of every request
kind, then sends `--requests` requests in bursts of `--burst` concurrent calls: unary and streamed questions about
clips of 1-8 s, text-only questions, two-adapter ensembles, and bad input (empty prompt, undecodable audio, an
out-of-range temperature, bytes that do not parse, a 34 MiB message). It prints the resident set size (RSS, from
/proc) of every replica, the proxy and the controller at the start (after warm-up), the middle and the end, and the
growth from the middle to the end: after warm-up it should be flat. Then every process returns its free heap to the
system (glibc `malloc_trim(0)`) and is measured again ("trimmed"): memory that comes back was the allocator's
high-water mark (freed, kept for reuse), memory that stays is held by live objects, i.e. a leak if it grows with
the request count. `--arena-max N` starts Ray with `MALLOC_ARENA_MAX=N` (every process of the local Ray inherits
it) to compare. The statuses are counted too (bad input must answer INVALID_ARGUMENT / RESOURCE_EXHAUSTED, the
excess over the queue limits RESOURCE_EXHAUSTED, everything else OK). Every loop is bounded by `--requests` and by
`--max-minutes`; the machine's processes are read locally, so run it on a single-node Ray.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alarm.cli import add_config_args, config_from_args
from alarm.config import ServeConfig
from services.serve.load import clip as tone

GRPC_PORT, HTTP_PORT = 9103, 8103
KINDS = ("unary", "stream", "text", "ensemble", "empty prompt", "undecodable audio", "bad temperature",
         "not a request", "oversize")


def clip(i: int) -> bytes:
    return tone(i, seconds=1 + i % 8)


def one(client, i: int) -> str:
    """Send request i (its kind is KINDS[i % len(KINDS)]); the status code name."""
    import grpc

    kind = KINDS[i % len(KINDS)]
    try:
        if kind == "unary":
            client.generate(clip(i), "What do you hear?", max_tokens=64)
        elif kind == "stream":
            list(client.stream(clip(i), "Describe it.", return_reasoning=True, max_tokens=64))
        elif kind == "text":
            client.generate(None, f"Say something about number {i}.", max_tokens=32)
        elif kind == "ensemble":
            client.generate(clip(i), "What is it?", ensemble=["tiny", "tiny-b"], max_tokens=32)
        elif kind == "empty prompt":
            client.generate(clip(i), " ")
        elif kind == "undecodable audio":
            client.generate(b"not audio" * 100, "What is it?")
        elif kind == "bad temperature":
            list(client.stream(clip(i), "What is it?", temperature=7.5))
        elif kind == "not a request":
            client.channel.unary_unary("/alarm.v1.AlarmService/Generate")(b"\x1a\xff\xff", timeout=60)
        else:  # over the server's message limit (32 MiB): refused by the proxy's gRPC server
            client.generate(b"RIFF" + bytes(34 * 2**20), "What is it?")
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def processes() -> dict[str, int]:
    """name -> pid of every Serve replica (`<deployment>#<n>`), the proxy and the controller on this node."""
    import ray

    pids, seen = {}, Counter()
    for actor in sorted(ray.util.list_named_actors(all_namespaces=True), key=lambda a: a["name"]):
        name = actor["name"]
        if name.startswith("SERVE_REPLICA::"):
            deployment = name.split("#")[1]
            label = f"{deployment}#{seen[deployment]}"
            seen[deployment] += 1
        elif name.startswith("SERVE_PROXY_ACTOR"):
            label = "proxy"
        elif name == "SERVE_CONTROLLER_ACTOR":
            label = "controller"
        else:
            continue
        handle = ray.get_actor(name, namespace=actor["namespace"])
        pids[label] = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
    return pids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: rss_mb(pid) for name, pid in pids.items()}


def trim() -> int:
    """glibc's malloc_trim(0) in this process: free heap pages go back to the system (1 if any did)."""
    return ctypes.CDLL("libc.so.6").malloc_trim(0)


def trimmed(pids: dict[str, int]) -> dict[str, float]:
    """RSS of every process after malloc_trim(0) ran in it (through the actor's own worker)."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(("SERVE_REPLICA::", "SERVE_PROXY_ACTOR")) or \
                actor["name"] == "SERVE_CONTROLLER_ACTOR":
            handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
            ray.get(handle.__ray_call__.remote(lambda self: trim()), timeout=60)
    return snapshot(pids)


def soak(client, pids: dict[str, int], requests: int, burst: int, deadline: float) -> tuple[list[dict], Counter]:
    """Bursts of `burst` concurrent requests; snapshots at the start, the middle and the end."""
    snaps, codes, sent = [snapshot(pids)], Counter(), 0
    with ThreadPoolExecutor(burst) as pool:
        while sent < requests and time.monotonic() < deadline:
            n = min(burst, requests - sent)
            for i, code in zip(range(sent, sent + n), pool.map(lambda i: one(client, i), range(sent, sent + n)),
                               strict=True):
                codes[(KINDS[i % len(KINDS)], code)] += 1
            sent += n
            if len(snaps) == 1 and sent >= requests // 2:
                snaps.append(snapshot(pids))
            print(f"  {sent}/{requests} requests", file=sys.stderr, flush=True)
    if len(snaps) == 1:
        snaps.append(snapshot(pids))
    snaps.append(snapshot(pids))
    return snaps, codes


def report(snaps: list[dict], codes: Counter, sent: int, seconds: float) -> None:
    start, middle, end, trim_end = snaps
    print(f"\n{sent} requests in {seconds:.0f} s; RSS in MB after warm-up (start), halfway, at the end, and at the "
          f"end after malloc_trim(0)")
    print(f"{'process':>22} | {'start':>7} | {'middle':>7} | {'end':>7} | {'trimmed':>7} | middle->end | start->end")
    rows = [*((name, start[name], middle[name], end[name], trim_end[name]) for name in sorted(start)),
            ("all", *(sum(snap.values()) for snap in snaps))]
    for name, s, m, e, t in rows:
        print(f"{name:>22} | {s:7.0f} | {m:7.0f} | {e:7.0f} | {t:7.0f} | {e - m:+11.0f} | {e - s:+10.0f}")
    print("\nstatuses by request kind:")
    for kind in KINDS:
        print(f"{kind:>22}: " + ", ".join(f"{c} {n}" for (k, c), n in sorted(codes.items()) if k == kind))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/soak.py", description=__doc__.split("\n")[0])
    add_config_args(parser, "serve", "tiny", ServeConfig)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=64, help="concurrent requests per burst")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="stop sending after this long")
    parser.add_argument("--arena-max", type=int, help="MALLOC_ARENA_MAX for every process of the local Ray")
    args = parser.parse_args()
    if args.arena_max:
        os.environ["MALLOC_ARENA_MAX"] = str(args.arena_max)  # before Ray starts: its workers inherit it
    cfg = config_from_args(args, ServeConfig, "serve").model_copy(update={"grpc_port": GRPC_PORT,
                                                                         "http_port": HTTP_PORT})
    os.environ.setdefault("RAY_SERVE_GRPC_MAX_MESSAGE_SIZE", str(cfg.limits.max_message_bytes))
    import ray
    from ray import serve
    from ray.serve.api import _run
    from ray.serve.config import gRPCOptions

    from alarm.client import AlarmClient
    from services.connect import init_ray
    from services.serve.app import GRPC_SERVICERS, build_app

    init_ray(cfg.ray)
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT},
                grpc_options=gRPCOptions(port=GRPC_PORT, grpc_servicer_functions=GRPC_SERVICERS,
                                         request_timeout_s=cfg.request_timeout_s))
    try:
        _run(build_app(cfg), name=cfg.name, route_prefix="/", _blocking=True)
        with AlarmClient(f"127.0.0.1:{GRPC_PORT}", timeout_s=300) as client:
            for _ in range(1800):  # at most 15 minutes to load
                if client.health() == "SERVING":
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("the application did not turn SERVING in 15 minutes")
            pids = processes()
            print(f"warm-up: {len(KINDS) * 8} requests; processes: {', '.join(sorted(pids))}", file=sys.stderr)
            with ThreadPoolExecutor(args.burst) as pool:
                list(pool.map(lambda i: one(client, i), range(len(KINDS) * 8)))
            t0 = time.monotonic()
            snaps, codes = soak(client, pids, args.requests, args.burst, t0 + 60 * args.max_minutes)
            seconds = time.monotonic() - t0
            report([*snaps, trimmed(pids)], codes, sum(codes.values()), seconds)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
