"""The local cluster's node provider: Ray's fake multi-node provider, with a runtime-env folder per node.

Every fake node runs on this machine, and by default each unpacks a job's `working_dir` into the same folder,
`<session>/runtime_resources`. Ray's working_dir plugin unpacks with `overwrite=True`: when a second node sets up a
job's environment, it deletes and rewrites the folder the first node's workers already run in. Any of those workers
that then asks for its current directory (torch does, at import) fails with FileNotFoundError, and an actor that
cannot start stalls the job. On a real cluster every node has a disk of its own. Here every worker node gets a
folder of its own, named after the node (`runtime_resources_<node id>`), as if it had.

The autoscaler's monitor process loads this class by its path (`provider.type: external`, services.cluster).
"""

from __future__ import annotations

import threading

import ray._private.parameter as parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

RUNTIME_ENV_DIR = "runtime_resources_{node_id}"
_PATCHING = threading.Lock()  # one creation at a time swaps RayParams (the autoscaler may launch from threads)


class LocalNodeProvider(FakeMultiNodeProvider):
    """FakeMultiNodeProvider whose worker nodes each unpack runtime environments into a folder of their own."""

    _last_id: str | None = None

    def _next_hex_node_id(self) -> str:
        self._last_id = super()._next_hex_node_id()
        return self._last_id

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        # The fake provider builds the node's RayParams inline: for the length of that call, RayParams defaults
        # the folder to this node's own (the id `_next_hex_node_id` just gave it).
        provider = self
        with _PATCHING:
            real = parameter.RayParams

            class NodeParams(real):
                def __init__(self, *args, **kwargs):
                    kwargs.setdefault("runtime_env_dir_name", RUNTIME_ENV_DIR.format(node_id=provider._last_id))
                    super().__init__(*args, **kwargs)

            parameter.RayParams = NodeParams
            try:
                super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
            finally:
                parameter.RayParams = real
