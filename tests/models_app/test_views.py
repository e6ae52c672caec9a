"""The model pages: list and detail with metrics and the download link."""

import re

import pytest
from django.urls import reverse

from datasets_app.models import Dataset
from datasets_app.selectors import dataset_rows
from models_app.models import FineTunedModel, StoredCompletion
from models_app.services import completion_row
from tests.factories import make_job, make_metric, make_stored_completion, make_user

pytestmark = pytest.mark.django_db


def _model(owner, base_model):
    job = make_job(owner, status="succeeded")
    make_metric(job, 5, 5, train_loss=0.25)
    version = FineTunedModel.objects.filter(owner=owner, name="tiny-llama").count() + 1
    return FineTunedModel.objects.create(id=f"ft:tiny-llama::{job.id[-6:]}", owner=job.owner, job=job,
                                         project_id=job.project_id,
                                         base_model=base_model, name="tiny-llama", adapter="lora", version=version,
                                         patch=version - 1, adapter_path="models/x/adapter",
                                         artifact_files=["models/x/adapter.zip"])


def test_list_shows_own_models_and_base_models(client, base_model):
    user = make_user()
    mine, theirs = _model(user, base_model), _model(make_user(), base_model)
    client.force_login(user)
    body = client.get(reverse("models:list")).content.decode()
    assert mine.id in body and theirs.id not in body and "builtin:tiny-llama" in body


def test_detail_shows_metrics_hyperparameters_and_download(client, base_model):
    user = make_user()
    model = _model(user, base_model)
    client.force_login(user)
    body = client.get(reverse("models:detail", args=[model.id])).content.decode()
    assert f'href="/v1/models/{model.id}/download?artifact=adapter"' in body
    assert '<th scope="row">train loss</th><td>0.2500</td>' in body and "lora_r" in body
    assert model.job.dataset.filename in body


def test_other_users_model_is_404(client, base_model):
    model = _model(make_user(), base_model)
    client.force_login(make_user())
    assert client.get(reverse("models:detail", args=[model.id])).status_code == 404


def _evaluation(model, **fields):
    from models_app.models import Evaluation

    values = {"status": "succeeded", "kind": "auto", "rows_evaluated": 1, "classification": True,
              "metrics": {"base": {"eval_loss": 6.2, "accuracy": 0.0}, "tuned": {"eval_loss": 2.1, "accuracy": 0.75}},
              "rows": [{"row": 1, "prompt": "Classify: rain", "reference": "weather",
                        "outputs": {"base": "zz", "tuned": "weather"}, "loss": {"base": 6.0, "tuned": 1.0}}]}
    return Evaluation.objects.create(id=f"eval-{model.pk[-6:]}", owner=model.owner, model=model,
                                     project_id=model.project_id,
                                     base_model=model.base_model, dataset=model.job.dataset, **{**values, **fields})


def test_detail_shows_aliases_lineage_and_the_evaluation_side_by_side(client, base_model):
    from models_app.services import model_promote

    user = make_user()
    model = _model(user, base_model)
    model_promote(model=model, alias="production")
    _evaluation(model)
    client.force_login(user)
    body = client.get(reverse("models:detail", args=[model.id])).content.decode()
    assert 'class="badge alias">production' in body and f"{model.name}@production" in body
    assert f"Job <a href=\"/jobs/{model.job_id}/\">" in body
    assert ('<th scope="row" title="eval_loss">validation loss</th><td>6.2000</td><td>2.1000</td>'
            '<td class="ok">-4.1000</td>') in body


def test_evaluation_page_shows_metrics_chart_data_and_rows(client, base_model):
    user = make_user()
    evaluation = _evaluation(_model(user, base_model))
    client.force_login(user)
    body = client.get(reverse("models:evaluation", args=[evaluation.id])).content.decode()
    assert '<th scope="row" title="accuracy">accuracy</th><td>0.000</td><td>0.750</td>' in body
    assert 'id="metrics-chart-data"' in body and "Classify: rain" in body and "weather" in body
    assert 'hx-trigger="every 2s"' not in body  # finished: no more polling


