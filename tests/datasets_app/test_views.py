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
    assert response.status_code == 400 and b"Choose a training file" in response.content


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


# --- numbers, duplicates, plain text, the prepare form ---


def test_histogram_bins_fit_short_rows_without_empty_trailing_bins(client, user):
    from datasets_app.services.stats import _stats_key

    dataset = make_dataset(user)
    totals = [20 + i % 21 for i in range(16)]  # classification rows: 20-40 tokens, a 2-3 token answer
    targets = [2 + i % 2 for i in range(16)]
    TokenStats.objects.update_or_create(**_stats_key(dataset, base_model_builtin_ensure(), ""),
                                        defaults={"status": "ready", "rows": 16, "totals": totals, "targets": targets})
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    chart = json.loads(re.search(r'id="token-histogram-data" type="application/json">(.*?)</script>',
                                 body).group(1))
    assert chart["labels"][0] != "0–63" and len(chart["labels"]) <= 12
    assert chart["prompt"][0] + chart["completion"][0] > 0 and chart["prompt"][-1] + chart["completion"][-1] > 0
    assert sum(chart["prompt"]) == sum(chart["completion"]) == 16


def test_list_formats_numbers_and_marks_a_duplicate_upload(client, user):
    first = make_dataset(user, rows=classification_rows(1200), name="big.jsonl")
    again = make_dataset(user, rows=classification_rows(1200), name="big-again.jsonl")
    body = client.get(reverse("datasets:list")).content.decode()
    row = re.search(rf'<tr id="dataset-row-{again.id}">(.*?)</tr>', body, re.S).group(1)
    assert f'duplicate of <a href="/datasets/{first.id}/">big.jsonl</a>' in row
    assert '<td class="num">1,200</td>' in row and "KiB</td>" in row and "<time datetime=" in row
    assert "duplicate of" not in re.search(rf'<tr id="dataset-row-{first.id}">(.*?)</tr>', body, re.S).group(1)
    detail = client.get(reverse("datasets:detail", args=[again.id])).content.decode()
    assert 'id="duplicate-of"' in detail and f'href="/datasets/{first.id}/">big.jsonl</a>' in detail


def test_upload_form_lists_the_formats_and_containers_it_reads(client, user):
    body = client.get(reverse("datasets:list")).content.decode()
    for word in ("chat", "alpaca", "prompt/completion", "preference", "text", ".jsonl", ".json", ".csv", ".tsv",
                 ".parquet", ".txt", ".zip", ".gz"):
        assert word in body
    assert 'name="format" value="text" id="upload-text"' in body  # "is this pretraining text?"


def test_a_txt_file_is_taken_as_pretraining_text_only_when_the_form_says_so(client, user):
    prose = b"The first document, a paragraph of prose.\nThe second one.\n"
    refused = client.post(reverse("datasets:upload"), {"file": make_upload(prose, name="notes.txt")})
    body = refused.content.decode()
    assert refused.status_code == 400 and not Dataset.objects.exists()
    assert "notes.txt is plain text" in body and "This is pretraining text" in body
    taken = client.post(reverse("datasets:upload"), {"file": make_upload(prose, name="notes.txt"), "format": "text"})
    dataset = Dataset.objects.get(owner=user)
    assert taken["Location"] == reverse("datasets:detail", args=[dataset.id])
    assert (dataset.status, dataset.format, dataset.row_count) == ("ready", "text", 2)


def _prepare(client, dataset, **fields):
    return client.post(reverse("datasets:prepare", args=[dataset.id]), fields)


def test_prepare_form_makes_a_deduplicated_split_and_links_the_wizard_with_both(client, user):
    rows = classification_rows(40)
    dataset = make_dataset(user, rows=rows + rows[:10])  # ten exact copies
    page = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert f'action="{reverse("datasets:prepare", args=[dataset.id])}"' in page and 'name="validation_share"' in page
    response = _prepare(client, dataset, dedup="on", split="on", validation_share="0.25", seed="7")
    train, validation = Dataset.objects.filter(parent=dataset).order_by("filename")
    assert response.status_code == 302 and response["Location"] == reverse("datasets:detail", args=[train.id])
    assert [op["op"] for op in train.operations] == ["dedup", "split", "part"]
    removed = train.operations[0]["rows_removed"]
    assert removed >= 10 and train.row_count + validation.row_count == 50 - removed
    assert validation.row_count == round(0.25 * (50 - removed))
    version_page = client.get(response["Location"]).content.decode()
    assert f"?dataset={train.id}&amp;validation={validation.id}" in version_page  # fine-tune on the split


