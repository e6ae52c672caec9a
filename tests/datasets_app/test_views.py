"""The dataset pages: list, upload (page and htmx), detail with report and preview."""

import pytest
from django.urls import reverse

from datasets_app.models import Dataset
from tests.factories import make_dataset, make_upload, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(client):
    user = make_user()
    client.force_login(user)
    return user


def test_list_shows_only_own_datasets_and_the_upload_form(client, user):
    mine, theirs = make_dataset(user), make_dataset()
    body = client.get(reverse("datasets:list")).content.decode()
    assert mine.id in body and theirs.id not in body
    assert 'enctype="multipart/form-data"' in body and '<label for="upload-file">' in body


def test_upload_redirects_to_the_new_dataset(client, user):
    response = client.post(reverse("datasets:upload"), {"file": make_upload(name="mine.jsonl")})
    dataset = Dataset.objects.get(owner=user)
    assert response["Location"] == reverse("datasets:detail", args=[dataset.id])
    assert dataset.filename == "mine.jsonl" and dataset.status == "ready"


def test_htmx_upload_redirects_the_client(client, user):
    response = client.post(reverse("datasets:upload"), {"file": make_upload()}, headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == reverse("datasets:detail", args=[Dataset.objects.get(owner=user).id])


def test_bad_upload_shows_the_error_next_to_the_field(client, user):
    bad = make_upload(b'{"messages": []}\nnot json\n')
    response = client.post(reverse("datasets:upload"), {"file": bad}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 400 and body.startswith('<form id="upload-form"')
    assert "line 2" in body and not Dataset.objects.exists()
    page = client.post(reverse("datasets:upload"), {"file": make_upload(b"", name="empty.jsonl")})
    assert page.status_code == 400 and b"the file is empty" in page.content and b"<html" in page.content


def test_upload_without_file_is_an_error(client, user):
    response = client.post(reverse("datasets:upload"), {})
    assert response.status_code == 400 and b"Choose a .jsonl file" in response.content


def test_detail_shows_report_and_preview(client, user):
    dataset = make_dataset(user)
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert dataset.sha256 in body and "16 rows checked, 0 problems" in body
    assert "<strong>user:</strong> Classify:" in body and "<strong>assistant:</strong> sports" in body
    assert f"?dataset={dataset.id}" in body


def test_detail_status_partial_for_htmx(client, user):
    dataset = make_dataset(user)
    body = client.get(reverse("datasets:detail", args=[dataset.id]), headers={"HX-Request": "true"}).content.decode()
    assert body.startswith('<span id="dataset-status"') and "hx-trigger" not in body  # ready: stops polling
    Dataset.objects.filter(pk=dataset.pk).update(status="validating")
    body = client.get(reverse("datasets:detail", args=[dataset.id]), headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 2s"' in body


def test_other_users_dataset_is_404(client, user):
    assert client.get(reverse("datasets:detail", args=[make_dataset().id])).status_code == 404
