"""The TLS front (alarm.front): the committed cluster/front/tls-front.yaml is the fresh rendering of the alarm-ca
preset, points at the RayService's ports, and its nginx.conf passes `nginx -t` (where nginx is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alarm.cluster import front_file, load_cluster_config, plan, source_line
from alarm.front import CONTAINER_PORT, FRONT_FILE, Front, nginx_conf
from tests.certs import make_certs

ROOT = Path(__file__).resolve().parents[2]


def test_committed_front_is_fresh_and_points_at_the_serve_service():
    p = plan(load_cluster_config("alarm-ca"))
    text = front_file(p, source_line("alarm-ca"))
    assert (ROOT / "cluster" / FRONT_FILE).read_text() == text, (
        "cluster/front/tls-front.yaml is stale; re-render with `python -m alarm.cluster render --preset alarm-ca "
        "--out cluster`")
    conf_map, deployment, service = yaml.safe_load_all(text)
    assert [d["kind"] for d in (conf_map, deployment, service)] == ["ConfigMap", "Deployment", "Service"]
    conf = conf_map["data"]["nginx.conf"]
    svc = f"{p.cfg.name}-serve-svc"
    assert f"grpc_pass grpc://{svc}:{p.serve.grpc_port};" in conf and f"proxy_pass http://{svc}:{p.serve.http_port};" in conf
    assert service["spec"]["ports"][0]["targetPort"] == CONTAINER_PORT and f":{CONTAINER_PORT} ssl" in conf
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": f"{p.cfg.name}-tls"}} in volumes
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_nginx_accepts_the_rendered_configuration(tmp_path):
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    _, cert, key = make_certs(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(Front(listen="127.0.0.1:1", grpc="127.0.0.1:2", http="127.0.0.1:3", cert=str(cert),
                                     key=str(key), state_dir=str(tmp_path))))
    run = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
