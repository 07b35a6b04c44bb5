"""The TLS-terminating front of a server: Ray Serve's proxies speak plaintext gRPC and HTTP, so an nginx in front
of them holds the certificate and passes gRPC (HTTP/2, `grpc_pass`) and the OpenAI-compatible HTTP API
(`proxy_pass`, unbuffered for server-sent events) on one TLS port. One template for the cluster manifest
(`alarm.cluster` renders it into a ConfigMap) and the test that runs a real nginx.

    conf = nginx_conf(Front(listen="0.0.0.0:443", grpc="alarm-serve-svc:9000", http="alarm-serve-svc:8000",
                            cert="/etc/tls/tls.crt", key="/etc/tls/tls.key"))
"""

from __future__ import annotations

from dataclasses import dataclass

from alarm.config import GRPC_SERVICE

GRPC_SERVICES = (GRPC_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")


@dataclass(frozen=True)
class Front:
    """Where the front listens, the Serve proxies it passes to (host:port), its certificate and key (PEM paths),
    the largest request body (the audio limit in base64 plus the JSON around it), how long a call may take, and a
    folder for nginx's pid and temp files (None = nginx's defaults, as in a container)."""

    listen: str
    grpc: str
    http: str
    cert: str
    key: str
    max_body_mb: int = 48
    timeout_s: int = 900
    state_dir: str | None = None
    foreground: bool = True
    user: str | None = None  # the workers' user when nginx starts as root (None = nginx's compiled-in default)


def nginx_conf(f: Front) -> str:
    """A complete nginx.conf: TLS on `listen` for both protocols; health and reflection pass through too (the
    ingress checks tokens itself, so probes of the health service need none)."""
    grpc_locations = "\n".join(
        f"""    location /{s}/ {{
      grpc_pass grpc://{f.grpc};
      grpc_read_timeout {f.timeout_s}s;
      grpc_send_timeout {f.timeout_s}s;
      grpc_set_header x-forwarded-proto https;
    }}""" for s in GRPC_SERVICES)
    state = ""
    if f.state_dir:
        state = "\n".join(f"  {k}_temp_path {f.state_dir}/{k};" for k in
                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    head = f"pid {f.state_dir}/nginx.pid;\nerror_log {f.state_dir}/error.log warn;\n" if f.state_dir else ""
    return f"""# TLS-terminating front of an ALARM server (rendered by alarm.front; do not edit by hand)
{'daemon off;' if f.foreground else ''}
{f'user {f.user};' if f.user else ''}
worker_processes 1;
{head}events {{ worker_connections 1024; }}
http {{
  access_log off;
{state}
  client_max_body_size {f.max_body_mb}m;
  server {{
    listen {f.listen} ssl http2;
    ssl_certificate {f.cert};
    ssl_certificate_key {f.key};
    ssl_protocols TLSv1.2 TLSv1.3;
{grpc_locations}
    location / {{
      proxy_pass http://{f.http};
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout {f.timeout_s}s;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Proto https;
    }}
  }}
}}
"""


FRONT_FILE = "front/tls-front.yaml"
CONTAINER_PORT = 8443
MOUNT = "/etc/alarm-front"


def front_manifests(name: str, namespace: str, grpc_port: int, http_port: int, max_message_bytes: int,
                    timeout_s: float | None, image: str = "nginx:1.27") -> list[dict]:
    """The TLS front of the RayService `name` on Kubernetes: a ConfigMap holding `nginx_conf`, a Deployment of two
    nginx pods reading the certificate from the kubernetes.io/tls Secret `<name>-tls`, and a LoadBalancer Service
    on 443. Upstream is KubeRay's `<name>-serve-svc`, which follows the RayService across upgrades."""
    svc, front = f"{name}-serve-svc", f"{name}-tls-front"
    labels = {"app.kubernetes.io/part-of": name, "app.kubernetes.io/component": "tls-front"}
    meta = {"name": front, "namespace": namespace, "labels": labels}
    conf = nginx_conf(Front(listen=f"0.0.0.0:{CONTAINER_PORT}", grpc=f"{svc}:{grpc_port}", http=f"{svc}:{http_port}",
                            cert=f"{MOUNT}/tls/tls.crt", key=f"{MOUNT}/tls/tls.key",
                            max_body_mb=max_message_bytes * 4 // 3 // 2**20 + 1,
                            timeout_s=int(timeout_s or 3600) + 30))
    container = {
        "name": "nginx", "image": image, "command": ["nginx", "-c", f"{MOUNT}/conf/nginx.conf"],
        "ports": [{"containerPort": CONTAINER_PORT, "name": "tls"}],
        "readinessProbe": {"tcpSocket": {"port": CONTAINER_PORT}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": "conf", "mountPath": f"{MOUNT}/conf", "readOnly": True},
                         {"name": "tls", "mountPath": f"{MOUNT}/tls", "readOnly": True}],
    }
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"nginx.conf": conf}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 2, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "containers": [container],
                "volumes": [{"name": "conf", "configMap": {"name": front}},
                            {"name": "tls", "secret": {"secretName": f"{name}-tls"}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {
            "type": "LoadBalancer", "selector": labels,
            "ports": [{"name": "tls", "port": 443, "targetPort": CONTAINER_PORT, "appProtocol": "https"}]}},
    ]
