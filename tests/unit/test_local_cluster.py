"""The local multi-node cluster without starting it: node types read from the rendered manifests the way KubeRay's
autoscaler reads them, scaled to this machine; the GPU stand-in; the refusal of local paths on a multi-node
cluster; what the manifests declare about their size. (tests/integration/test_multinode.py starts one.)"""

from __future__ import annotations

import pytest

from alarm.checkpoints import is_local
from alarm.cluster import load_cluster_config, plan, ray_cluster, render
from alarm.config import CorpusConfig, TrainConfig, load_config
from alarm.errors import InvalidInput
from services import connect
from services.cluster import LOCAL_KEY, LocalCluster, autoscaling_config, kill_node, local_resources

CLUSTERS = ("interactive", "generate", "train", "serve")


def local(preset: str, *overrides: str) -> LocalCluster:
    cfg = load_cluster_config(preset, list(overrides))
    return LocalCluster.from_ray_cluster(ray_cluster(plan(cfg), cfg.local.cluster), cfg.local, cfg.env)


def test_node_types_are_the_manifests_worker_groups_on_this_machine():
    c = local("tiny-gpu")
    types = c.config["available_node_types"]
    assert set(types) == {"ray.head.default", "gpu"}
    assert types["ray.head.default"]["resources"] == {"CPU": 0, "object_store_memory": 512 * 2**20}
    gpu = types["gpu"]
    # the interactive RayCluster of tiny-gpu: 4-CPU pods with one GPU each, 0..3 of them (docs/deploy.md)
    assert gpu["resources"] == {"CPU": 4, "fake_gpu": 1, "object_store_memory": 512 * 2**20}
    assert (gpu["min_workers"], gpu["max_workers"]) == (0, 3)
    assert c.config["idle_timeout_minutes"] == 0.5  # autoscaler.idle_timeout_s: 30
    assert c.config["provider"]["type"] == "external" and c.config["provider"]["launch_multiple"]
    assert c.settings() == {"gpu_resource": "fake_gpu", "nodes": 4}


@pytest.mark.parametrize("which", CLUSTERS)
@pytest.mark.parametrize("preset", ["tiny", "tiny-gpu", "alarm-ca"])
def test_every_rendered_cluster_runs_locally_with_the_manifests_bounds(preset, which):
    cfg = load_cluster_config(preset, [f"local.cluster={which}"])
    manifest = ray_cluster(plan(cfg), which)
    config = autoscaling_config(manifest, cfg.local)  # validated against Ray's cluster schema
    (group,) = manifest["spec"]["workerGroupSpecs"]
    worker = config["available_node_types"][group["groupName"]]
    assert (worker["min_workers"], worker["max_workers"]) == (group["minReplicas"], group["maxReplicas"])
    assert config["idle_timeout_minutes"] * 60 == cfg.autoscaler.idle_timeout_s
    assert 1 <= worker["resources"]["CPU"] <= cfg.local.max_node_cpus
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert worker["resources"].get("fake_gpu", 0) == int(limits.get("nvidia.com/gpu", 0))
    assert "GPU" not in worker["resources"] and "memory" not in worker["resources"]


def test_cpus_scale_by_one_factor_that_fits_the_largest_pod():
    c = local("alarm-ca", "head.ray_num_cpus=2")  # 16-CPU worker pods, a head that offers 2 CPUs
    notes, types = c.config[LOCAL_KEY], c.config["available_node_types"]
    assert notes["cpu_factor"] == 0.25 and notes["pods"]["gpu"]["CPU"] == 16
    assert types["gpu"]["resources"]["CPU"] == 4 and types["ray.head.default"]["resources"]["CPU"] == 1
    assert local("alarm-ca", "local.max_node_cpus=8").config["available_node_types"]["gpu"]["resources"]["CPU"] == 8
    assert local("tiny").config[LOCAL_KEY]["cpu_factor"] == 1  # small pods stay as they are


