"""The dataset pages: list, upload (page and htmx), detail with status, report, token histogram,
paged preview and versions."""

import json
import re

import pytest
from django.urls import reverse

from datasets_app.models import Dataset, TokenStats
from models_app.base_models.services import base_model_builtin_ensure
from tests.factories import make_dataset, make_upload, make_user
from workers.sample_data import classification_rows

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
    # without JS the form posts the file to the page view; app.js sends it in chunks instead
    assert f'action="{reverse("datasets:upload")}"' in body and "hx-post" not in body
    assert 'data-chunk-bytes="' in body and 'id="upload-progress"' in body


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
    assert dataset.sha256 in body and "16 rows read, 0 errors, 0 warnings" in body
    assert "<strong>user:</strong> Classify:" in body and "<strong>assistant:</strong> sports" in body
    assert f"?dataset={dataset.id}" in body


def test_detail_of_an_invalid_file_counts_its_errors_and_names_their_lines(client, user, settings):
    from datasets_app import services

    settings.DATASET_INLINE_BYTES = 0  # stored first, checked by the task: the page shows the verdict
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    lines = [good, '{"messages": [', good, '{"messages": [{"role": "user", "content": "hi"}]}', "not json", good]
    dataset = services.dataset_upload(owner=user, upload=make_upload(("\n".join(lines) + "\n").encode()))
    services.dataset_validate(dataset_id=dataset.id)
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert 'data-status="invalid"' in body and ", 3 errors, 0 warnings." in body
    bad_json = body[body.index('data-kind="invalid_json"'):]
    assert "invalid_json: 2 rows" in bad_json and "line 2:" in bad_json and "line 5:" in bad_json
    no_answer = body[body.index('data-kind="no_assistant_turn"'):]
    assert "no_assistant_turn: 1 row" in no_answer and "line 4" in no_answer


def test_detail_status_partial_for_htmx_does_not_poll(client, user):
    dataset = make_dataset(user)
    Dataset.objects.filter(pk=dataset.pk).update(status="validating", progress=0.42)
    body = client.get(reverse("datasets:detail", args=[dataset.id]), headers={"HX-Request": "true"}).content.decode()
    assert body.startswith('<span id="dataset-status"') and "hx-trigger" not in body
    assert 'value="42"' in body and "42% checked" in body


def test_detail_connects_the_socket_only_while_something_can_change(client, user):
    dataset = make_dataset(user)
    Dataset.objects.filter(pk=dataset.pk).update(status="validating")
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert f'ws-connect="/ws/datasets/{dataset.id}/"' in body and "every 2s" not in body
    assert "the report appears here when it is done" in body
    Dataset.objects.filter(pk=dataset.pk).update(status="ready")
    _stats_ready(dataset)
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert "ws-connect" not in body


def test_detail_asks_for_token_stats_and_shows_computing(client, user, base_model):
    dataset = make_dataset(user)
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert 'id="stats-computing"' in body and "ws-connect" in body  # filled in over the socket
    assert TokenStats.objects.filter(sha256=dataset.sha256, status="computing").exists()


def _stats_ready(dataset) -> TokenStats:
    from datasets_app.services.stats import _stats_key

    return TokenStats.objects.update_or_create(
        **_stats_key(dataset, base_model_builtin_ensure(), ""),
        defaults={"status": "ready", "rows": 3, "totals": [10, 40, 300], "targets": [2, 30, 100]})[0]


def test_detail_shows_the_token_histogram_prompt_vs_completion(client, user):
    dataset = make_dataset(user)
    _stats_ready(dataset)
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert '<canvas id="token-histogram"' in body and 'id="token-histogram-data"' in body
    assert "350 tokens (218 prompt, 132 completion)" in body
    chart = json.loads(re.search(r'id="token-histogram-data" type="application/json">(.*?)</script>',
                                 body).group(1))
    assert sum(chart["prompt"]) == 3 and sum(chart["completion"]) == 3 and len(chart["labels"]) == len(chart["prompt"])
    assert "vendor/chart.umd.min.js" in body and 'id="token-histogram-table"' in body  # readable without JS


def test_detail_preview_is_paged(client, user):
    dataset = make_dataset(user, rows=classification_rows(45))
    url = reverse("datasets:detail", args=[dataset.id])
    first = client.get(url).content.decode()
    assert "rows 1–20 of 45" in first and "?page=2#dataset-preview" in first and "page 1 of 3" in first
    last = client.get(url + "?page=3").content.decode()
    assert "rows 41–45 of 45" in last and "<td>45</td>" in last and "?page=2#dataset-preview" in last
    assert "next rows" not in last
    assert "rows 1–20 of 45" in client.get(url + "?page=zz").content.decode()


def test_detail_lists_versions_with_links(client, user):
    parent = make_dataset(user)
    child = make_dataset(user, name="train.v2.jsonl")
    Dataset.objects.filter(pk=child.pk).update(parent=parent, operations=[{"op": "dedupe"}])
    body = client.get(reverse("datasets:detail", args=[parent.id])).content.decode()
    assert f'href="{reverse("datasets:detail", args=[child.id])}">train.v2.jsonl</a>' in body
    assert "<strong>train.jsonl</strong> (this one)" in body and "original upload" in body
    body = client.get(reverse("datasets:detail", args=[child.id])).content.decode()
    assert f'href="{reverse("datasets:detail", args=[parent.id])}">train.jsonl</a>' in body and "dedupe" in body


def test_other_users_dataset_is_404(client, user):
    assert client.get(reverse("datasets:detail", args=[make_dataset().id])).status_code == 404
