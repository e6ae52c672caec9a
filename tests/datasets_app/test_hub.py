"""Datasets made from a hub dataset's split: refused ids, no network, and rows fetched, checked and shown."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from datasets_app.models import Dataset
from datasets_app.services import dataset_validate
from tests.api import api_client
from tests.factories import make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db


def _create(client, **fields):
    return client.post("/v1/datasets", {"source": "hub", **fields}, format="json")


@pytest.mark.parametrize(("fields", "param"), [({"hub_id": "no-slash"}, "hub_id"),
                                                ({"hub_id": "org/name/extra"}, "hub_id"),
                                                ({"hub_id": "org/name", "split": "train;rm"}, "split"),
                                                ({"hub_id": "org/name", "revision": "../x"}, "revision")])
def test_bad_id_split_or_revision_is_a_400_naming_it(fields, param):
    response = _create(api_client(make_user()), **fields)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert not Dataset.objects.exists()


def test_offline_workers_mark_the_dataset_invalid_at_once_with_the_reason(client, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    user = make_user()
    body = _create(api_client(user), hub_id="acme/topics", split="train").json()
    assert body["status"] == "uploaded" and body["operations"][0]["hub_id"] == "acme/topics"
    started = time.monotonic()
    dataset = dataset_validate(dataset_id=body["id"])
    assert time.monotonic() - started < 3
    assert dataset.status == "invalid"
    report = dataset.validation_report
    assert report["errors"][0]["kind"] == "hub_fetch_failed" and "no network (HF_HUB_OFFLINE is set)" in str(report)
    client.force_login(user)
    page = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert "no network (HF_HUB_OFFLINE is set)" in page


def test_an_unreachable_hub_fails_within_seconds(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    body = _create(api_client(make_user()), hub_id="acme/topics").json()
    started = time.monotonic()
    dataset = dataset_validate(dataset_id=body["id"])
    assert time.monotonic() - started < 5
    assert dataset.status == "invalid" and "cannot reach 127.0.0.1" in str(dataset.validation_report)


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A hub dataset "acme/topics" as the hub lays one out (data/train-*.parquet), reached through
    ``datasets.load_dataset`` as a local folder (the working directory), the network check passed."""
    folder = tmp_path / "acme" / "topics" / "data"
    folder.mkdir(parents=True)
    rows = classification_rows(12)
    pq.write_table(pa.Table.from_pylist(rows), folder / "train-00000-of-00001.parquet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("workers.hub.hub_offline", lambda endpoint=None: "")
    return rows


def test_hub_rows_land_in_storage_and_are_checked_and_shown(local_hub, client):
    user = make_user()
    body = _create(api_client(user), hub_id="acme/topics", split="train").json()
    dataset = dataset_validate(dataset_id=body["id"])
    assert dataset.status == "ready", dataset.validation_report
    assert (dataset.row_count, dataset.format) == (12, "chat")
    content = dataset.file.read()
    stored = content.decode().splitlines()
    assert len(stored) == 12 and '"content": "Classify:' in stored[0]
    assert dataset.byte_size == len(content) and len(dataset.sha256) == 64
    client.force_login(user)
    page = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert "12 rows read, 0 errors, 0 warnings" in page and "acme--topics-train.jsonl" in page


def test_a_split_the_dataset_does_not_have_is_invalid_naming_it(local_hub):
    body = _create(api_client(make_user()), hub_id="acme/topics", split="test").json()
    dataset = dataset_validate(dataset_id=body["id"])
    assert dataset.status == "invalid"
    report = dataset.validation_report
    assert report["errors"][0]["kind"] == "hub_fetch_failed"
    text = json.dumps(report)
    assert "split 'test' of the hub dataset 'acme/topics'" in text and "Available splits: ['train']" in text


def test_the_datasets_page_form_makes_a_hub_dataset_or_names_the_bad_field(client):
    client.force_login(make_user())
    assert 'action="/datasets/hub/"' in client.get(reverse("datasets:list")).content.decode()
    refused = client.post(reverse("datasets:hub"), {"hub_id": "not an id", "split": "train"})
    assert refused.status_code == 400 and "is not a hub dataset id: expected org/name" in refused.content.decode()
    assert not Dataset.objects.exists()
    made = client.post(reverse("datasets:hub"), {"hub_id": "acme/topics", "split": "train", "revision": ""})
    dataset = Dataset.objects.get()
    assert made.url == reverse("datasets:detail", args=[dataset.id]) and dataset.operations[0]["split"] == "train"
