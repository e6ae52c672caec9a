"""The job pages: list, live detail (first render), cancel and the three-step wizard."""

import json
import re

import pytest
from django.urls import reverse

from jobs_app.models import FineTuneJob
from jobs_app.services import job_event_add
from tests.factories import make_dataset, make_job, make_metric, make_user

pytestmark = pytest.mark.django_db
Status = FineTuneJob.Status


@pytest.fixture
def user(client):
    user = make_user()
    client.force_login(user)
    return user


def test_list_shows_only_own_jobs(client, base_model, user):
    mine, theirs = make_job(user), make_job()
    page = client.get(reverse("jobs:list")).content.decode()
    assert mine.id in page and theirs.id not in page


def test_list_filters_by_status_and_returns_table_partial_for_htmx(client, base_model, user):
    queued, running = make_job(user, status=Status.QUEUED), make_job(user, status=Status.RUNNING)
    response = client.get(reverse("jobs:list"), {"status": "running"}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert running.id in body and queued.id not in body
    assert body.lstrip().startswith('<div id="job-table">') and "<html" not in body
    assert "HX-Request" in response["Vary"]
    restore = client.get(reverse("jobs:list"), {"status": "running"},
                         headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert b"<html" in restore.content


def test_detail_renders_the_whole_history(client, base_model, user):
    job = make_job(user, status=Status.RUNNING)
    make_metric(job, 1, 4)
    make_metric(job, 2, 4, valid_loss=1.5)
    job_event_add(job_id=job.id, message="Saved checkpoint at step 2")
    body = client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    assert f"Created fine-tuning job: {job.id}" in body and "Saved checkpoint at step 2" in body
    assert 'data-step="2"' in body and 'data-valid-loss="1.5"' in body and 'data-train-loss="2.0"' in body
    assert 'value="2"' in body and "(50%)" in body
    assert f'ws-connect="/ws/jobs/{job.id}/"' in body
    assert f'id="job-last-seq" data-seq="{job.events.count()}"' in body
    assert 'id="cancel-job"' in body and 'hx-confirm="Cancel job' in body


def test_detail_of_finished_job_opens_no_socket_and_links_the_model(client, base_model, user):
    job = make_job(user, status=Status.CANCELLED)
    body = client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    assert "ws-connect" not in body and 'id="cancel-job"' not in body


def test_other_users_job_is_404_everywhere(client, base_model, user):
    job = make_job(status=Status.RUNNING)
    assert client.get(reverse("jobs:detail", args=[job.id])).status_code == 404
    assert client.post(reverse("jobs:cancel", args=[job.id])).status_code == 404
    assert FineTuneJob.objects.get(pk=job.pk).status == Status.RUNNING


def test_cancel_returns_status_partial_for_htmx(client, base_model, user):
    job = make_job(user, status=Status.QUEUED)
    response = client.post(reverse("jobs:cancel", args=[job.id]), headers={"HX-Request": "true"})
    body = response.content.decode()
    assert body.startswith('<div id="job-status"') and 'data-status="cancelled"' in body
    assert FineTuneJob.objects.get(pk=job.pk).status == Status.CANCELLED


def test_cancel_of_finished_job_shows_the_refusal(client, base_model, user):
    job = make_job(user, status=Status.SUCCEEDED)
    response = client.post(reverse("jobs:cancel", args=[job.id]), follow=True)
    assert b"already succeeded" in response.content
    response = client.post(reverse("jobs:cancel", args=[job.id]), headers={"HX-Request": "true"})
    assert b"already succeeded" in response.content


def test_cancel_refuses_get(client, base_model, user):
    job = make_job(user, status=Status.QUEUED)
    assert client.get(reverse("jobs:cancel", args=[job.id])).status_code == 405


def test_pause_of_running_job_asks_for_a_checkpoint_and_says_so(client, base_model, user):
    job = make_job(user, status=Status.RUNNING)
    body = client.post(reverse("jobs:pause", args=[job.id]), headers={"HX-Request": "true"}).content.decode()
    assert "Pausing: saving a checkpoint" in body
    assert FineTuneJob.objects.get(pk=job.pk).stop_request == "pause"


def test_paused_job_shows_resume_and_resume_queues_it(client, base_model, user, django_capture_on_commit_callbacks):
    job = make_job(user, status=Status.PAUSED)
    assert 'id="resume-job"' in client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        body = client.post(reverse("jobs:resume", args=[job.id]), headers={"HX-Request": "true"}).content.decode()
    assert 'data-status="queued"' in body and len(callbacks) >= 1
    assert FineTuneJob.objects.get(pk=job.pk).status == Status.QUEUED


def test_pause_and_resume_of_another_users_job_are_404(client, base_model, user):
    job = make_job(status=Status.RUNNING)
    assert client.post(reverse("jobs:pause", args=[job.id])).status_code == 404
    assert client.post(reverse("jobs:resume", args=[job.id])).status_code == 404


def _result_model(job):
    from models_app.models import Evaluation, FineTunedModel

    model = FineTunedModel.objects.create(id=f"ft:tiny-llama::{job.id[-6:]}", owner=job.owner, job=job,
                                          project_id=job.project_id,
                                          base_model=job.base_model, name="topics", adapter="lora", version=1,
                                          adapter_path="models/x/adapter", artifact_files=[])
    evaluation = Evaluation.objects.create(id=f"eval-{job.id[-6:]}", owner=job.owner, model=model,
                                           project_id=model.project_id,
                                           base_model=job.base_model, dataset=job.dataset, kind="auto",
                                           status="running")
    return model, evaluation


def test_succeeded_job_links_its_model_evaluation_playground_and_download(client, base_model, user):
    job = make_job(user, status=Status.SUCCEEDED)
    model, evaluation = _result_model(job)
    body = client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    nav = re.search(r'<nav class="next-steps" id="job-next".*?</nav>', body, re.S).group(0)
    assert f'id="next-model" href="/models/{model.id}/">topics@1.0.0</a>' in nav
    assert f'id="next-evaluation" href="/models/evaluations/{evaluation.id}/">Evaluation (running)</a>' in nav
    assert 'id="next-playground" href="/models/playground/?model=ft%3Atiny-llama%3A%3A' in nav
    assert f'id="next-download" href="/v1/models/{model.id}/download?artifact=adapter">Download the adapter' in nav


def test_a_job_still_running_or_failed_offers_no_result_links_but_a_failed_one_a_new_start(client, base_model, user):
    running = make_job(user, status=Status.RUNNING)
    assert 'id="job-next"' not in client.get(reverse("jobs:detail", args=[running.id])).content.decode()
    failed = make_job(user, status=Status.FAILED)
    body = client.get(reverse("jobs:detail", args=[failed.id])).content.decode()
    assert 'id="next-model"' not in body
    assert f'href="/jobs/new/?dataset={failed.dataset_id}">Start a new job on {failed.dataset.filename}</a>' in body


def test_job_log_follows_new_lines_with_a_jump_button(client, base_model, user):
    job = make_job(user, status=Status.RUNNING)
    body = client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    assert '<ol id="job-log" class="log" data-follow' in body
    assert 'id="job-log-jump" data-follow-jump="job-log" hidden' in body


# --- the wizard ---


def _advanced(**values) -> dict:
    return {"model": "tiny-llama", "objective": "supervised", "adapter": "lora", "suffix": "", **values}


def _option(review: str, name: str) -> str:
    """What the review shows for an option (its value, and "(auto)" when it was resolved)."""
    row = re.search(rf'<tr data-option="{name}"><th scope="row">[^<]*</th><td>(.*?)</td></tr>', review, re.S)
    return re.sub(r"<[^>]+>", "", row.group(1)).strip() if row else ""


def test_wizard_walks_three_steps_and_starts_the_job(client, base_model, user, django_capture_on_commit_callbacks):
    dataset = make_dataset(user)
    step1 = client.get(reverse("jobs:wizard_dataset"))
    assert dataset.id in step1.content.decode() and b'for="id_training_file"' in step1.content
    response = client.post(reverse("jobs:wizard_dataset"), {"training_file": dataset.id, "validation_file": ""})
    assert response["Location"] == reverse("jobs:wizard_model")
    response = client.post(reverse("jobs:wizard_model"), _advanced(n_epochs="2", batch_size="4", suffix="demo"))
    assert response["Location"] == reverse("jobs:wizard_review")
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert _option(review, "n_epochs") == "2" and _option(review, "lora_r") == "16 (auto)"
    assert _option(review, "gradient_checkpointing") == "off (auto)"  # the estimate knows no GPU to overflow
    assert _option(review, "padding_free") == "on (auto)" and 'title="auto: on when batch_size is above 1"' in review
    assert "<strong>8 steps</strong> (4 per epoch × 2)" in review  # 16 rows / batch 4 × 2 epochs
    assert "unknown until the first steps" in review  # no past run of tiny-llama lora yet
    assert 'id="estimate-rough"' in review  # tokens counted by a worker meanwhile
    # the loss mask: the first rows tokenized as the trainer will, the answer's tokens highlighted
    mask = re.search(r'<div class="mask-row" data-row="1">(.*?)</div>', review, re.S).group(1)
    trained = "".join(re.findall(r'<span class="trained">(.*?)</span>', mask))
    masked = "".join(re.findall(r'<span class="masked">(.*?)</span>', mask))
    assert "sports" in trained and "Classify" in masked and "Classify" not in trained
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("jobs:wizard_review"))
    job = FineTuneJob.objects.get(owner=user)
    assert response["Location"] == reverse("jobs:detail", args=[job.id])
    assert job.hyperparameters["n_epochs"] == 2 and job.hyperparameters["batch_size"] == 4 and job.suffix == "demo"
    assert "job_wizard" not in client.session


def test_wizard_offers_only_models_that_can_train_the_dataset(client, base_model, user):
    """cnn (an image model, registered beside tiny-llama) sorts first, but cannot train text rows."""
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    body = client.get(reverse("jobs:wizard_model")).content.decode()
    assert '<option value="tiny-llama"' in body and '<option value="cnn"' not in body


def test_wizard_shows_the_api_error_next_to_the_field(client, base_model, user):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    response = client.post(reverse("jobs:wizard_model"), _advanced(n_epochs="0", lora_dropout="2"))
    body = response.content.decode()
    assert response.status_code == 200
    assert ('<span class="error" id="error-n_epochs" role="alert" aria-live="polite">'
            "n_epochs must be from 1 to 100, not 0</span>") in body
    assert "lora_dropout must be at least 0 and at most 1, not 2" in body
    assert "<details id=\"advanced\" open>" in body


def test_wizard_checks_one_field_inline(client, base_model, user):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    url = reverse("jobs:wizard_field", args=["max_length"])
    bad = client.post(url, {"max_length": "99999", "model": "tiny-llama"}, headers={"HX-Request": "true"})
    assert bad.content.decode().startswith('<span class="error" id="error-max_length"')
    assert b"above the model&#x27;s context of 2048 tokens" in bad.content
    good = client.post(url, {"max_length": "512", "model": "tiny-llama"}, headers={"HX-Request": "true"})
    assert b'id="error-max_length" role="alert" aria-live="polite"></span>' in good.content
    assert client.post(reverse("jobs:wizard_field", args=["nope"]), {"nope": "1"}).status_code == 404


def test_wizard_inline_check_saves_the_whole_step_as_next_does(client, base_model, user):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    form = _advanced(n_epochs="7", batch_size="2", suffix="late", learning_rate="0.003")
    client.post(reverse("jobs:wizard_field", args=["learning_rate"]), form, headers={"HX-Request": "true"})
    state = client.session["job_wizard"]
    assert state["model"] == "tiny-llama" and state["suffix"] == "late"
    assert state["hyperparameters"]["n_epochs"] == "7" and state["hyperparameters"]["learning_rate"] == "0.003"
    assert client.get(reverse("jobs:wizard_review")).status_code == 200  # not sent back to step 2


def test_wizard_keeps_input_when_going_back(client, base_model, user):
    dataset = make_dataset(user)
    client.post(reverse("jobs:wizard_dataset"), {"training_file": dataset.id})
    client.post(reverse("jobs:wizard_model"), _advanced(n_epochs="5", lora_target_modules="q_proj, v_proj"))
    step1 = client.get(reverse("jobs:wizard_dataset")).content.decode()
    assert f'<option value="{dataset.id}" selected>' in step1
    step2 = client.get(reverse("jobs:wizard_model")).content.decode()
    assert 'name="n_epochs" value="5"' in step2 and 'value="q_proj, v_proj"' in step2
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert _option(review, "lora_target_modules") == "q_proj, v_proj"


def test_wizard_refuses_another_users_dataset(client, base_model, user):
    make_dataset(user)
    theirs = make_dataset()
    response = client.post(reverse("jobs:wizard_dataset"), {"training_file": theirs.id})
    assert response.status_code == 200 and b'id="error-training_file"' in response.content
    assert client.get(reverse("jobs:wizard_model"))["Location"] == reverse("jobs:wizard_dataset")


def test_wizard_review_without_input_goes_to_step_one(client, base_model, user):
    assert client.get(reverse("jobs:wizard_review"))["Location"] == reverse("jobs:wizard_dataset")


def test_wizard_inline_check_needs_a_known_model(client, base_model, user):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    response = client.post(reverse("jobs:wizard_field", args=["n_epochs"]), {"n_epochs": "3", "model": "nope"})
    assert b"Choose a base model first." in response.content


def test_review_marks_the_completion_as_trained_for_prompt_completion_rows(client, base_model, user):
    rows = [{"prompt": "Classify: rain\\nLabel:", "completion": " weather"}] * 8
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user, rows=rows).id})
    client.post(reverse("jobs:wizard_model"), _advanced())
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    mask = re.search(r'<div class="mask-row" data-row="1">(.*?)</div>', review, re.S).group(1)
    trained = "".join(re.findall(r'<span class="trained">(.*?)</span>', mask))
    masked = "".join(re.findall(r'<span class="masked">(.*?)</span>', mask))
    assert trained.strip().startswith("weather") and "Classify: rain" in masked and "Classify" not in trained


