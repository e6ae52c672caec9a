"""Exports through the services and the API: queued after commit, verified, downloadable, private."""

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from models_app import services
from models_app.models import Export
from models_app.services import export_create, export_run, fine_tuned_model_create
from models_app.services.artifacts import model_files_fetch
from tests.api import api_client
from tests.factories import make_job, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(base_model, trained_adapter):
    return fine_tuned_model_create(job=make_job(make_user("alice")), adapter_dir=trained_adapter)


def _export(model, kind: str = "merged", quantization: str | None = None) -> Export:
    """Create an export and run it here (its queued task never fires: the test transaction never commits)."""
    export = export_create(model=model, kind=kind, quantization=quantization)
    return export_run(export_id=export.id)


def test_create_queues_the_task_after_commit(model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        export = export_create(model=model, kind="gguf", quantization="q8_0")
    assert len(callbacks) == 1
    assert (export.status, export.kind, export.quantization, export.model_id) == ("pending", "gguf", "q8_0", model.id)


def test_create_reuses_an_export_that_is_not_failed(model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = export_create(model=model, kind="merged")
        assert export_create(model=model, kind="merged", quantization="f32") == first
        Export.objects.filter(pk=first.pk).update(status=Export.Status.FAILED)
        assert export_create(model=model, kind="merged") != first
    assert len(callbacks) == 2


def test_merged_export_is_verified_stored_and_downloadable(model):
    export = _export(model, "merged")
    assert export.status == "verified", export.error
    assert export.progress == 100 and export.finished_at and export.size_bytes > 0
    assert all(p["source_tokens"] == p["export_tokens"] for p in export.verification["prompts"])
    assert export.storage_path.endswith(f"/exports/{export.id}.zip")

    client = api_client(model.owner)
    response = client.get(f"/v1/models/{model.id}/download", {"artifact": "merged"})
    assert response.status_code == 200
    assert response["Content-Disposition"].endswith(f'{model.id.replace(":", "_")}-merged.zip"')
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert {"merged/model.safetensors", "merged/config.json", "merged/tokenizer.json"} <= set(names)
    assert "merged" in client.get(f"/v1/models/{model.id}").json()["artifacts"]


def test_gguf_export_downloads_as_a_gguf_file(model):
    export = _export(model, "gguf", "f16")
    assert export.status == "verified", export.error
    response = api_client(model.owner).get(f"/v1/models/{model.id}/download?artifact=gguf-f16")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:4] == b"GGUF"
    assert response["Content-Disposition"].endswith('-gguf-f16.gguf"')


def test_failed_verification_marks_the_export_failed_with_the_reason(model, monkeypatch):
    import workers.export

    def mismatch(config, prompt, expected, got, diff, tolerance):
        raise workers.export.VerificationError(f"greedy output differs on prompt {prompt!r}")

    monkeypatch.setattr(workers.export, "_outputs_compare", mismatch)
    export = _export(model, "merged")
    assert export.status == "failed"
    assert export.error.startswith("greedy output differs on prompt")
    assert export.storage_path == ""
    response = api_client(model.owner).get(f"/v1/models/{model.id}/download?artifact=merged")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "export_not_verified"


def test_export_whose_source_files_are_gone_fails_with_the_reason(model):
    default_storage.delete(f"{model.adapter_path}/adapter_model.safetensors")
    export = _export(model, "adapter")
    assert export.status == "failed" and export.error


def test_download_refuses_an_export_that_is_not_verified(model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        export_create(model=model, kind="gguf", quantization="f32")
    client = api_client(model.owner)
    response = client.get(f"/v1/models/{model.id}/download?artifact=gguf-f32")
    assert response.status_code == 409
    assert response.json()["error"]["param"] == "artifact"
    response = client.get(f"/v1/models/{model.id}/download?artifact=tflite")
    assert response.status_code == 400


def test_api_creates_lists_and_retrieves_exports(model, django_capture_on_commit_callbacks):
    client = api_client(model.owner)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(f"/v1/registry/models/{model.id}/exports", {"kind": "gguf", "quantization": "q8_0"},
                               format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["object"], body["kind"], body["quantization"], body["status"]) == ("model.export", "gguf",
                                                                                   "q8_0", "pending")
    assert len(callbacks) == 1
    listed = client.get(f"/v1/registry/models/{model.id}/exports").json()["data"]
    assert [e["id"] for e in listed] == [body["id"]]
    assert client.get(f"/v1/registry/exports/{body['id']}").json()["artifact"] == "gguf-q8_0"


@pytest.mark.parametrize(("body", "param"), [
    ({"kind": "onnx"}, "kind"),
    ({"kind": "gguf", "quantization": "q4_0"}, "quantization"),
    ({"kind": "merged", "quantization": "f16"}, "quantization"),
])
def test_api_rejects_bad_kind_or_quantization(model, body, param):
    response = api_client(model.owner).post(f"/v1/registry/models/{model.id}/exports", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert not Export.objects.exists()


def test_another_users_model_and_exports_are_404(model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        export = export_create(model=model, kind="merged")
    Export.objects.filter(pk=export.pk).update(status=Export.Status.VERIFIED, storage_path="x.zip")
    bob = api_client(make_user("bob"))
    for method, url in [("get", f"/v1/registry/models/{model.id}/exports"),
                        ("post", f"/v1/registry/models/{model.id}/exports"),
                        ("get", f"/v1/registry/exports/{export.id}"),
                        ("get", f"/v1/models/{model.id}/download?artifact=merged")]:
        response = getattr(bob, method)(url, {"kind": "merged"}, format="json") if method == "post" \
            else bob.get(url)
        assert response.status_code == 404, (url, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert Export.objects.count() == 1


def test_deleting_the_model_deletes_its_export_files(model, django_capture_on_commit_callbacks):
    export = _export(model, "gguf", "f32")
    assert default_storage.exists(export.storage_path)
    with django_capture_on_commit_callbacks(execute=True):
        services.fine_tuned_model_delete(model=model)
    assert not default_storage.exists(export.storage_path)
    assert not Export.objects.exists()


def test_run_resumes_an_export_left_running_by_a_dead_worker_but_never_redoes_a_finished_one(model):
    export = Export.objects.create(id="export-orphan", model=model, kind="adapter", status=Export.Status.RUNNING)
    assert export_run(export_id=export.id).status == "verified"
    assert export_run(export_id=export.id) is None
    assert export_run(export_id="export-gone") is None


def _checkpoint_store(job, step: int, directory):
    """A checkpoint as the trainer stores it: its files, then the manifest that says it is whole."""
    from finetune_site.files import storage_put_dir
    from jobs_app.models import Checkpoint

    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    (directory / "manifest.json").write_text(json.dumps({"step": step, "files": files}))
    prefix = f"jobs/{job.id}/checkpoints/step-{step}"
    storage_put_dir(directory, prefix, last="manifest.json")
    return Checkpoint.objects.create(job=job, step=step, storage_path=prefix)


def _adapter_logits(base_path, adapter_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), adapter_dir)
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits


def test_a_checkpoint_exports_the_weights_of_its_step_for_its_owner_only(model, untrained_adapter, tiny_model_path,
                                                                        tmp_path, django_capture_on_commit_callbacks):
    checkpoint = _checkpoint_store(model.job, 5, Path(shutil.copytree(untrained_adapter, tmp_path / "step-5")))
    client = api_client(model.owner)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(f"/v1/registry/models/{checkpoint.fine_tuned_model_checkpoint}/exports",
                               {"kind": "adapter"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["model"], body["checkpoint"], body["kind"]) == (checkpoint.fine_tuned_model_checkpoint,
                                                                  checkpoint.id, "adapter")
    export = export_run(export_id=body["id"])
    assert export.status == "verified", export.error
    assert export.storage_path.startswith(f"{checkpoint.storage_path}/exports/")
    assert [e["id"] for e in client.get(f"/v1/registry/models/{checkpoint.id}/exports").json()["data"]] == [export.id]
    assert model.exports.count() == 0  # the model's own exports are its own

    download = client.get(f"/v1/models/{checkpoint.id}/download", {"artifact": "adapter"})
    assert download.status_code == 200
    zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).extractall(tmp_path / "exported")
    exported = _adapter_logits(tiny_model_path, tmp_path / "exported" / "adapter")
    final = _adapter_logits(tiny_model_path, model_files_fetch(model, tmp_path / "final"))
    step_5 = _adapter_logits(tiny_model_path, untrained_adapter)
    assert torch_allclose(exported, step_5) and not torch_allclose(exported, final)

    stranger = api_client(make_user("mallory"))
    for name in (checkpoint.id, checkpoint.fine_tuned_model_checkpoint):
        assert stranger.post(f"/v1/registry/models/{name}/exports", {"kind": "merged"},
                             format="json").status_code == 404
        assert stranger.get(f"/v1/registry/models/{name}/exports").status_code == 404
        assert stranger.get(f"/v1/models/{name}/download", {"artifact": "adapter"}).status_code == 404
    assert stranger.get(f"/v1/registry/exports/{export.id}").status_code == 404


def test_a_checkpoint_exports_merged_and_has_no_adapter_download_before_its_export(model, untrained_adapter, tmp_path):
    checkpoint = _checkpoint_store(model.job, 7, Path(shutil.copytree(untrained_adapter, tmp_path / "step-7")))
    client = api_client(model.owner)
    refused = client.get(f"/v1/models/{checkpoint.id}/download", {"artifact": "adapter"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "export_not_verified"
    export = _export(checkpoint, "merged")
    assert export.status == "verified", export.error
    assert export.filename == f"{checkpoint.fine_tuned_model_checkpoint.replace(':', '_')}-merged.zip"


def test_a_checkpoint_whose_files_are_incomplete_fails_its_export_saying_so(model):
    from jobs_app.models import Checkpoint

    checkpoint = Checkpoint.objects.create(job=model.job, step=9, storage_path=f"jobs/{model.job.id}/nothing")
    export = _export(checkpoint, "adapter")
    assert export.status == "failed" and "never completely stored" in export.error


def torch_allclose(a, b) -> bool:
    import torch

    return torch.allclose(a, b, atol=1e-5)
