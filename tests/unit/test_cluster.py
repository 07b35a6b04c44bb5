"""KubeRay manifests validate offline against the v1.7.0 CRDs (strict: unknown fields are errors), and their
entrypoints name our commands with configs that validate."""

from __future__ import annotations

import json
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "ext" / "kuberay-crds"
MANIFESTS = sorted((ROOT / "cluster").glob("*.yaml"))
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}  # Go-only enum


def strict(schema):
    """kubectl --validate=strict: objects with declared properties reject unknown ones."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    return schema


@cache
def schema(kind: str) -> dict:
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        pytest.skip(f"KubeRay CRDs not found at {CRDS} (shared/ext is laid beside the checkout)")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return strict(v1["schema"]["openAPIV3Schema"])


def test_there_are_manifests():
    assert {p.name for p in MANIFESTS} >= {"rayjob-generate.yaml", "rayjob-train.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_crd(path):
    import jsonschema

    doc = yaml.safe_load(path.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema(doc["kind"])).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    if doc["kind"] == "RayJob":
        assert doc["spec"]["submissionMode"] in SUBMISSION_MODES


@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name.startswith("rayjob-")], ids=lambda p: p.name)
def test_entrypoint_config_validates(path):
    from alarm.config import CorpusConfig, TrainConfig, load_config

    argv = shlex.split(yaml.safe_load(path.read_text())["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"]
    section, cls = {"alarm.generate": ("corpus", CorpusConfig), "alarm.train": ("train", TrainConfig)}[argv[2]]
    preset = argv[argv.index("--preset") + 1]
    overrides = [a for a in argv[3:] if "=" in a]
    cfg = load_config(cls, preset, overrides, section=section)
    assert json.loads(cfg.model_dump_json())["run_id"]


def test_a_misspelled_field_is_caught():
    import jsonschema

    doc = yaml.safe_load((ROOT / "cluster" / "rayjob-generate.yaml").read_text())
    doc["spec"]["rayClusterSpec"]["enableInTreeAutoScaling"] = True
    assert list(jsonschema.Draft7Validator(schema("RayJob")).iter_errors(doc))
