"""Users' own base models: registration from a directory, a hub id or an archive, what a worker
records about each, who sees them, and that the name works as ``model``."""

import io
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from models_app.base_models import tasks
from models_app.base_models.models import BaseModel
from tests.api import api_client
from tests.factories import make_dataset, make_user
from workers.tiny_model import FAMILIES

pytestmark = pytest.mark.django_db

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
                 "gemma": "GemmaForCausalLM", "phi": "PhiForCausalLM"}


@pytest.fixture
def families(tiny_families, settings):
    settings.BASE_MODEL_DIRS = [next(iter(tiny_families.values())).parent]
    return tiny_families


def _register(client, name: str, **body):
    return client.post("/v1/base_models", {"name": name, **body}, format="json")


def _describe(name: str) -> BaseModel:
    """What the worker does after the request commits (on_commit does not fire inside a test's transaction)."""
    tasks.base_model_describe(BaseModel.objects.get(name=name).pk)
    return BaseModel.objects.get(name=name)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_registration_records_what_the_config_and_tokenizer_say(families, family):
    from transformers import AutoModelForCausalLM

    client = api_client(make_user())
    created = _register(client, f"my-{family}", source=str(families[family]))
    assert created.status_code == 200, created.content
    assert created.json()["status"] == "pending" and created.json()["architecture"] is None
    _describe(f"my-{family}")
    body = client.get(f"/v1/base_models/my-{family}").json()
    model = AutoModelForCausalLM.from_pretrained(families[family])
    size = sum(p.stat().st_size for p in families[family].rglob("*") if p.is_file())
    assert body["status"] == "ready" and body["error"] is None
    assert body["architecture"] == ARCHITECTURES[family] and body["family"] == family
    assert body["parameters"] == sum(p.numel() for p in model.parameters())
    assert body["context_length"] == FAMILIES[family][1]
    assert body["dtype"] == "bfloat16" and body["size_bytes"] == size
    assert "{% generation %}" in body["chat_template"] and body["license"] is None
    assert body["shared"] is False and body["source"] == str(families[family])


