"""Datasets end to end: a chunked CSV upload checked by the real worker, and a job that waited for it."""

import io
import time

import pytest
import requests

from tests.e2e import client_for, start_job, wait_finished
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _csv(rows: list[dict]) -> bytes:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["question", "answer"])
    for row in rows:
        writer.writerow([row["prompt"], row["completion"]])
    return buffer.getvalue().encode()


def test_chunked_csv_upload_is_validated_by_the_worker_and_a_waiting_job_trains_on_it(
        live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {client.api_key}"
    base = live_server.url + "/v1/datasets/uploads"
    content = _csv(classification_rows(16, chat=False))
    upload = api.post(base, json={"filename": "qa.csv", "bytes": len(content),
                                  "column_map": {"question": "prompt", "answer": "completion"}}).json()
    for offset in range(0, len(content), 256):
        response = api.put(f"{base}/{upload['id']}/chunk", params={"offset": offset},
                           data=content[offset:offset + 256], headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 200, response.text
    dataset = api.post(f"{base}/{upload['id']}/complete", json={}).json()["dataset"]
    assert dataset["status"] in ("uploaded", "validating", "ready")

    job = start_job(client, dataset["id"], n_epochs=1)  # created before the check may have ended: it waits
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error

    detail = api.get(f"{live_server.url}/v1/datasets/{dataset['id']}").json()
    assert (detail["status"], detail["format"], detail["rows"], detail["progress"]) == (
        "ready", "prompt_completion", 16, 1.0)
    assert client.files.retrieve(dataset["id"]).status == "processed"


def test_bad_file_checked_by_the_worker_becomes_error(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {client.api_key}"
    base = live_server.url + "/v1/datasets/uploads"
    # a chat file whose second row has no answer (a file of such rows alone would be prompts for RL)
    content = (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
               b'{"messages": [{"role": "user", "content": "hi"}]}\n')
    upload = api.post(base, json={"filename": "t.jsonl"}).json()
    api.put(f"{base}/{upload['id']}/chunk?offset=0", data=content, headers={"Content-Type": "application/octet-stream"})
    file_id = api.post(f"{base}/{upload['id']}/complete", json={}).json()["dataset"]["id"]
    deadline = time.monotonic() + 60
    while client.files.retrieve(file_id).status == "uploaded" and time.monotonic() < deadline:
        time.sleep(0.2)
    file = client.files.retrieve(file_id)
    assert file.status == "error" and "has no assistant turn" in file.status_details
