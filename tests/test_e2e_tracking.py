"""A real job on the real worker reporting to TensorBoard and MLflow (the platform's own local store),
and one reporting to W&B offline (no key, no network): its run is kept with the job's files."""

import io
import struct
import tarfile

import pytest
import requests
from django.test import Client

from tests.e2e import client_for, upload, wait_finished
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_job_reports_to_tensorboard_and_mlflow_and_the_page_says_where(live_server, live_base_model, worker,
                                                                     tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from jobs_app.models import FineTuneJob
    from jobs_app.services.tracking import mlflow_tracking_uri

    client, user = client_for(live_server)
    train = upload(client, classification_rows(8))
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=train.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
        integrations=[{"type": "tensorboard"}, {"type": "mlflow", "mlflow": {"experiment": "e2e-tracking"}}])
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error

    archive = requests.get(f"{live_server.url}/v1/fine_tuning/jobs/{job.id}/tensorboard", timeout=30,
                           headers={"Authorization": f"Bearer {client.api_key}"})
    assert archive.status_code == 200, archive.text
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as files:
        files.extractall(tmp_path, filter="data")
    events = EventAccumulator(str(next((tmp_path / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    steps = job.model_extra["metrics"]["steps"]
    assert len(events.Scalars("train/loss")) == steps

    uri = mlflow_tracking_uri(FineTuneJob.objects.get(pk=job.id))
    tracker = MlflowClient(uri)
    runs = tracker.search_runs([tracker.get_experiment_by_name("e2e-tracking").experiment_id])
    [run] = [run for run in runs if run.info.run_name == job.id]  # the store outlives one test run
    assert len(tracker.get_metric_history(run.info.run_id, "loss")) == steps

    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/jobs/{job.id}/").content.decode()
    assert f"/v1/fine_tuning/jobs/{job.id}/tensorboard" in page and "experiment e2e-tracking" in page


def test_job_reports_to_wandb_offline_and_its_run_is_kept_with_the_job(live_server, live_base_model, worker):
    from django.core.files.storage import default_storage

    client, user = client_for(live_server)
    train = upload(client, classification_rows(8))
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=train.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
        integrations=[{"type": "wandb", "wandb": {"project": "e2e-offline", "tags": ["tiny"]}}])
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.model_extra["tracking"][0]["location"].endswith(f"(offline runs are kept under jobs/{job.id}/wandb)")

    runs_dir = f"jobs/{job.id}/wandb/wandb"
    [run_dir] = [name for name in default_storage.listdir(runs_dir)[0] if name.startswith("offline-run-")]
    [run_file] = [name for name in default_storage.listdir(f"{runs_dir}/{run_dir}")[1] if name.endswith(".wandb")]
    with default_storage.open(f"{runs_dir}/{run_dir}/{run_file}", "rb") as handle:
        records = _wandb_records(handle.read())
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.project, list(run.tags)) == (job.id, "e2e-offline", ["tiny"])
    losses = [item.value_json for r in records if r.WhichOneof("record_type") == "history"
              for item in r.history.item if (item.key or "/".join(item.nested_key)) == "train/loss"]
    assert len(losses) == job.model_extra["metrics"]["steps"] and all(float(loss) > 0 for loss in losses)

    browser = Client()
    browser.force_login(user)
    assert "project e2e-offline" in browser.get(f"/jobs/{job.id}/").content.decode()


def _wandb_records(data: bytes) -> list:
    """The protobuf records of a W&B run file (``run-<id>.wandb``): after a 7-byte header, 32 KiB blocks
    of chunks, each ``crc32 (4) | length (2) | type (1) | payload`` (type 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    records, pending, position = [], b"", header
    while position + header <= len(data):
        if block - position % block < header:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + header])
        if kind == 0:
            break
        pending += data[position + header:position + header + length]
        position += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records