def test_licence_comes_from_the_model_card(families, tmp_path, settings):
    import shutil

    copy = shutil.copytree(families["qwen2"], tmp_path / "carded")
    (copy / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# A model\n")
    settings.BASE_MODEL_DIRS = [tmp_path]
    _register(api_client(make_user()), "carded", source=str(copy))
    assert _describe("carded").license == "apache-2.0"


def test_a_registered_base_model_names_the_model_of_a_job(families):
    user = make_user()
    client = api_client(user)
    _register(client, "my-qwen", source=str(families["qwen2"]))
    body = {"model": "my-qwen", "training_file": make_dataset(user).id}
    pending = client.post("/v1/fine_tuning/jobs", body, format="json")
    assert pending.status_code == 400 and pending.json()["error"]["code"] == "model_not_ready"
    _describe("my-qwen")
    created = client.post("/v1/fine_tuning/jobs", body, format="json")
    assert created.status_code == 200, created.content
    assert created.json()["model"] == "my-qwen"
    assert client.get("/v1/models/my-qwen").json()["id"] == "my-qwen"  # chat and evaluations resolve it so


def test_another_users_private_base_model_is_a_404_and_a_shared_one_is_everyones(families):
    owner, other = make_user(), make_user()
    operator = make_user(is_staff=True)
    _register(api_client(owner), "private-qwen", source=str(families["qwen2"]))
    _register(api_client(operator), "shared-phi", source=str(families["phi"]), shared=True)
    _describe("private-qwen")
    _describe("shared-phi")
    stranger = api_client(other)
    assert stranger.get("/v1/base_models/private-qwen").status_code == 404
    assert stranger.get("/v1/models/private-qwen").status_code == 404
    job = stranger.post("/v1/fine_tuning/jobs", {"model": "private-qwen", "training_file": make_dataset(other).id},
                        format="json")
    assert job.status_code == 400 and job.json()["error"]["param"] == "model"
    names = [b["name"] for b in stranger.get("/v1/base_models").json()["data"]]
    assert "shared-phi" in names and "private-qwen" not in names
    assert stranger.get("/v1/base_models/shared-phi").json()["shared"] is True
    refused = _register(api_client(owner), "mine-for-all", source=str(families["phi"]), shared=True)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "shared"


@pytest.mark.parametrize(("source", "text"), [
    ("models/qwen/weights", "neither an absolute directory"),
    ("/etc", "outside the folders"),
])
def test_bad_source_is_400_naming_it_and_stores_nothing(families, source, text):
    response = _register(api_client(make_user()), "bad", source=source)
    assert response.status_code == 400 and response.json()["error"]["param"] == "source"
    assert text in response.json()["error"]["message"]
    assert not BaseModel.objects.filter(name="bad").exists()


def test_a_directory_that_is_not_a_model_is_refused(families, tmp_path, settings):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    settings.BASE_MODEL_DIRS = [tmp_path]
    response = _register(api_client(make_user()), "notes", source=str(tmp_path / "notes"))
    error = response.json()["error"]
    assert response.status_code == 400 and (error["param"], error["code"]) == ("source", "not_a_model")
    assert "config.json" in error["message"] and not BaseModel.objects.filter(name="notes").exists()


def test_a_name_in_use_is_409(families):
    _register(api_client(make_user()), "taken", source=str(families["llama"]))
    response = _register(api_client(make_user()), "Taken", source=str(families["llama"]))
    assert response.status_code == 409 and response.json()["error"]["param"] == "name"


def test_a_hub_id_with_no_network_fails_at_once_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    client = api_client(make_user())
    assert _register(client, "hub-model", source="Qwen/Qwen2.5-0.5B", revision="main").status_code == 200
    started = time.monotonic()
    base = _describe("hub-model")
    assert time.monotonic() - started < 5
    assert base.status == "failed" and "no network" in base.error and "HF_HUB_OFFLINE" in base.error
    assert client.get("/v1/base_models/hub-model").json()["error"] == base.error


def test_revision_applies_to_a_hub_id_only(families):
    response = _register(api_client(make_user()), "r", source=str(families["llama"]), revision="main")
    assert response.status_code == 400 and response.json()["error"]["param"] == "revision"


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _model_members(directory: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_an_uploaded_archive_is_unpacked_and_described(families, kind):
    from django.core.files.uploadedfile import SimpleUploadedFile

    members = _model_members(families["mistral"], prefix="mistral-tiny/")
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            for name, data in members.items():
                bundle.writestr(name, data)
        content = buffer.getvalue()
    else:
        content = _tar_gz(members)
    client = api_client(make_user())
    upload = SimpleUploadedFile(f"mistral.{kind}", content)
    response = client.post("/v1/base_models", {"name": "uploaded", "file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["source"] == "archive"
    base = _describe("uploaded")
    assert (base.status, base.architecture, base.context_length) == ("ready", "MistralForCausalLM", 768), base.error
    assert Path(base.local_path, "config.json").exists()


def test_an_archive_reaching_outside_its_folder_fails_and_writes_nothing_outside(families, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    content = _tar_gz({**_model_members(families["llama"]), "../../escaped.txt": b"x"})
    client = api_client(make_user())
    client.post("/v1/base_models", {"name": "evil", "file": SimpleUploadedFile("evil.tar.gz", content)},
                format="multipart")
    base = _describe("evil")
    assert base.status == "failed" and "outside the model directory" in base.error
    assert not any(Path(settings.BASE_MODEL_UPLOADS_DIR).parent.rglob("escaped.txt"))


def test_the_page_registers_a_base_model_and_shows_it(families, client):
    user = make_user()
    client.force_login(user)
    page = client.get("/base-models/")
    assert page.status_code == 200 and b"Register a base model" in page.content
    refused = client.post("/base-models/register/", {"name": "page-gemma", "source": "/nowhere/at/all"})
    assert refused.status_code == 400 and b"outside the folders" in refused.content
    created = client.post("/base-models/register/", {"name": "page-gemma", "source": str(families["gemma"])})
    assert created.status_code == 302 and created.url == "/base-models/page-gemma/"
    _describe("page-gemma")
    detail = client.get(created.url).content.decode()
    assert "GemmaForCausalLM" in detail and "ready" in detail and "256 tokens" in detail
    client.force_login(make_user())
    assert client.get(created.url).status_code == 404
