"""The local cluster's provider gives every worker node a runtime-env folder of its own (services.local_provider):
two fake nodes sharing one folder delete each other's unpacked working_dir. The real nodes are started by the
multi-node integration tests."""

from __future__ import annotations

import ray._private.parameter as parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

from services.cluster import PROVIDER_MODULE
from services.local_provider import LocalNodeProvider


def test_each_worker_node_unpacks_runtime_envs_into_a_folder_named_after_it(monkeypatch):
    made = []

    def create(self, node_config, tags, count, resources, labels):  # the fake provider's shape: id, then params
        node_id = self._next_hex_node_id()
        made.append((node_id, parameter.RayParams(num_cpus=1)))

    ids = iter(["0a", "0b"])
    monkeypatch.setattr(FakeMultiNodeProvider, "_create_node_with_resources_and_labels", create)
    monkeypatch.setattr(FakeMultiNodeProvider, "_next_hex_node_id", lambda self: next(ids))
    real = parameter.RayParams
    provider = object.__new__(LocalNodeProvider)
    for _ in range(2):
        provider._create_node_with_resources_and_labels({}, {}, 1, {"CPU": 1}, {})
    assert [(i, p.runtime_env_dir_name) for i, p in made] == [("0a", "runtime_resources_0a"),
                                                            ("0b", "runtime_resources_0b")]
    assert all(isinstance(p, real) for _, p in made)
    assert parameter.RayParams is real and real().runtime_env_dir_name == "runtime_resources"  # put back


def test_the_local_cluster_loads_this_provider():
    module, _, name = PROVIDER_MODULE.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is LocalNodeProvider
