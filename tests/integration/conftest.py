"""One local Ray cluster for all integration tests (a fresh one costs 5-9 s), oversubscribed to 4 logical CPUs
so actor pools never starve Ray Data's read/write tasks on a 2-core machine."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """Depends on the S3 server so its endpoint and credentials reach every worker (env vars set after
    ray.init do not). test_multinode.py stops it while its own cluster runs and starts it again (`start_ray`)."""
    yield start_ray()
    import ray

    ray.shutdown()


def start_ray():
    """The shared local Ray of the integration tests (one node, 4 logical CPUs)."""
    for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
                 "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1",
                 "AWS_EC2_METADATA_DISABLED": "true",
                 "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(8 * 2**20)}.items():  # read by Serve's gRPC proxy
        os.environ.setdefault(k, v)
    import ray

    env_vars = {k: os.environ[k] for k in ("ALARM_CACHE", "ALARM_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                           "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION") if k in os.environ}
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             # idle workers stay up to be reused (their imports done): at the default limit, the number of CPUs,
             # the actors here leave none, and each Ray Data task started a new process (a 7-step training run:
             # 78 -> 63 s)
             _system_config={"num_workers_soft_limit": 8},
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env_vars}})
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


@pytest.fixture(scope="session")
def tiny_corpus(ray_cluster, tmp_path_factory) -> Path:
    """A small corpus from the default generation recipe (24 synthetic clips), shared by the training tests."""
    from alarm.config import CorpusConfig, load_config
    from services.corpus.pipeline import run

    out = tmp_path_factory.mktemp("corpus")
    run(load_config(CorpusConfig, "tiny", [f"output={out}", "run_id=c", "sources.0.num_clips=24"],
                    section="corpus"))
    return out / "c"


@pytest.fixture
def ray_deprecations():
    """While the test runs, records Ray's deprecation warnings (Ray 2.64 removes what Ray 2.60 deprecates) and any
    deprecation warning that points at our code; call it for them as 'file:line: message' strings. Warnings Ray
    raises about its own internals (ray/data/context.py) are not ours to fix and are left out."""
    from ray.util.annotations import RayDeprecationWarning

    def ours_or_rays(w: warnings.WarningMessage) -> bool:
        return issubclass(w.category, RayDeprecationWarning) or (
            issubclass(w.category, DeprecationWarning) and w.filename.startswith(str(ROOT)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lambda: [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if ours_or_rays(w)]