def test_review_falls_back_to_whole_turns_for_preference_pairs(client, base_model, user):
    rows = [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}] * 8
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user, rows=rows).id})
    client.post(reverse("jobs:wizard_model"), _advanced(objective="dpo"))
    review = client.get(reverse("jobs:wizard_review"))
    assert review.status_code == 200 and b'id="loss-mask"' in review.content and b"data-row=" not in review.content


def test_wizard_template_select_drives_the_loss_mask_preview_and_the_job(client, base_model, user,
                                                                         django_capture_on_commit_callbacks):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    step2 = client.get(reverse("jobs:wizard_model")).content.decode()
    assert '<select id="hp-template" name="template"' in step2 and '<option value="chatml">ChatML</option>' in step2
    client.post(reverse("jobs:wizard_model"), _advanced(template="chatml"))
    assert '<option value="chatml" selected>' in client.get(reverse("jobs:wizard_model")).content.decode()
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert _option(review, "template") == "ChatML"
    mask = re.search(r'<div class="mask-row" data-row="1">(.*?)</div>', review, re.S).group(1)
    masked = "".join(re.findall(r'<span class="masked">(.*?)</span>', mask))
    trained = "".join(re.findall(r'<span class="trained">(.*?)</span>', mask))
    assert "im_start" in masked and "&lt;|user|&gt;" not in masked  # ChatML, not the model's own template
    assert trained.startswith("sports") and "im_end" in trained
    with django_capture_on_commit_callbacks():
        client.post(reverse("jobs:wizard_review"))
    assert FineTuneJob.objects.get(owner=user).hyperparameters["template"] == "chatml"