def test_local_resources_keep_custom_resources_and_give_every_pod_with_cpus_one():
    pod = {"CPU": 1, "GPU": 2, "memory": 2**33, "accel_slot": 3}
    assert local_resources(pod, 0.25, "fake_gpu", 100) == {"CPU": 1, "fake_gpu": 2, "accel_slot": 3,
                                                           "object_store_memory": 100}
    assert local_resources({"CPU": 0}, 0.25, "fake_gpu", 100)["CPU"] == 0


def test_the_manifests_declare_the_most_nodes_their_cluster_can_have():
    docs = [d for text in render("tiny-gpu").values() for d in __import__("yaml").safe_load_all(text)]
    for doc in (d for d in docs if d["kind"] in ("RayService", "RayJob", "RayCluster")):  # not the monitor, front
        spec = doc["spec"].get("rayClusterConfig") or doc["spec"].get("rayClusterSpec") or doc["spec"]
        nodes = 1 + spec["workerGroupSpecs"][0]["maxReplicas"]
        pods = [spec["headGroupSpec"]["template"], spec["workerGroupSpecs"][0]["template"]]
        for pod in pods:
            env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
            assert env["ALARM_CLUSTER_NODES"] == str(nodes), doc["metadata"]["name"]


def test_a_config_says_gpu_once_and_the_cluster_decides_the_resource(monkeypatch):
    monkeypatch.delenv("ALARM_GPU_RESOURCE", raising=False)
    assert connect.gpu_options(0.5) == {"num_gpus": 0.5} and connect.real_gpus()
    assert connect.gpu_options(0) == {}
    monkeypatch.setenv("ALARM_GPU_RESOURCE", "fake_gpu")
    assert connect.gpu_options(0.5) == {"resources": {"fake_gpu": 0.5}} and not connect.real_gpus()


@pytest.mark.parametrize("uri, local_path", [
    ("runs", True), ("/data/corpus", True), ("./org/name", True), ("file:///data/a.wav", True), ("s3://b/p", False),
    ("tiny://qwen3", False), ("pretrained://whisper-tiny.en", False), ("Qwen/Qwen3-4B-Thinking-2507", False),
    ("https://example.com/a.wav", False),
])
def test_what_counts_as_a_local_path(uri, local_path):
    assert is_local(uri) is local_path


def test_local_paths_are_refused_on_a_multi_node_cluster_unless_shared(monkeypatch):
    cfg = load_config(CorpusConfig, "tiny", ["output=/tmp/out"], section="corpus")
    monkeypatch.setattr(connect, "max_nodes", lambda ray_cfg: (4, "1 node(s) alive, up to 4 as it autoscales"))
    with pytest.raises(InvalidInput, match=r"output=/tmp/out: local path\(s\), but this job runs on a Ray cluster "
                                           r"of more than one node \(1 node\(s\) alive, up to 4.*storage.shared=true"):
        connect.check_shared_paths(cfg.ray, cfg.node_paths(), cfg.storage.shared)
    connect.check_shared_paths(cfg.ray, cfg.node_paths(), shared=True)
    s3 = load_config(CorpusConfig, "tiny", ["output=s3://b/corpora"], section="corpus")
    connect.check_shared_paths(s3.ray, s3.node_paths(), s3.storage.shared)  # tiny:// builds on each node
    train = load_config(TrainConfig, "tiny", ["output=s3://b/t", "corpus=/data/c"], section="train")
    with pytest.raises(InvalidInput, match=r"^corpus=/data/c: local path"):
        connect.check_shared_paths(train.ray, train.node_paths(), train.storage.shared)
    monkeypatch.setattr(connect, "max_nodes", lambda ray_cfg: (1, "1 nodes alive"))
    connect.check_shared_paths(cfg.ray, cfg.node_paths(), cfg.storage.shared)


