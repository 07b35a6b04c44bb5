"""What every config schema shares: strict frozen models, renamed-key errors, the `model:` preset shorthand and the
one Ray section of the commands that start or join a Ray cluster (generate, train, serve), and the storage section
of the jobs that write outputs (generate, train)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alarm.config.keys import renamed_message
from alarm.config.loader import read_preset


class Strict(BaseModel):
    """Frozen, unknown keys rejected. `renamed` maps an old key of this level to its new dotted key, so a preset or
    override still using it fails with the new name instead of a generic unknown-key error."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.renamed:
            old = [k for k in cls.renamed if k in data]
            if old:
                raise ValueError("; ".join(renamed_message(k, cls.renamed[k]) for k in old))
        return data


class WithModel(Strict):
    """A config with a `model` section, which may be given as a model preset name (`model: tiny`)."""

    @model_validator(mode="before")
    @classmethod
    def _expand_model_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": read_preset("model", data["model"])}
        return data


class RayConfig(Strict):
    """Where a command's Ray work runs: a cluster to join, or a Ray started for this command alone."""

    address: str | None = Field(
        None, description="Ray cluster to join (host:6379 or ray://host:10001); None = RAY_ADDRESS if set, else "
        "start a local Ray for this command."
    )
    num_cpus: int | None = Field(
        None, gt=0, description="Logical CPUs of a locally started Ray; more than the machine's cores lets a "
        "small machine hold the actors and the data tasks at once. Ignored when joining a cluster."
    )
    dashboard: bool = Field(False, description="Start Ray's dashboard with a locally started Ray.")


class JobStorageConfig(Strict):
    """Whether a job's local paths are visible to every node of the Ray cluster it runs on."""

    shared: bool = Field(
        False, description="The local paths in this config (output, corpus, manifests, checkpoint folders) are on a "
        "filesystem that every Ray node mounts at the same path (NFS, a shared volume; one machine's disk for `python "
        "-m alarm.cluster local`). Without it, a job on a Ray cluster of more than one node (or one that autoscales) "
        "refuses local paths: use s3:// there."
    )


# The configs that start or join Ray (corpus, train, serve) declare `ray: RayConfig` last and refuse the old keys.
RAY_RENAMED = {"ray_address": "ray.address", "ray_num_cpus": "ray.num_cpus"}