def test_wizard_checks_the_template_inline(client, base_model, user):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    url = reverse("jobs:wizard_field", args=["template"])
    bad = client.post(url, {"template": "vicuna", "model": "tiny-llama"}, headers={"HX-Request": "true"})
    assert b"template must be" in bad.content and b"chatml" in bad.content
    good = client.post(url, {"template": "completion", "model": "tiny-llama"}, headers={"HX-Request": "true"})
    assert b'id="error-template" role="alert" aria-live="polite"></span>' in good.content
    assert client.session["job_wizard"]["hyperparameters"]["template"] == "completion"


@pytest.mark.parametrize(("objective", "adapter", "shown", "hidden"), [
    ("supervised", "lora", ["template", "lora_r"], ["quantization", "beta"]),
    ("supervised", "qlora", ["quantization", "lora_r"], ["beta"]),
    ("supervised", "full", ["template"], ["lora_r", "lora_alpha", "quantization", "beta"]),
    ("dpo", "lora", ["beta", "lora_r"], ["template", "quantization"]),
])
def test_review_shows_only_the_options_that_apply(client, base_model, user, objective, adapter, shown, hidden):
    rows = [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}] * 8 if objective == "dpo" else None
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user, rows=rows).id})
    client.post(reverse("jobs:wizard_model"), _advanced(objective=objective, adapter=adapter))
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert all(_option(review, name) for name in shown) and not any(_option(review, name) for name in hidden)
    assert "[&#x27;" not in review  # no Python list reprs


