"""docker-compose's `monitoring` profile: the file is valid with and without it, Prometheus scrapes the ports
the services serve, and the provisioned dashboard asks only for metrics that exist."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from finetune_site.worker_metrics import WORKER_REGISTRY, GpuCollector, gpu_row
from tests.e2e import ROOT

DEPLOY = ROOT / "deploy"


def compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-f", "docker-compose.yml", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SECRET_KEY": "test-only"})


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_is_valid_and_monitoring_is_an_optional_profile():
    plain = compose("config", "-q")
    assert plain.returncode == 0, plain.stderr
    monitored = compose("--profile", "monitoring", "config")
    assert monitored.returncode == 0, monitored.stderr
    services = yaml.safe_load(monitored.stdout)["services"]
    # Only with --profile monitoring (`config --services` of compose v1 lists every profile's services).
    assert services["prometheus"]["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == ["monitoring"]
    assert not any(services[name].get("profiles") for name in ("web", "worker", "inference", "beat", "postgres"))


def test_prometheus_scrapes_web_with_the_token_and_every_worker_on_its_port():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    web = jobs["finetune-web"]
    assert web["static_configs"][0]["targets"] == ["web:8000"] and web["metrics_path"] == "/metrics"
    assert web["authorization"]["credentials_file"] == "/prometheus/metrics-token"
    compose_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("worker", "inference"):
        environment = compose_file["services"][service]["environment"]
        assert environment["WORKER_METRICS_PORT"] == "${WORKER_METRICS_PORT:-9808}"
    [workers] = jobs["finetune-workers"]["dns_sd_configs"]
    assert workers["port"] == 9808 and set(workers["names"]) == {"worker", "inference"}
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"


@pytest.mark.django_db
def test_the_dashboard_asks_only_for_metrics_that_exist(client):
    exposed = client.get("/metrics").content.decode()
    gpus = CollectorRegistry()
    gpus.register(GpuCollector(query=lambda: [gpu_row("0, Some GPU, 1024, 4096, 50")]))
    exposed += generate_latest(WORKER_REGISTRY).decode() + generate_latest(gpus).decode()
    # By family, with the suffixes of its samples: a worker's task series exist before any task has run.
    known = {family.name + suffix for family in text_string_to_metric_families(exposed)
             for suffix in ("", "_total", "_bucket", "_count", "_sum")}

    dashboard = json.loads((DEPLOY / "grafana/dashboards/finetune.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"finetune_[a-z_]+", target["expr"])}
    assert asked and asked <= known, sorted(asked - known)
    assert {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]} == {
        "prometheus"}
