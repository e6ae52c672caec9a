"""The same job with every file in S3 (a moto server on 127.0.0.1 standing in for MinIO)."""

import subprocess
import sys

import boto3
import pytest
import requests

from tests.e2e import client_for, free_port, start_job, upload, wait_finished, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
BUCKET = "finetune-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(endpoint), timeout=30, what="the moto S3 server")
    _s3(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def s3_settings(settings, s3_endpoint):
    env = {"AWS_STORAGE_BUCKET_NAME": BUCKET, "AWS_S3_ENDPOINT_URL": s3_endpoint,
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_S3_REGION_NAME": "us-east-1"}
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": BUCKET, "endpoint_url": s3_endpoint, "access_key": "test", "secret_key": "test",
        "region_name": "us-east-1", "file_overwrite": False, "querystring_expire": 300}}}
    return env


def test_job_stores_dataset_checkpoints_and_adapter_in_the_bucket(live_server, live_base_model, worker_pool,
                                                                   s3_settings, s3_endpoint):
    worker_pool.ensure(s3_settings)
    try:
        client, _ = client_for(live_server)
        file = upload(client)
        job = wait_finished(client, start_job(client, file.id, n_epochs=2).id)
        assert job.status == "succeeded", job.error
        keys = [o["Key"] for o in _s3(s3_endpoint).list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert f"datasets/{file.id}/train.jsonl" in keys
        model_prefix = "models/" + job.fine_tuned_model.replace(":", "_") + "/adapter"
        assert f"{model_prefix}/adapter_model.safetensors" in keys and f"{model_prefix}.zip" in keys
        assert any(k.startswith(f"jobs/{job.id}/checkpoints/step-") and k.endswith("manifest.json") for k in keys)

        response = requests.get(f"{live_server.url}/v1/models/{job.fine_tuned_model}/download",
                                headers={"Authorization": f"Bearer {client.api_key}"}, allow_redirects=False)
        assert response.status_code == 302
        assert response.headers["Location"].startswith(s3_endpoint) and "Signature" in response.headers["Location"]
        assert requests.get(response.headers["Location"]).content[:2] == b"PK"
    finally:
        worker_pool.ensure()  # back to the local-disk worker for the other tests


def _answers(endpoint: str) -> bool:
    try:
        return requests.get(endpoint, timeout=1).status_code < 500
    except requests.ConnectionError:
        return False


def _s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


def test_verified_export_is_stored_in_the_bucket_and_downloads_through_a_presigned_url(
        live_base_model, s3_settings, s3_endpoint, trained_adapter):
    from models_app.models import Export
    from models_app.services import export_run, fine_tuned_model_create
    from tests.api import api_client
    from tests.factories import make_job

    model = fine_tuned_model_create(job=make_job(status="succeeded"), adapter_dir=trained_adapter)
    # Run here, not on the worker (which stays on local disk): the row is made without queueing a task.
    export = Export.objects.create(id="export-s3", model=model, kind="gguf", quantization="f32")
    export = export_run(export_id=export.id)
    assert export.status == "verified", export.error
    keys = [o["Key"] for o in _s3(s3_endpoint).list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert export.storage_path in keys and export.storage_path.endswith("/exports/export-s3.gguf")

    response = api_client(model.owner).get(f"/v1/models/{model.id}/download?artifact=gguf-f32")
    assert response.status_code == 302
    assert response["Location"].startswith(s3_endpoint) and "Signature" in response["Location"]
    assert requests.get(response["Location"]).content[:4] == b"GGUF"