def test_wizard_refuses_an_objective_the_data_cannot_train(client, base_model, user):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})  # chat rows
    response = client.post(reverse("jobs:wizard_model"), _advanced(objective="dpo"))
    assert response.status_code == 200 and b"DPO needs preference rows" in response.content


def test_wizard_starts_a_reinforcement_job_with_its_grader_and_names_a_bad_one(
        client, base_model, user, django_capture_on_commit_callbacks):
    rows = [{"messages": [{"role": "user", "content": f"Capital of France? ({i})"}], "answer": "Paris"}
            for i in range(4)]
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user, rows=rows).id})
    grader = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
              "operation": "ilike"}
    bad = client.post(reverse("jobs:wizard_model"), _advanced(objective="reinforcement", grader=json.dumps(
        {**grader, "reference": "{{item.solution}}"})))
    assert bad.status_code == 200 and "no field &#x27;solution&#x27;" in bad.content.decode()
    step = client.post(reverse("jobs:wizard_model"), _advanced(objective="reinforcement", num_generations="2",
                                                               grader=json.dumps(grader)))
    assert step.status_code == 302, step.content.decode()
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert 'id="grader"' in review and _option(review, "num_generations") == "2"
    with django_capture_on_commit_callbacks():
        client.post(reverse("jobs:wizard_review"))
    job = FineTuneJob.objects.get(owner=user)
    assert (job.objective, job.grader, job.hyperparameters["num_generations"]) == ("reinforcement", grader, 2)