def test_a_ray_started_for_the_command_is_one_node(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # the whole suite runs in one process, and integration tests collected earlier may leave Ray initialized
    monkeypatch.setattr(connect.ray, "is_initialized", lambda: False)
    cfg = load_config(CorpusConfig, "tiny", [], section="corpus")
    assert connect.max_nodes(cfg.ray)[0] == 1
    n, why = connect.max_nodes(cfg.ray.model_copy(update={"address": "ray://head:10001"}))
    assert n > 1 and "Ray Client" in why


def test_node_paths_name_every_path_a_job_opens():
    corpus = load_config(CorpusConfig, "tiny", ["sources.0={kind: manifest, name: m, path: /d/m.jsonl}"],
                         section="corpus")  # read in Ray tasks, on any node; its rows' audio sits beside it
    assert corpus.node_paths() == {"output": corpus.output, "engine.checkpoint": "tiny://qwen3-scripted",
                                   "sources.0.path": "/d/m.jsonl"}
    train = load_config(TrainConfig, "tiny", ["corpus=c", "model=tiny-whisper", "init_adapter=/a"], section="train")
    assert set(train.node_paths()) == {"output", "corpus", "init_adapter", "model.llm.checkpoint",
                                       "model.encoders.whisper.checkpoint"}


def test_the_head_is_never_killed_as_a_worker():
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    with pytest.raises(ValueError, match="head"):
        kill_node(FAKE_HEAD_NODE_ID)


def test_audio_files_that_rows_name_must_reach_every_node(monkeypatch, tmp_path):
    import pyarrow as pa

    from services.storage import RunStore
    from services.train.data import audio_paths

    monkeypatch.setattr(connect, "max_nodes", lambda ray_cfg: (3, "3 nodes alive"))
    local = ["output=s3://b/c", "engine.checkpoint=tiny://qwen3-scripted",
             "sources.0={kind: manifest, name: m, path: /data/m.jsonl}"]
    cfg = load_config(CorpusConfig, "tiny", local, section="corpus")
    with pytest.raises(InvalidInput, match=r"^sources.0.path=/data/m.jsonl: local path"):
        connect.check_shared_paths(cfg.ray, cfg.node_paths(), cfg.storage.shared)  # read on a worker node
    cfg = load_config(CorpusConfig, "tiny", [*local[:2], "sources.0={kind: manifest, name: m, path: s3://b/m.jsonl}"],
                      section="corpus")
    connect.check_shared_paths(cfg.ray, cfg.node_paths(), cfg.storage.shared)
    store = RunStore(str(tmp_path / "c"))
    store.commit(pa.table({"key": ["a", "b", "c"], "audio_uri": ["/x/a.wav", None, "s3://b/c.wav"]}),
                 "part-001-x-000000.parquet")
    assert audio_paths(store) == {"the audio_uri of 1 corpus rows, e.g.": "/x/a.wav"}  # rows without bytes


def test_the_local_head_is_the_head_whatever_type_name_the_autoscaler_reports(monkeypatch):
    """The autoscaler reported the local head as node_<id>: counted as a worker, the drills waited for a
    scale-down that had happened."""
    from types import SimpleNamespace

    import ray.autoscaler.v2.sdk as sdk
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FAKE_HEAD_NODE_TYPE

    from services.cluster import nodes

    head = SimpleNamespace(node_id=FAKE_HEAD_NODE_ID, ray_node_type_name=f"node_{FAKE_HEAD_NODE_ID}")
    worker = SimpleNamespace(node_id="f" * 55 + "00002", ray_node_type_name="gpu")
    status = SimpleNamespace(active_nodes=[worker], idle_nodes=[head], pending_launches=[], pending_nodes=[])
    monkeypatch.setattr(sdk, "get_cluster_status", lambda gcs: status)
    n = nodes("127.0.0.1:1")
    assert n.running == {"gpu": 1, FAKE_HEAD_NODE_TYPE: 1} and n.ids["gpu"] == [worker.node_id]
    assert n.workers() == 1  # what the drills wait on: the head is not a worker node