def test_prepare_form_shows_the_services_error_next_to_its_field_and_stores_nothing(client, user):
    dataset = make_dataset(user)
    response = _prepare(client, dataset, dedup="on", dedup_near="on", near_threshold="5")
    body = response.content.decode()
    assert response.status_code == 400 and '<details class="prepare" id="prepare" open>' in body
    error = re.search(r'<span class="error" id="error-near_threshold" role="alert">(.*?)</span>', body).group(1)
    assert error == "must be from 0.1 to 1"
    assert 'name="near_threshold" value="5"' in body  # what was typed stays
    nothing = _prepare(client, dataset)
    assert nothing.status_code == 400 and "Choose at least one operation" in nothing.content.decode()
    no_bound = _prepare(client, dataset, filter_length="on")
    assert re.search(r'id="error-filter_length" role="alert">give at least one bound', no_bound.content.decode())
    split_all = _prepare(client, dataset, split="on", validation_share="1")
    assert re.search(r'id="error-validation_share" role="alert">must be between 0 and 1', split_all.content.decode())
    assert not Dataset.objects.filter(parent=dataset).exists()


def test_prepare_form_offers_only_the_options_that_apply(client, base_model, user):
    pairs = make_dataset(user, rows=[{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(8)],
                         name="pairs.jsonl")
    page = client.get(reverse("datasets:detail", args=[pairs.id])).content.decode()
    assert 'name="convert"' not in page and 'name="max_tokens"' not in page  # preference pairs: neither applies
    chat = make_dataset(user)
    page = client.get(reverse("datasets:detail", args=[chat.id])).content.decode()
    convert = re.search(r'<select name="convert".*?</select>', page, re.S).group(0)
    assert 'value="chat"' not in convert and 'value="prompt_completion"' in convert and 'name="max_tokens"' in page


def test_prepare_form_cleans_chunks_and_shows_each_operation_with_its_version(client, user):
    base_model_builtin_ensure()
    story = " ".join(f"Chapter {n} of the story tells what happened on day {n}." for n in range(12))
    dataset = make_dataset(user, rows=[{"text": "A  short\x07 note."}, {"text": story}])
    page = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert 'name="clean_text"' in page and 'name="chunk_max_tokens"' in page and 'name="language_keep"' in page
    response = _prepare(client, dataset, clean_text="on", clean_unicode="nfkc", clean_mojibake="on",
                        clean_control="on", clean_whitespace="on", quality="on", min_score="0",
                        chunk="on", chunk_max_tokens="100", chunk_overlap="0", token_model="tiny-llama")
    assert response.status_code == 302, response.content.decode()
    version = Dataset.objects.get(parent=dataset)
    assert [op["op"] for op in version.operations] == ["clean", "quality", "chunk"]
    assert version.operations[0]["unicode"] == "nfkc" and version.row_count > 2
    version_page = client.get(response["Location"]).content.decode()
    assert "clean v1 (1 changed)" in version_page and "quality v1" in version_page
    assert '<td class="quality">1.00</td>' in version_page  # each previewed row's score
    assert f"chunk v1 (1 changed) (+{version.row_count - 2} chunks)" in version_page


def test_prepare_form_puts_a_bad_language_code_next_to_its_field(client, user):
    dataset = make_dataset(user)
    response = _prepare(client, dataset, language="on", language_keep="en, klingon")
    body = response.content.decode()
    assert response.status_code == 400
    assert re.search(r'id="error-language_keep" role="alert">must list ISO 639-1 language codes', body)
    assert not Dataset.objects.filter(parent=dataset).exists()