def test_wizard_names_an_option_given_where_it_does_not_apply(client, base_model, user):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    response = client.post(reverse("jobs:wizard_model"), _advanced(adapter="full", lora_r="8"))
    body = response.content.decode()
    assert 'id="error-lora_r"' in body and "lora_r applies only with adapter lora or qlora" in body


@pytest.mark.parametrize(("status", "offered"), [
    ("validating_files", {"cancel-job"}),  # the rules do not let a job being checked pause
    ("queued", {"cancel-job", "pause-job"}),
    ("running", {"cancel-job", "pause-job"}),
    ("paused", {"cancel-job", "resume-job"}),
    ("succeeded", set()),
])
def test_job_page_offers_only_what_the_rules_allow(client, base_model, user, status, offered):
    job = make_job(user, status=status)
    body = client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    assert {button for button in ("cancel-job", "pause-job", "resume-job") if f'id="{button}"' in body} == offered


def test_pausing_a_job_being_checked_is_refused_with_the_reason(client, base_model, user):
    job = make_job(user)
    response = client.post(reverse("jobs:pause", args=[job.id]), headers={"HX-Request": "true"})
    assert b"only queued or running jobs can be paused" in response.content
    job.refresh_from_db()
    assert job.status == "validating_files"


def test_wizard_refuses_a_base_models_name_as_the_model_name_next_to_the_field(client, base_model, user):
    dataset = make_dataset(user)
    client.post(reverse("jobs:wizard_dataset"), {"training_file": dataset.id, "validation_file": ""})
    page = client.post(reverse("jobs:wizard_model"), _advanced(suffix="tiny-llama")).content.decode()
    error = re.search(r'<span class="error" id="error-suffix" role="alert">(.*?)</span>', page, re.S).group(1)
    assert "is the name of a base model" in error and "tiny-llama-ft" in error
    client.post(reverse("jobs:wizard_model"), _advanced(suffix=""))
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert re.search(r'<dd id="model-name">tiny-llama-ft ', review)