def test_running_evaluation_partial_polls_until_finished(client, base_model):
    user = make_user()
    evaluation = _evaluation(_model(user, base_model), status="running", progress=40, metrics={}, rows=[])
    client.force_login(user)
    body = client.get(reverse("models:evaluation", args=[evaluation.id]), HTTP_HX_REQUEST="true").content.decode()
    assert body.lstrip().startswith('<section id="evaluation-result"') and 'hx-trigger="every 2s"' in body
    assert 'value="40"' in body


def test_registry_page_lists_versions_and_rolls_an_alias_back(client, base_model):
    from models_app.services import model_promote

    user = make_user()
    first, second = _model(user, base_model), _model(user, base_model)
    for model in (first, second):
        model_promote(model=model, alias="production")
    client.force_login(user)
    page = client.get(reverse("models:registry", args=["tiny-llama"])).content.decode()
    assert ">1.0.0</a>" in page and ">1.0.1</a>" in page and "Roll back production" in page
    response = client.post(reverse("models:rollback", args=["tiny-llama"]), {"alias": "production"}, follow=True)
    assert "tiny-llama@production rolled back to 1.0.0" in response.content.decode()
    assert first.aliases.filter(alias="production").exists()


def test_page_actions_promote_archive_and_refuse_deleting_an_aliased_version(client, base_model):
    user = make_user()
    model = _model(user, base_model)
    client.force_login(user)
    client.post(reverse("models:promote", args=[model.id]), {"alias": "staging"})
    assert model.aliases.get().alias == "staging"
    refused = client.post(reverse("models:delete", args=[model.id]), follow=True).content.decode()
    assert "is staging" in refused and FineTunedModel.objects.filter(pk=model.pk).exists()
    archive = client.post(reverse("models:archive", args=[model.id]), {"archived": "1"}, follow=True)
    assert "is staging" in archive.content.decode()


def test_other_users_registry_evaluation_and_actions_are_404(client, base_model):
    model = _model(make_user(), base_model)
    evaluation = _evaluation(model)
    client.force_login(make_user())
    assert client.get(reverse("models:registry", args=[model.name])).status_code == 404
    assert client.get(reverse("models:evaluation", args=[evaluation.id])).status_code == 404
    for name in ("promote", "archive", "delete", "export", "evaluate"):
        assert client.post(reverse(f"models:{name}", args=[model.id])).status_code == 404, name


def test_playground_preselects_the_model_and_its_base(client, base_model):
    user = make_user()
    model = _model(user, base_model)
    client.force_login(user)
    detail = client.get(reverse("models:detail", args=[model.id])).content.decode()
    link = f'{reverse("models:playground")}?model={model.id.replace(":", "%3A")}'
    assert f'href="{link}"' in detail and ">Open in playground</a>" in detail

    page = client.get(link).content.decode()
    assert 'ws-connect="/ws/playground/"' in page and "ws-send" in page
    left, right = page.split('name="left_model"')[1], page.split('name="right_model"')[1]
    assert f'<option value="{model.id}" selected>' in left.split("</select>")[0]
    assert '<option value="tiny-llama" selected>' in right.split("</select>")[0]
    assert f"<code>{model.id}</code>" in page and "<code>tiny-llama</code>" in page
    assert f'href="{reverse("models:playground")}"' in page  # in the navigation


def test_playground_offers_only_models_the_user_may_see(client, base_model):
    user = make_user()
    mine, theirs = _model(user, base_model), _model(make_user(), base_model)
    client.force_login(user)
    page = client.get(reverse("models:playground")).content.decode()
    assert f'value="{mine.id}"' in page and theirs.id not in page
    assert client.get(reverse("models:playground") + f"?model={theirs.id}").status_code == 404


