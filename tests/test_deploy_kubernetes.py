"""deploy/k8s/base: every document is valid against Kubernetes' own schema (kubernetes-validate ships
them, no cluster needed), kustomize renders it, and what it runs exists: the make targets, the probes'
endpoints, the variables it sets."""

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from finetune_site import health

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "k8s" / "base"
KUBERNETES_VERSION = "1.32"  # the oldest release the manifests promise to fit


def _documents() -> list[dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]
    return documents


def _by_name(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in _documents() if doc["kind"] == kind}


def _container(name: str) -> dict:
    return _by_name("Deployment")[name]["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_every_file_is_listed_in_the_kustomization():
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"} == listed


@pytest.mark.parametrize("document", _documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_document_is_valid_against_the_kubernetes_schema(document):
    # strict: a misspelt or misplaced field is an error, not ignored
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (.ci/run installs it)")
def test_kustomize_renders_every_component_into_the_namespace_and_each_rendered_document_is_valid():
    rendered = subprocess.run(["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, check=True)
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    deployments = {d["metadata"]["name"] for d in documents if d["kind"] == "Deployment"}
    assert deployments == {"web", "worker-cpu", "worker-gpu", "inference", "beat"}
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {"finetune"}


def test_training_worker_asks_for_a_gpu_on_a_gpu_node_and_the_cpu_worker_for_none():
    gpu, cpu = _by_name("Deployment")["worker-gpu"], _by_name("Deployment")["worker-cpu"]
    assert _container("worker-gpu")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert _env(_container("worker-gpu"))["WORKER_QUEUES"] == "training"
    assert "nvidia.com/gpu" not in str(cpu)
    assert _env(_container("worker-cpu"))["WORKER_QUEUES"] == "default"
    assert _container("inference")["command"] == ["make", "inference"]
    assert _container("inference")["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_every_queue_the_tasks_use_has_a_worker(settings):
    served = {_env(_container(name)).get("WORKER_QUEUES") for name in ("worker-cpu", "worker-gpu")} | {"inference"}
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert routed <= served


def test_web_probes_ask_healthz_and_readyz_which_answer(client, db, settings):
    web = _container("web")
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    host = web["readinessProbe"]["httpGet"]["httpHeaders"][0]["value"]
    settings.READY_QUEUES = []  # what the web pod sets: ready means database, Redis and storage
    assert _env(web)["READY_QUEUES"] == ""
    settings.ALLOWED_HOSTS = yaml.safe_load((BASE / "configmap.yaml").read_text())["data"]["ALLOWED_HOSTS"].split(",")
    health.cache.delete(health.WORKERS_CACHE_KEY)
    assert client.get("/healthz", HTTP_HOST=host).status_code == 200
    ready = client.get("/readyz", HTTP_HOST=host)
    assert ready.status_code == 200, ready.json()
    assert set(ready.json()["checks"]) == {"database", "redis", "storage", "workers"}


def test_every_pod_reads_the_config_and_the_secret_and_mounts_the_shared_volume():
    for name, deployment in _by_name("Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        sources = {next(iter(ref.values()))["name"] for ref in spec["containers"][0]["envFrom"]}
        assert sources == {"finetune-config", "finetune-secrets"}, name
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "finetune-data"}} in spec["volumes"], name
    assert _by_name("PersistentVolumeClaim")["finetune-data"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_commands_are_make_targets_and_variables_are_documented():
    makefile = (ROOT / "Makefile").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    named = set(yaml.safe_load((BASE / "configmap.yaml").read_text())["data"])
    named |= set(yaml.safe_load((BASE / "secret.yaml").read_text())["stringData"])
    for name in _by_name("Deployment"):
        container = _container(name)
        assert container["command"][0] == "make" and re.search(rf"^{container['command'][1]}:", makefile, re.M)
        named |= set(_env(container))
    assert named - documented == set()
