"""A real job on the real worker reporting to TensorBoard and MLflow (the platform's own local store)."""

import io
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