def test_wizard_grades_a_sample_answer_on_the_first_rows_before_any_compute(client, base_model, user):
    rows = [{"messages": [{"role": "user", "content": f"Capital of France? ({i})"}],
             "answer": "Paris" if i != 1 else "Lyon"} for i in range(5)]
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user, rows=rows).id})
    grader = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
              "operation": "eq", "name": "exact"}
    page = client.get(reverse("jobs:wizard_model")).content.decode()
    assert 'id="grader-try-button"' in page and "first 3 rows" in page
    tried = client.post(reverse("jobs:wizard_grader_try"), {"grader": json.dumps(grader), "grader_sample": "Paris"},
                        HTTP_HX_REQUEST="true").content.decode()
    rewards = re.findall(r'<td class="num">([0-9.]+)</td>', tried)
    assert rewards == ["1.000", "0.000", "1.000"], tried  # row 2's answer is Lyon
    assert FineTuneJob.objects.count() == 0
    unknown = client.post(reverse("jobs:wizard_grader_try"), {
        "grader": json.dumps({**grader, "reference": "{{item.solution}}"}), "grader_sample": "Paris"}).content.decode()
    assert 'role="alert"' in unknown and "grader.reference" in unknown and "solution" in unknown
    not_json = client.post(reverse("jobs:wizard_grader_try"), {"grader": "{type: string", "grader_sample": ""})
    assert "The grader is not JSON" in not_json.content.decode()


def test_wizard_sends_the_ticked_trackers_and_the_job_page_says_where_each_run_is(
        client, base_model, user, django_capture_on_commit_callbacks):
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    step = client.get(reverse("jobs:wizard_model")).content.decode()
    assert 'name="trackers" value="wandb"' in step and 'name="trackers" value="mlflow"' in step
    missing = client.post(reverse("jobs:wizard_model"), _advanced(trackers=["tensorboard", "wandb"]))
    assert missing.status_code == 200
    assert re.search(r'id="error-wandb_project"[^>]*>[^<]*wandb.project is required', missing.content.decode())
    step = client.post(reverse("jobs:wizard_model"), _advanced(trackers=["tensorboard", "wandb"],
                                                               wandb_project="support-bot"))
    assert step.status_code == 302, step.content.decode()
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert '<dd id="trackers">tensorboard, wandb (project support-bot)</dd>' in review
    with django_capture_on_commit_callbacks():
        client.post(reverse("jobs:wizard_review"))
    job = FineTuneJob.objects.get(owner=user)
    assert job.integrations == [{"type": "tensorboard"}, {"type": "wandb", "wandb": {"project": "support-bot"}}]
    page = client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    assert f'href="/v1/fine_tuning/jobs/{job.id}/tensorboard"' in page and "project support-bot" in page