def test_playground_needs_a_login(client, base_model):
    response = client.get(reverse("models:playground"))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_playground_post_refuses_another_users_model(client, base_model):
    user = make_user()
    theirs = _model(make_user(), base_model)
    client.force_login(user)
    page = client.post(reverse("models:playground"), {"prompt": "hi", "left_model": theirs.id,
                                                      "right_model": "tiny-llama", "temperature": "0",
                                                      "max_tokens": "4"}).content.decode()
    assert f"No such model: {theirs.id}" in page


@pytest.mark.django_db(transaction=True)
def test_playground_without_javascript_renders_both_replies(client, live_base_model, inference_worker):
    user = make_user()
    client.force_login(user)
    page = client.post(reverse("models:playground"), {"prompt": "What is the capital of France?",
                                                      "left_model": "tiny-llama", "right_model": "tiny-llama",
                                                      "temperature": "0", "max_tokens": "6"}).content.decode()
    replies = [part.split(">", 1)[1].split("</pre>")[0] for part in page.split('class="reply" id="playground-')[1:]]
    assert len(replies) == 2 and replies[0] == replies[1] != ""  # greedy: the same model says the same thing
    assert page.count("max tokens reached") == 2


def test_evaluate_form_queues_an_evaluation_and_opens_its_page(client, base_model,
                                                               django_capture_on_commit_callbacks):
    from models_app.models import Evaluation

    user = make_user()
    model = _model(user, base_model)
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("models:evaluate", args=[model.id]),
                               {"file": model.job.dataset_id, "max_rows": "5", "max_new_tokens": "0"})
    evaluation = Evaluation.objects.get(model=model)
    assert response.url == reverse("models:evaluation", args=[evaluation.id]) and len(callbacks) == 1
    assert (evaluation.max_rows, evaluation.max_new_tokens, evaluation.checkpoints) == (5, 0, False)


def test_evaluate_form_names_the_bad_field_and_starts_nothing(client, base_model):
    from models_app.models import Evaluation

    user = make_user()
    model = _model(user, base_model)
    client.force_login(user)
    response = client.post(reverse("models:evaluate", args=[model.id]),
                           {"file": model.job.dataset_id, "max_rows": "lots", "max_new_tokens": "32"}, follow=True)
    assert "Evaluation not started: Rows (from the top): Enter a whole number." in response.content.decode()
    refused = client.post(reverse("models:evaluate", args=[model.id]),
                          {"file": model.job.dataset_id, "max_rows": "5", "max_new_tokens": "8",
                           "checkpoints": "on"}, follow=True)
    assert "Evaluation not started: checkpoints applies to a fine-tuned model whose job saved" in \
        refused.content.decode()
    assert not Evaluation.objects.exists()


def test_final_metrics_are_named_and_rounded_without_internal_keys(client, base_model):
    from jobs_app.models import FineTuneJob

    user = make_user()
    model = _model(user, base_model)
    make_metric(model.job, 24, 24, train_loss=0.123456, learning_rate=0.000125, tokens=123456, epoch=8.0,
                time=1796186016.858, eta_seconds=0.0)
    FineTuneJob.objects.filter(pk=model.job_id).update(metrics={
        "device": "cpu", "devices": 1, "train_loss": 1.5, "wall_seconds": 65.4, "tokens_per_second": 1887.04,
        "peak_memory_bytes": 812_345_678, "steps": 24})
    client.force_login(user)
    body = client.get(reverse("models:detail", args=[model.id])).content.decode()
    table = re.search(r'<table class="kv" id="final-metrics">(.*?)</table>', body, re.S).group(1)
    rows = dict(re.findall(r'<th scope="row">([^<]+)</th><td>([^<]*)</td>', table))
    assert rows == {"train loss": "0.1235", "mean train loss (whole run)": "1.5000", "learning rate": "1.25e-04",
                    "epoch": "8", "steps": "24", "tokens seen": "123,456", "tokens/s": "1,887",
                    "wall time": "1 min 05 s", "peak memory": "775 MiB", "device": "CPU"}
    for raw in ("1796186016", "eta_seconds", ">time<", ">step<", "total_steps"):
        assert raw not in table


def test_evaluation_page_says_all_rows_when_the_dataset_is_smaller_than_the_limit(client, base_model):
    user = make_user()
    model = _model(user, base_model)
    evaluation = _evaluation(model, max_rows=100, rows_evaluated=16)
    type(model.job.dataset).objects.filter(pk=model.job.dataset_id).update(row_count=16)
    client.force_login(user)
    body = client.get(reverse("models:evaluation", args=[evaluation.id])).content.decode()
    assert "all 16 rows" in body and "first 100" not in body and "Metrics (16 rows" in body
    type(model.job.dataset).objects.filter(pk=model.job.dataset_id).update(row_count=1234)
    body = client.get(reverse("models:evaluation", args=[evaluation.id])).content.decode()
    assert "the first 100 of 1,234 rows" in body


# --- stored completions: the data loop's page ---


def test_completions_page_lists_own_completions_filters_rates_and_corrects(client):
    user = make_user()
    client.force_login(user)
    mine = make_stored_completion(user, answer="Lyon.", metadata={"app": "support"})
    other = make_stored_completion(user, answer="Berlin.", metadata={"app": "sales"})
    theirs = make_stored_completion(make_user(), answer="Not yours.")
    page = client.get(reverse("models:completions")).content.decode()
    assert "Lyon." in page and "Berlin." in page and "Not yours." not in page and 'id="make-dataset"' in page
    filtered = client.get(reverse("models:completions"), {"metadata": "app=support"}).content.decode()
    assert "Lyon." in filtered and "Berlin." not in filtered
    url = reverse("models:completion_feedback", args=[mine.id])
    row = client.post(url, {"rating": "down"}, HTTP_HX_REQUEST="true")
    assert row.status_code == 200
    assert f'<tr id="{mine.id}"' in row.content.decode() and 'value="down" aria-pressed="true"' in row.content.decode()
    corrected = client.post(url, {"correction": "Paris."}, HTTP_HX_REQUEST="true").content.decode()
    assert "<ins>Paris.</ins>" in corrected and "<del>Lyon.</del>" in corrected
    mine.refresh_from_db()
    assert (mine.rating, mine.correction) == (-1, "Paris.")
    assert client.post(reverse("models:completion_feedback", args=[theirs.id]), {"rating": "up"}).status_code == 404
    assert other.rating is None


def test_make_a_dataset_button_turns_the_selection_into_a_dataset_with_lineage(client):
    user = make_user()
    client.force_login(user)
    first = make_stored_completion(user, answer="Paris.")
    second = make_stored_completion(user, answer="Rome.")
    make_stored_completion(user, answer="Not selected.")
    response = client.post(reverse("models:completions_dataset"), {"completion": [first.id, second.id],
                                                                    "filename": "capitals"})
    dataset = Dataset.objects.get(owner=user)
    assert response.status_code == 302 and response["Location"] == reverse("datasets:detail", args=[dataset.id])
    assert (dataset.status, dataset.format, dataset.row_count, dataset.filename) == ("ready", "chat", 2,
                                                                                    "capitals.jsonl")
    detail = client.get(response["Location"]).content.decode()
    assert "from_completions v1" in detail  # the lineage on the dataset page
    assert dataset_rows(dataset, limit=10) == [completion_row(first), completion_row(second)]
    page = client.get(reverse("models:completions")).content.decode()
    assert page.count(reverse("datasets:detail", args=[dataset.id])) == 2  # each used completion links it
    nothing = client.post(reverse("models:completions_dataset"), {})
    assert nothing.status_code == 302 and Dataset.objects.filter(owner=user).count() == 1


def test_import_form_and_retention_form(client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    user = make_user()
    client.force_login(user)
    rows = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'
    client.post(reverse("models:completions_import"), {"file": SimpleUploadedFile("export.jsonl", rows)})
    assert StoredCompletion.objects.get(owner=user).answer == "Hello!"
    client.post(reverse("models:completions_settings"), {"retention_days": "7"})
    page = client.get(reverse("models:completions")).content.decode()
    assert 'name="retention_days" value="7"' in page and "Hello!" in page
